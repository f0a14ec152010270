"""The batch build's parallel stages on Ray: content encoding on Ray Data actor pools, and shard
building as one Ray task per shard. ``crossrec index build --ray [ADDRESS]``.

What runs where, and why:

- **Encoding** (text, images: the build's most expensive stage, ~65% of a 50k build here) runs on
  Ray Data: the catalogue's needed columns become a dataset, ``map_batches`` hands blocks of rows to
  a pool of actors that each load the model once (one actor per GPU where the cluster has GPUs,
  else one per CPU, each with one torch thread), and the vectors come back with their row numbers,
  so the order Ray finishes blocks in does not matter.
- **Shards** (faiss training, filling, recall tuning per category) run as one task per shard with
  one faiss thread each; the vectors go to the object store once and every task reads them there.
  Each shard draws its tuning samples from its own seed (``[seed, shard number]``), as the local
  build does, so both builds choose the same parameters.
- Reading and validating the inputs, the behaviour statistics, neighbours and the complement
  adaptation stay in the driver: validation is global (duplicate ids, events naming unknown items),
  and the behaviour stages are columnar code over the events that took < 1.5 s at 50k items here;
  the adaptation is a torch training loop on the driver's cores.

The artifact is written by the driver exactly as in the local build (same files, manifest last,
atomic ``LATEST``); a failure anywhere leaves no version behind. A shard task whose worker dies is
retried (``RETRIES``); Ray Data restarts a dead encoder actor and re-runs its block.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import polars as pl

from indexer.shards import BuiltShard, ShardPolicy, ShardSpec, build_shard

log = logging.getLogger(__name__)

#: Retries of a shard task whose worker died.
RETRIES = 3


@dataclass(frozen=True)
class RayOptions:
    """``address``: the cluster ("" : a local Ray started for the build and stopped after it;
    "auto", "ray://host:10001", ...). ``encode_actors``: encoder actors (0: one per GPU of the
    cluster, else one per CPU). ``encode_batch``: rows per Ray Data block handed to an actor
    (0: 8 x the encoder's own batch size)."""

    address: str = ""
    encode_actors: int = 0
    encode_batch: int = 0


@contextmanager
def ray_session(options: RayOptions) -> Iterator[RayRunner]:
    """Connected to Ray for one build (started locally when ``address`` is empty and none runs)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=options.address or None, include_dashboard=False, log_to_driver=False)
    # The build prints its own stage times; Ray Data's progress lines would bury them.
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    try:
        yield RayRunner(options)
    finally:
        if started:
            ray.shutdown()


def _recipe(encoder) -> tuple[type, dict]:
    """The encoder's class and constructor arguments: each actor builds its own copy."""
    return type(encoder), {
        f.name: getattr(encoder, f.name) for f in dataclasses.fields(encoder) if f.init
    }


class _EncodeActor:
    """One Ray Data actor: an encoder built once, applied to blocks of catalogue rows."""

    def __init__(self, cls: type, kwargs: dict, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.encoder = cls(**kwargs)

    def __call__(self, batch):
        frame = pl.from_arrow(batch)
        vectors, present = self.encoder.encode(frame.drop("_row"))
        return {"_row": frame["_row"].to_numpy(), "vector": vectors, "present": present}


class RayRunner:
    def __init__(self, options: RayOptions) -> None:
        self.options = options

    def encode(self, encoder, catalog: pl.DataFrame, columns: list[str]) -> tuple:
        """``encoder.encode(catalog)`` on a pool of actors: (vectors, present, timing)."""
        import ray

        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
        actors = self.options.encode_actors or (gpus or cpus)
        batch = self.options.encode_batch or 8 * int(getattr(encoder, "batch_size", 64))
        cls, kwargs = _recipe(encoder)
        threads = 1 if gpus else max(1, cpus // actors)
        started = time.perf_counter()
        table = catalog.select(columns).with_row_index("_row").to_arrow()
        # One block per batch, so that every actor gets work (one block would feed one actor).
        blocks = [table.slice(lo, batch) for lo in range(0, table.num_rows, batch)]
        dataset = ray.data.from_arrow(blocks).map_batches(
            _EncodeActor,
            fn_constructor_args=(cls, kwargs, threads),
            batch_size=batch,
            batch_format="pyarrow",
            # Ray Data restarts a dead actor and retries its block (by default, without limit).
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=1 if gpus else 0,
            num_cpus=0 if gpus else threads,
        )
        vectors: np.ndarray | None = None
        present = np.zeros(catalog.height, bool)
        for block in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            if vectors is None:
                vectors = np.zeros((catalog.height, block["vector"].shape[1]), np.float32)
            vectors[block["_row"]] = block["vector"]
            present[block["_row"]] = block["present"]
        seconds = time.perf_counter() - started
        timing = {
            "executor": "ray",
            "actors": actors,
            "gpus": gpus,
            "rows_per_block": batch,
            "seconds": round(seconds, 3),
            "items": catalog.height,
            "items_per_s": round(catalog.height / max(seconds, 1e-9), 1),
        }
        return vectors, present, timing

    def shards(
        self, specs: list[ShardSpec], vectors: np.ndarray, policy: ShardPolicy, seed: int
    ) -> list[BuiltShard]:
        """Every shard built by its own Ray task, in ``specs`` order."""
        import ray

        task = ray.remote(num_cpus=1, max_retries=RETRIES)(_build_shard_task)
        stored = ray.put(np.ascontiguousarray(vectors, dtype=np.float32))
        pending = [task.remote(spec, stored, policy, [seed, i]) for i, spec in enumerate(specs)]
        out = []
        for spec, ref in zip(specs, pending):
            fields = ray.get(ref)
            out.append(_deserialised(spec, *fields))
        return out


def _build_shard_task(spec: ShardSpec, vectors: np.ndarray, policy: ShardPolicy, seed: list):
    import faiss

    faiss.omp_set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    built = build_shard(spec, vectors, policy, np.random.default_rng(seed))
    return (
        faiss.serialize_index(cast(Any, built.index)),
        built.factory,
        built.params,
        built.recall_at_k,
        built.build_s,
        built.note,
    )


def _deserialised(spec: ShardSpec, data, factory, params, recall, build_s, note) -> BuiltShard:
    import faiss

    return BuiltShard(spec, faiss.deserialize_index(data), factory, params, recall, build_s, note)
