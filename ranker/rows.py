"""Training rows: one row per (decision, candidate item), written by the engine's replay and read by
training. A *decision* is one user's state at one time: the candidates the engine's retrieval
proposed then, with what the user did with each afterwards.

==================  =======  =====================================================================
column              dtype    meaning
==================  =======  =====================================================================
``decision_id``     Int64    the decision (all its rows share ``decision_ts_us``)
``decision_ts_us``  Int64    the decision time, microseconds since the epoch (the time split's key)
``item_id``         String   the candidate (unique within a decision)
``price``           Float64  the item's price; null or NaN when unknown
``blend_score``     Float64  the retrieval-only order the engine would have used (a baseline)
``click`` ...       Int8     one 0/1 label per objective (``OBJECTIVES``), funnel-nested
<feature>           Float32  one column per feature, in the order of the feature list; NaN missing
==================  =======  =====================================================================

Labels are nested along the funnel: a purchase implies a cart implies a click. Rows that break it
(a purchase logged without its cart event) are *normalised*, ``cart |= purchase`` and
``click |= cart``, and the change is logged: the stronger action is the evidence, and the chained
heads condition on the weaker one.

The feature list travels with the rows and with every model trained on them. Its *schema hash* is
the sha256 of the canonical JSON ``{"format": "crossrec-rows", "format_version": 1, "features":
[...]}`` (sorted keys, no spaces): two lists hash alike only when they name the same features in
the same order under the same row format, which is what "this model scores this matrix" needs.

On disk (:mod:`ranker.row_files`) the rows are a folder of Parquet parts, or one Parquet file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from crossrec.vocabulary import OBJECTIVES
from ranker.errors import RankerError

log = logging.getLogger(__name__)

__all__ = [
    "KEY_COLUMNS",
    "OBJECTIVES",
    "TrainingRows",
    "normalise_rows",
    "schema_hash",
    "split_features",
]

ROWS_FORMAT = "crossrec-rows"
ROWS_FORMAT_VERSION = 1
KEY_COLUMNS = ("decision_id", "decision_ts_us", "item_id", "price", "blend_score")


def schema_hash(features: Sequence[str]) -> str:
    """sha256 hex of the row format and the ordered feature names (see the module docstring)."""
    canonical = json.dumps(
        {"format": ROWS_FORMAT, "format_version": ROWS_FORMAT_VERSION, "features": list(features)},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class FeatureParts(Protocol):
    """Feature rows kept on disk (:class:`ranker.row_files.PartFeatures`)."""

    def take(self, rows: np.ndarray, features: Sequence[str]) -> np.ndarray:
        """(len(rows), len(features)) float32 of the rows (sorted indices), read part by part."""
        ...


@dataclass(frozen=True)
class TrainingRows:
    """Validated rows, held as the contract's key and label columns (``keys``, canonical dtypes,
    extra columns after them) beside the ``features``: in memory as one (rows, F) C-contiguous
    float32 matrix ``x``, or (``x`` None) left on disk in ``parts`` and read a selection at a time
    (:meth:`take`: what training at tens of millions of rows does). ``schema_hash`` is that of
    the feature list; ``meta`` is the writer's."""

    keys: pl.DataFrame
    x: np.ndarray | None
    features: tuple[str, ...]
    schema_hash: str
    meta: dict = field(default_factory=dict)
    parts: FeatureParts | None = None

    @classmethod
    def from_frame(
        cls, frame: pl.DataFrame, features: Sequence[str], meta: dict | None = None
    ) -> TrainingRows:
        """Validate and normalise rows held in memory (one frame with every column)."""
        keys, x = split_features(normalise_rows(frame, features), features)
        return cls(keys, x, tuple(features), schema_hash(features), meta or {})

    @property
    def height(self) -> int:
        return self.keys.height

    @property
    def frame(self) -> pl.DataFrame:
        """Every column in the contract's order (a copy of the features: for small rows and
        tests; training reads ``keys`` and :meth:`take`)."""
        contract = [c for c in self.keys.columns if c in KEY_COLUMNS or c in OBJECTIVES]
        extra = [c for c in self.keys.columns if c not in set(contract)]
        x = self.matrix()
        features = pl.DataFrame(
            {name: x[:, j] for j, name in enumerate(self.features)},
            schema=dict.fromkeys(self.features, pl.Float32),
        )
        return pl.concat(
            [self.keys.select(contract), features, self.keys.select(extra)], how="horizontal"
        )

    def matrix(self, features: Sequence[str] | None = None) -> np.ndarray:
        """(rows, F) C-contiguous float32 of ``features`` (default: all, in order; then ``x``
        itself, not a copy, when in memory)."""
        if self.x is None:
            return self.take(np.ones(self.height, dtype=bool), features)
        if features is None or tuple(features) == self.features:
            return self.x
        columns = [self.features.index(f) for f in features]
        return np.ascontiguousarray(self.x[:, columns])

    def take(self, mask: np.ndarray, features: Sequence[str] | None = None) -> np.ndarray:
        """(mask.sum(), F) float32 of the rows where ``mask`` (bool, (rows,)), ``features``
        (default: all) in order."""
        names = self.features if features is None else tuple(features)
        if self.x is not None:
            if names == self.features:
                return self.x[mask]
            columns = np.array([self.features.index(f) for f in names], dtype=np.int64)
            return self.x[np.ix_(mask, columns)]
        if self.parts is None:
            raise ValueError("rows without features in memory or on disk")
        return self.parts.take(np.flatnonzero(mask), names)


