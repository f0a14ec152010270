"""The catalogue contract: one row per product.

Columns (see ARCHITECTURE.md): ``item_id`` (str, unique), ``title`` (str), ``category`` (str; a
path such as ``Outdoors > Camping > Tents``), and optionally ``description``, ``brand``, ``price``
(finite, >= 0), ``image`` (local path, relative to the catalogue file unless absolute), ``in_stock``
(bool). Any other column is a free attribute and is kept as read.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from crossrec.vocabulary import CATEGORY_DELIMITER, CATEGORY_SEPARATOR
from indexer.errors import DataValidationError, Problem
from indexer.tables import ColumnSpec, read_table, rows_where

CATALOG_COLUMNS = [
    ColumnSpec("item_id", "string", required=True, nullable=False),
    ColumnSpec("title", "string", required=True, nullable=False),
    ColumnSpec("category", "string", required=True, nullable=False),
    ColumnSpec("description", "string"),
    ColumnSpec("brand", "string"),
    ColumnSpec("price", "number"),
    ColumnSpec("image", "string"),
    ColumnSpec("in_stock", "bool"),
]


def read_catalog(path: str | Path) -> pl.DataFrame:
    """Read and validate a catalogue file (.parquet, .csv, .jsonl).

    Returns the rows in file order with typed columns; ``category`` is normalised to segments
    joined by ``" > "`` and relative ``image`` paths are resolved against the file's folder. Raises
    :class:`~indexer.errors.DataValidationError` naming each bad row and column.
    """
    path = Path(path)
    frame = read_table(path, CATALOG_COLUMNS, check=catalog_problems)
    frame = frame.with_columns(normalise_category(frame["category"]).alias("category"))
    if "image" in frame.columns:
        image = pl.col("image")
        frame = frame.with_columns(
            pl.when(image.str.starts_with("/"))
            .then(image)
            .otherwise(pl.lit(f"{path.parent}/") + image)
            .alias("image")
        )
    return frame


def validate_catalog(frame: pl.DataFrame, source: str = "<catalog>") -> pl.DataFrame:
    """Validate an in-memory catalogue frame (already typed); return it with categories
    normalised."""
    problems = catalog_problems(frame)
    if problems:
        raise DataValidationError(source, problems)
    return frame.with_columns(normalise_category(frame["category"]).alias("category"))


def catalog_problems(frame: pl.DataFrame) -> list[Problem]:
    """Rules beyond column types: unique ids, well-formed category paths, non-negative prices."""
    problems: list[Problem] = []
    ids = frame["item_id"]
    first_row: dict[str, int] = {}
    for row, item in zip(
        ids.is_duplicated().arg_true().to_list(), ids.filter(ids.is_duplicated()).to_list()
    ):
        if item in first_row:
            problems.append(
                Problem(
                    f"duplicate item_id {item!r} (first at row {first_row[item]})",
                    row + 1,
                    "item_id",
                )
            )
        else:
            first_row[item] = row + 1
    category = frame["category"]
    bad_path = (
        category.is_not_null()
        & (category.str.strip_chars() != "")
        & normalise_category(category).is_null()
    )
    problems += rows_where(
        bad_path, "category", lambda r: f"empty segment in category path {category[r]!r}"
    )
    if "price" in frame.columns:
        problems += rows_where(
            frame["price"] < 0, "price", lambda r: f"must be >= 0, got {frame['price'][r]}"
        )
    return problems


def normalise_category(category: pl.Series) -> pl.Series:
    """``"Outdoors>Camping >Tents"`` -> ``"Outdoors > Camping > Tents"``; null where a segment is
    empty."""
    parts = category.str.split(CATEGORY_DELIMITER).list.eval(pl.element().str.strip_chars())
    has_empty = parts.list.eval((pl.element() == "").any()).list.first()
    joined = parts.list.join(CATEGORY_SEPARATOR)
    return (
        pl.select(pl.when(has_empty).then(None).otherwise(joined)).to_series().alias(category.name)
    )
