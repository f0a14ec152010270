"""Reading tabular input files (Parquet, CSV, JSON Lines) and checking them against a column schema.

The file format is chosen by suffix. Values are never coerced across types: CSV text is parsed by
the rules below, typed formats (Parquet, JSON) must already carry the expected type, and every value
that does not fit becomes a :class:`~indexer.errors.Problem` naming its row and column.

Parsing rules for CSV text: numbers as decimal literals; booleans as ``true``/``false``/``1``/``0``
(any case); timestamps as ISO 8601 (``2024-05-01T12:30:00``, optional fraction, ``Z`` or ``+02:00``
offset; a space may replace the ``T``). A timestamp without an offset is taken as UTC. An empty CSV
cell is a missing value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from crossrec.vocabulary import TIMESTAMP_PATTERN
from indexer.errors import DataValidationError, Problem

Kind = Literal["string", "number", "bool", "timestamp"]
FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_ROW = "__row"
_POLARS_TYPE: dict[str, Any] = {
    "string": pl.String,
    "number": pl.Float64,
    "bool": pl.Boolean,
    "timestamp": pl.Datetime("us", "UTC"),
}
_JSON_TYPES: dict[Kind, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "bool": (bool,),
    "timestamp": (str,),
}
_EXPECTED = {
    "string": "a string",
    "number": "a number",
    "bool": "true or false",
    "timestamp": "an ISO 8601 timestamp",
}


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a contract. ``required`` columns must be present; ``nullable`` ones may hold
    missing values. String columns that are not nullable must also be non-empty."""

    name: str
    kind: Kind
    required: bool = False
    nullable: bool = True