def split_features(
    frame: pl.DataFrame, features: Sequence[str], out: np.ndarray | None = None
) -> tuple[pl.DataFrame, np.ndarray]:
    """(every column but the features, (rows, F) float32 of ``features``) of a normalised frame;
    the matrix is written into ``out`` (rows, F) when given (a slice of a larger matrix)."""
    names = list(features)
    x = np.empty((frame.height, len(names)), dtype=np.float32) if out is None else out
    for j, name in enumerate(names):  # column by column: no (rows, F) float64 intermediate
        x[:, j] = frame[name].to_numpy()
    return frame.drop(names), x


def normalise_rows(
    frame: pl.DataFrame, features: Sequence[str], source: str | Path = ""
) -> pl.DataFrame:
    """Check ``frame`` against the row contract and return it with canonical dtypes (extra columns
    kept after the contract's). Raises :class:`RankerError` naming the column: reason ``schema``
    for missing columns or unusable dtypes, ``values`` for nulls, labels other than 0/1, a decision
    with two times, or an item twice in one decision."""
    features = list(features)
    _check_names(features, source)
    required = [*KEY_COLUMNS, *OBJECTIVES, *features]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise RankerError(f"missing columns {missing}", source, "schema")
    schema = frame.schema
    casts = [
        _cast(schema, "decision_id", pl.Int64, _is_integer, "an integer", source),
        _cast(schema, "decision_ts_us", pl.Int64, _is_integer, "an integer", source),
        _cast(schema, "item_id", pl.String, _is_text, "a string", source),
        _cast(schema, "price", pl.Float64, _is_numeric, "a number", source),
        _cast(schema, "blend_score", pl.Float64, _is_numeric, "a number", source),
        # Labels are checked as Int64 (a 300 must be refused, not overflow Int8), then narrowed.
        *(
            _cast(schema, o, pl.Int64, _is_label, "boolean or integer 0/1", source)
            for o in OBJECTIVES
        ),
        *(
            _cast(schema, f, pl.Float32, _is_numeric, "a number", source).fill_null(float("nan"))
            for f in features
        ),
    ]
    out = frame.with_columns(casts)
    _check_values(out, source)
    out = _close_funnel(out.with_columns(pl.col(o).cast(pl.Int8) for o in OBJECTIVES), source)
    return out.select([*required, *(c for c in out.columns if c not in set(required))])


def _check_names(features: list[str], source: str | Path) -> None:
    if not features:
        raise RankerError("the feature list is empty", source, "schema")
    if len(set(features)) != len(features):
        twice = sorted({f for f in features if features.count(f) > 1})
        raise RankerError(f"features named twice: {twice}", source, "schema")
    clash = [f for f in features if f in KEY_COLUMNS or f in OBJECTIVES]
    if clash:
        raise RankerError(f"features {clash} reuse key or label column names", source, "schema")


def _is_integer(dtype: pl.DataType) -> bool:
    return dtype.is_integer()


def _is_text(dtype: pl.DataType) -> bool:
    return dtype in (pl.String, pl.Categorical)


def _is_numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() or dtype == pl.Boolean or dtype == pl.Null


def _is_label(dtype: pl.DataType) -> bool:
    return dtype.is_integer() or dtype == pl.Boolean


def _cast(
    schema: pl.Schema,
    name: str,
    target: type[pl.DataType],
    accepts: Callable[[pl.DataType], bool],
    expected: str,
    source: str | Path,
) -> pl.Expr:
    dtype = schema[name]
    if not accepts(dtype):
        raise RankerError(
            f"column {name!r} has dtype {dtype}, expected {expected}", source, "schema"
        )
    return pl.col(name).cast(target)


def _check_values(frame: pl.DataFrame, source: str | Path) -> None:
    for name in ("decision_id", "decision_ts_us", "item_id", "blend_score", *OBJECTIVES):
        nulls = frame[name].null_count()
        if nulls:
            raise RankerError(f"column {name!r} has {nulls} null value(s)", source, "values")
    if frame["blend_score"].is_nan().any():
        raise RankerError("column 'blend_score' has NaN values", source, "values")
    for objective in OBJECTIVES:
        bad = frame.filter(~pl.col(objective).is_in([0, 1]))
        if bad.height:
            raise RankerError(
                f"column {objective!r} holds {bad[objective][0]} (labels must be 0 or 1)",
                source,
                "values",
            )
    times = frame.group_by("decision_id").agg(pl.col("decision_ts_us").n_unique().alias("times"))
    mixed = times.filter(pl.col("times") > 1)
    if mixed.height:
        raise RankerError(
            f"decision {mixed['decision_id'].min()!s} has rows at {mixed['times'].max()!s} "
            "different times (one decision is one moment)",
            source,
            "values",
        )
    if frame.select(pl.struct("decision_id", "item_id").is_duplicated().any()).item():
        raise RankerError("an item appears twice in one decision", source, "values")


def _close_funnel(frame: pl.DataFrame, source: str | Path) -> pl.DataFrame:
    """``cart |= purchase``, then ``click |= cart`` (deepest first, so a purchase reaches click)."""
    for earlier, later in reversed(list(itertools.pairwise(OBJECTIVES))):
        broken = frame.select(((pl.col(later) == 1) & (pl.col(earlier) == 0)).sum()).item()
        if broken:
            log.warning(
                "%s: %d row(s) with %s = 1 but %s = 0; set %s = 1 (labels nest along the funnel)",
                source or "rows",
                broken,
                later,
                earlier,
                earlier,
            )
            frame = frame.with_columns(pl.max_horizontal(earlier, later).alias(earlier))
    return frame
