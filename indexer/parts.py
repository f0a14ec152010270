"""Which content parts a build encodes, behind one interface, so the build runs them in one loop.

A part is an encoder (text, image, precomputed vectors, attributes) with the fusion weight the
build config gives it and the name of its build stage. Every encoder answers ``encode(catalog)``
with ``(vectors (n, dim) float32, present (n,) bool)`` and ``describe()`` with what the manifest
records; the build adds how many items the part could not encode where that can happen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import polars as pl

from indexer.attributes import AttributeEncoder
from indexer.encoders import (
    ImageEncoder,
    TextEncoder,
    align_vectors,
    default_text_model,
    read_precomputed,
)


class Encoder(Protocol):
    def encode(self, catalog: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]: ...

    def describe(self) -> dict: ...


@dataclass
class ContentPart:
    """``name``: the fusion part; ``stage``: the build stage that times it; ``missing``: the
    manifest key counting items without this part (None when every item has it); ``columns``:
    for a model part that may run on Ray actors, the catalogue columns it reads (given the
    catalogue's columns; None: nothing to encode there)."""

    name: str
    stage: str
    weight: float
    encoder: Encoder
    missing: str | None = None
    columns: Callable[[list[str]], list[str] | None] | None = None

    @property
    def model(self):
        """The encoder itself (without the progress binding)."""
        return getattr(self.encoder, "inner", self.encoder)

    def describe(self, present: np.ndarray) -> dict:
        out = self.encoder.describe()
        if self.missing is not None:
            out[self.missing] = int((~present).sum())
        return out

    def timing(self) -> dict | None:
        timing = getattr(self.encoder, "timing", None)
        return timing.as_dict() if timing is not None else None


class _Progress:
    """An encoder whose ``encode`` takes a ``progress`` flag, bound to one value."""

    def __init__(self, encoder, progress: bool) -> None:
        self.inner, self.progress = encoder, progress

    def encode(self, catalog: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.encode(catalog, progress=self.progress)

    def describe(self) -> dict:
        return self.inner.describe()

    @property
    def timing(self):
        return self.inner.timing


class PrecomputedVectors:
    """Vectors the shop brings: a Parquet of ``(item_id, vector)`` or a catalogue column."""

    def __init__(self, catalog_path: str | Path, path: str | None, column: str | None) -> None:
        self.catalog_path, self.path, self.column = catalog_path, path, column
        self.dim = 0

    @property
    def source(self) -> str:
        return str(self.path) if self.path is not None else f"{self.catalog_path}:{self.column}"

    def encode(self, catalog: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        ids = catalog["item_id"]
        if self.path is not None:
            vectors, present = read_precomputed(self.path, ids)
        else:
            column = cast(str, self.column)  # a precomputed part names a file or a column
            vectors, present = align_vectors(ids, catalog[column], ids, self.catalog_path)
        self.dim = vectors.shape[1]
        return vectors, present

    def describe(self) -> dict:
        return {
            "name": "precomputed",
            "kind": "precomputed",
            "source": self.source,
            "dim": self.dim,
            "normalised": True,
        }


def _text_columns(text: TextEncoder, columns: list[str]) -> list[str]:
    """The text fields, refused here (before any actor starts) when the catalogue lacks one."""
    text.texts(pl.DataFrame(schema={c: pl.String for c in columns}))
    return list(text.fields)


def content_parts(config, catalog_path: str | Path) -> list[ContentPart]:
    """The parts ``config`` (a :class:`indexer.build.BuildConfig`) asks for, in fusion order:
    text, image, precomputed vectors, attributes (always)."""
    parts = []
    if config.text:
        text = TextEncoder(
            model_path=config.text_model or default_text_model(),
            fields=config.text_fields,
            max_seq_length=config.text_max_seq_length,
        )
        parts.append(
            ContentPart(
                "text",
                "encode_text",
                config.text_weight,
                _Progress(text, config.progress),
                columns=lambda columns: _text_columns(text, columns),
            )
        )
    if config.image_model is not None:
        image = _Progress(ImageEncoder(config.image_model), config.progress)
        parts.append(
            ContentPart(
                "image",
                "encode_images",
                config.image_weight,
                image,
                "items_without_image",
                lambda columns: ["image"] if "image" in columns else None,
            )
        )
    if config.vectors is not None or config.vector_column is not None:
        given = PrecomputedVectors(catalog_path, config.vectors, config.vector_column)
        parts.append(
            ContentPart(
                "precomputed",
                "read_vectors",
                config.precomputed_weight,
                given,
                "items_without_vector",
            )
        )
    parts.append(
        ContentPart("attributes", "encode_attributes", config.attribute_weight, AttributeEncoder())
    )
    return parts