def file_format(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise DataValidationError(
            path, [Problem(f"unknown file type '{path.suffix}'; expected one of {sorted(FORMATS)}")]
        ) from None


Check = Callable[[pl.DataFrame], list[Problem]]


def read_table(
    path: str | Path, specs: list[ColumnSpec], check: Check | None = None
) -> pl.DataFrame:
    """Read ``path`` and return it with the spec'd columns converted to their types.

    Columns not in ``specs`` are kept as read. The result keeps file order. ``check`` runs on the
    converted frame (values that failed conversion are null there) and returns rule violations
    beyond types. Raises :class:`DataValidationError` listing every problem found, in row order:
    missing or empty file, missing columns, values of the wrong type, missing values where none are
    allowed, and what ``check`` reports.
    """
    path = Path(path)
    fmt = file_format(path)
    if not path.is_file():
        raise DataValidationError(path, [Problem("file not found")])
    if path.stat().st_size == 0:
        raise DataValidationError(path, [Problem("file is empty")])
    if fmt == "jsonl":
        frame, problems = _read_jsonl(path, specs)
    else:
        frame, problems = _read_typed_or_text(path, fmt)
    if frame is None:
        raise DataValidationError(path, problems)
    if frame.height == 0:
        raise DataValidationError(path, [Problem("file has a header but no rows")])
    missing = [s.name for s in specs if s.required and s.name not in frame.columns]
    if missing:
        have = ", ".join(frame.columns)
        raise DataValidationError(
            path,
            [Problem(f"required column missing (file has: {have})", column=m) for m in missing],
        )
    columns: dict[str, pl.Series] = {}
    for spec in specs:
        if spec.name not in frame.columns:
            continue
        series, column_problems = _convert(frame[spec.name], spec, text=fmt == "csv")
        problems += column_problems
        columns[spec.name] = series
    frame = frame.with_columns(*(s.alias(n) for n, s in columns.items()))
    if check is not None:
        problems += check(frame)
    if problems:
        problems.sort(key=lambda p: (p.row if p.row is not None else 0, p.column or ""))
        raise DataValidationError(path, problems)
    return frame


def _read_typed_or_text(path: Path, fmt: str) -> tuple[pl.DataFrame | None, list[Problem]]:
    try:
        if fmt == "parquet":
            return pl.read_parquet(path), []
        # Every CSV column is read as text so that nothing is inferred behind the contract's back.
        return pl.read_csv(path, infer_schema=False), []
    except pl.exceptions.NoDataError:
        return None, [Problem("file is empty")]
    except (pl.exceptions.PolarsError, OSError) as exc:
        return None, [Problem(f"cannot be read as {fmt}: {exc}")]


def _read_jsonl(path: Path, specs: list[ColumnSpec]) -> tuple[pl.DataFrame | None, list[Problem]]:
    # Parsed line by line rather than with polars, which would silently turn a number in a string
    # column (or a string in a number column) into a string.
    kinds = {s.name: s.kind for s in specs}
    rows: list[dict[str, object]] = []
    problems: list[Problem] = []
    with path.open("rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(Problem(f"not valid JSON ({exc.msg})", row=line_no))
                continue
            if not isinstance(record, dict):
                problems.append(Problem("expected a JSON object", row=line_no))
                continue
            for name, value in record.items():
                kind = kinds.get(name)
                if value is None or kind is None:
                    continue
                if not isinstance(value, _JSON_TYPES[kind]) or (
                    kind == "number" and isinstance(value, bool)
                ):
                    problems.append(
                        Problem(
                            f"expected {_EXPECTED[kind]}, got {value!r}", row=line_no, column=name
                        )
                    )
                    record[name] = None
            record[_ROW] = line_no
            rows.append(record)
    if not rows and not problems:
        return None, [Problem("file is empty")]
    schema = {
        name: pl.String if kind == "timestamp" else _POLARS_TYPE[kind]
        for name, kind in kinds.items()
    }
    frame = (
        pl.from_dicts(rows, schema_overrides=schema, infer_schema_length=None)
        if rows
        else pl.DataFrame()
    )
    if problems:
        return None, problems
    return frame.drop(_ROW), problems


def _convert(raw: pl.Series, spec: ColumnSpec, *, text: bool) -> tuple[pl.Series, list[Problem]]:
    """Convert one column to its spec'd type; list the rows whose values do not fit."""
    name, kind = spec.name, spec.kind
    if text or (raw.dtype == pl.String and kind == "timestamp"):
        # ISO 8601 text is how CSV and JSON spell a timestamp; parsing it is not a type change.
        converted = _parse_text(raw, kind)
    elif kind == "timestamp" and isinstance(raw.dtype, pl.Datetime):
        utc = (
            raw.dt.replace_time_zone("UTC")
            if raw.dtype.time_zone is None
            else raw.dt.convert_time_zone("UTC")
        )
        converted = utc.cast(_POLARS_TYPE[kind])
    elif raw.dtype == pl.Null:
        converted = pl.Series(name, [None] * raw.len(), dtype=_POLARS_TYPE[kind])
    elif _dtype_fits(raw.dtype, kind):
        converted = raw.cast(_POLARS_TYPE[kind])
    else:
        return raw, [Problem(f"has type {raw.dtype}; expected {_EXPECTED[kind]}", column=name)]
    problems: list[Problem] = []
    bad = converted.is_null() & raw.is_not_null()
    problems += rows_where(bad, name, lambda r: f"expected {_EXPECTED[kind]}, got {raw[r]!r}")
    if kind == "number":
        nonfinite = converted.is_not_null() & ~converted.is_finite()
        problems += rows_where(nonfinite, name, lambda r: f"must be finite, got {converted[r]}")
    if not spec.nullable:
        empty = raw.is_null()
        if kind == "string":
            empty = empty | (converted.str.strip_chars() == "")
        problems += rows_where(empty, name, lambda r: "missing value")
    return converted.alias(name), problems


def rows_where(
    mask: pl.Series, column: str, message: Callable[[int], str], limit: int = 100
) -> list[Problem]:
    """One Problem per row where ``mask`` is true (at most ``limit``); rows are reported 1-based,
    so row 1 is the first record (for CSV, the line after the header)."""
    rows = mask.fill_null(False).arg_true().head(limit).to_list()
    return [Problem(message(r), row=r + 1, column=column) for r in rows]


def _dtype_fits(dtype: pl.DataType, kind: Kind) -> bool:
    if kind == "string":
        return dtype in (pl.String, pl.Categorical, pl.Enum) or isinstance(
            dtype, (pl.Categorical, pl.Enum)
        )
    if kind == "number":
        return dtype.is_numeric()
    if kind == "bool":
        return dtype == pl.Boolean
    return False


def _parse_text(raw: pl.Series, kind: Kind) -> pl.Series:
    s = raw.cast(pl.String)
    if kind == "string":
        return s
    if kind == "number":
        return s.str.strip_chars().cast(pl.Float64, strict=False)
    if kind == "bool":
        low = s.str.strip_chars().str.to_lowercase()
        return (
            pl.select(
                pl.when(low.is_in(["true", "1"]))
                .then(True)
                .when(low.is_in(["false", "0"]))
                .then(False)
                .otherwise(None)
            )
            .to_series()
            .cast(pl.Boolean)
        )
    return parse_timestamps(s)


def parse_timestamps(s: pl.Series) -> pl.Series:
    """ISO 8601 strings to ``Datetime("us", "UTC")``; unparseable values become null."""
    s = s.str.strip_chars()
    # The accepted forms are crossrec.vocabulary's TIMESTAMP_PATTERN (one rule for every reader).
    s = pl.select(pl.when(s.str.contains(TIMESTAMP_PATTERN)).then(s)).to_series()
    iso = s.str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T").str.replace(r"[zZ]$", "+00:00")
    with_offset = iso.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_zone="UTC")
    naive = iso.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False).dt.replace_time_zone("UTC")
    minutes_offset = iso.str.to_datetime("%Y-%m-%dT%H:%M%z", strict=False, time_zone="UTC")
    minutes = iso.str.to_datetime("%Y-%m-%dT%H:%M", strict=False).dt.replace_time_zone("UTC")
    return with_offset.fill_null(naive).fill_null(minutes_offset).fill_null(minutes)
