"""Optional GPU use by faiss: train coarse quantizers on the GPU when faiss sees one.

Everything here falls back to the CPU; artifacts are always written as CPU indexes so that the same
version loads on either. (Classic GPU indexes have no HNSW; Flat and IVF shards move to the GPU at
load time through :func:`to_gpu`.)
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache

import numpy as np

log = logging.getLogger(__name__)

#: One user of the GPU at a time: faiss's GPU indexes and the scratch memory of their shared
#: resources are not thread-safe, even for searches. Held while shards are copied over and by every
#: search batch on GPU shards (engine/retrieval/batching.py), whichever arm or version it serves.
lock = threading.RLock()


@lru_cache(maxsize=1)
def available() -> bool:
    try:
        import faiss

        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # a broken CUDA install must not break CPU builds
        return False


@lru_cache(maxsize=1)
def resources():
    import faiss

    return faiss.StandardGpuResources()


def train(index, x: np.ndarray) -> None:
    """Train ``index`` (an untrained IVF index); the k-means runs on the GPU where there is one."""
    import faiss

    if available():
        ivf = faiss.extract_index_ivf(index)
        clustering_index = faiss.index_cpu_to_gpu(resources(), 0, faiss.IndexFlatL2(ivf.d))
        ivf.clustering_index = clustering_index
    index.train(x)


def to_gpu(index):
    """A GPU copy of a Flat or IVF shard, or the shard itself where that is not possible."""
    import faiss

    if not available():
        return index
    try:
        with lock:
            return faiss.index_cpu_to_gpu(resources(), 0, index)
    except RuntimeError as exc:  # e.g. HNSW: no GPU implementation
        log.debug("shard stays on the CPU: %s", exc)
        return index
