"""Reading the impression log and the outcome events of the store, from a SQLite file or the
``crossrec`` schema of a PostgreSQL database (``postgresql://`` URL), read-only: whole
(:func:`read_log`) or a few thousand lists at a time (:func:`read_log_chunks`). A log written
before version 2 (engine/feedback/shown.py) reads as deterministic lists: propensity 1.0, no
exploration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import polars as pl

from engine.feedback.outcomes import OUTCOMES
from engine.state.postgres import redacted
from engine.state.store import ACTION_CODES


def _connect(path: str | Path):
    """A read-only connection to a SQLite file, or to the ``crossrec`` schema of a PostgreSQL
    database (``postgresql://`` URL: the engine's shared store and log); the same SQL reads
    both."""
    if str(path).startswith(("postgresql://", "postgres://")):
        return _Postgres(str(path))
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


class _Postgres:
    """The few calls the readers make, on PostgreSQL (``?`` placeholders become ``%s``)."""

    def __init__(self, url: str) -> None:
        import psycopg

        try:
            self.db = psycopg.connect(url, options="-c search_path=crossrec", connect_timeout=10)
        except psycopg.Error as exc:  # one line naming the database (password hidden), exit 2
            raise ValueError(f"{redacted(url)}: cannot connect ({exc})") from exc
        self.db.read_only = True

    def execute(self, sql: str, params: tuple = ()):
        import psycopg

        try:
            return self.db.execute(sql.replace("?", "%s"), params)
        except psycopg.Error as exc:  # reported like a damaged file: one line, exit 2
            raise sqlite3.Error(str(exc)) from exc

    def close(self) -> None:
        self.db.close()


def read_log(path: str | Path, vectors: bool = False) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(lists, shown) from an impression log file. ``shown`` has one row per item impression;
    with ``vectors`` it carries the logged feature rows (``vector``, bytes) and ``lists`` the
    feature names per list (``feature_names``). A file that is not a readable impression log
    (empty, garbage, truncated, damaged) raises ValueError naming it."""
    try:
        return _read_log(path, vectors)
    except sqlite3.Error as exc:
        raise ValueError(
            f"{redacted(path)}: not a readable crossrec impression log ({exc})"
        ) from exc


#: Rows fetched from SQLite at a time: only one chunk is ever held as Python tuples, the rest as
#: columns (a whole table as tuples took ~3x the file's size).
READ_CHUNK = 100_000


def _frame(
    db: sqlite3.Connection, sql: str, schema: dict, params: tuple = (), chunk: int = READ_CHUNK
) -> pl.DataFrame:
    """The result of ``sql`` as a frame with ``schema``, read ``chunk`` rows at a time."""
    cursor = db.execute(sql, params)
    parts = []
    while rows := cursor.fetchmany(chunk):
        parts.append(pl.DataFrame(rows, schema=schema, orient="row"))
    return pl.concat(parts, rechunk=True) if parts else pl.DataFrame(schema=schema)


def read_log_chunks(path: str | Path, lists_per_chunk: int = 2_000):
    """(lists, shown) of ``lists_per_chunk`` lists at a time, every list whole in one chunk, so
    that a report holds one chunk of impressions at once, not the log. Raises like
    :func:`read_log`."""
    db = _connect(path)
    try:
        last = ""
        while True:
            list_columns, shown_columns = _columns(db, "")
            lists = pl.DataFrame(
                db.execute(
                    f"SELECT {list_columns} FROM lists WHERE recommendation_id > ? "
                    "ORDER BY recommendation_id LIMIT ?",
                    (last, lists_per_chunk),
                ).fetchall(),
                schema=_LIST_SCHEMA,
                orient="row",
            )
            if lists.is_empty():
                return
            first, last = lists["recommendation_id"][0], lists["recommendation_id"][-1]
            shown = _frame(
                db,
                f"SELECT {shown_columns} FROM shown "
                "WHERE recommendation_id >= ? AND recommendation_id <= ?",
                _SHOWN_SCHEMA,
                (first, last),
            )
            yield lists, shown
    except sqlite3.Error as exc:
        raise ValueError(
            f"{redacted(path)}: not a readable crossrec impression log ({exc})"
        ) from exc
    finally:
        db.close()


_LIST_COLUMNS = "recommendation_id, user_key, ts_us, arm, index_version, model_version"
_LIST_SCHEMA = {
    "recommendation_id": pl.String,
    "user_key": pl.String,
    "ts_us": pl.Int64,
    "arm": pl.String,
    "index_version": pl.String,
    "model_version": pl.String,
    "exploration": pl.String,
}
_SHOWN_COLUMNS = "recommendation_id, position, item_id, category, cross_category, sources, "
_SHOWN_COLUMNS += "score, price"
_SHOWN_SCHEMA = {
    "recommendation_id": pl.String,
    "position": pl.Int64,
    "item_id": pl.String,
    "category": pl.String,
    "cross_category": pl.Boolean,
    "sources": pl.String,
    "score": pl.Float64,
    "price": pl.Float64,
    "propensity": pl.Float64,
}


def _columns(db, table: str) -> tuple[str, str]:
    """The list and shown columns to select, prefixed for ``table`` ("l." or ""): a log written
    before version 2 (engine/feedback/shown.py) has neither ``exploration`` nor ``propensity``
    and reads as deterministic lists."""
    if isinstance(db, _Postgres):
        found = {
            (t, c)
            for t, c in db.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'crossrec'"
            ).fetchall()
        }
    else:
        found = {
            (t, row[1]) for t in ("lists", "shown") for row in db.execute(f"PRAGMA table_info({t})")
        }
    exploration = f"{table}exploration" if ("lists", "exploration") in found else "''"
    propensity = "propensity" if ("shown", "propensity") in found else "1.0"
    lists = ", ".join(f"{table}{c.strip()}" for c in _LIST_COLUMNS.split(","))
    return f"{lists}, {exploration} AS exploration", f"{_SHOWN_COLUMNS}, {propensity} AS propensity"


def _read_log(path: str | Path, vectors: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
    db = _connect(path)
    try:
        schema = dict(_LIST_SCHEMA)
        if vectors:  # the names are only needed to read the vectors (a long string per list)
            schema["feature_names"] = pl.String
            list_columns, columns = _columns(db, "l.")
            sql = f"SELECT {list_columns}, f.names FROM lists l "
            sql += "JOIN feature_lists f ON l.features = f.schema"
        else:
            list_columns, columns = _columns(db, "")
            sql = f"SELECT {list_columns} FROM lists"
        lists = _frame(db, sql, schema)
        shown_schema = dict(_SHOWN_SCHEMA)
        if vectors:
            shown_schema["vector"] = pl.Binary
            columns += ", vector"
        shown = _frame(db, f"SELECT {columns} FROM shown", shown_schema)
    finally:
        db.close()
    return lists, shown


def read_outcome_events(store: str | Path) -> pl.DataFrame:
    """Events of the store that quote a recommendation and could be outcomes."""
    codes = {ACTION_CODES[a]: a for a in OUTCOMES}
    db = _connect(store)
    try:
        frame = _frame(
            db,
            "SELECT user_key, item_id, action, ts_us, recommendation_id FROM events "
            f"WHERE recommendation_id != '' AND action IN ({','.join(map(str, codes))})",
            {
                "user_key": pl.String,
                "item_id": pl.String,
                "action": pl.Int64,
                "ts_us": pl.Int64,
                "recommendation_id": pl.String,
            },
        )
    except sqlite3.Error as exc:
        raise ValueError(f"{redacted(store)}: not a readable crossrec event store ({exc})") from exc
    finally:
        db.close()
    return frame.with_columns(pl.col("action").replace_strict(codes, return_dtype=pl.String))


def read_user_events(store: str | Path, user_keys: list[str], chunk: int = 500) -> pl.DataFrame:
    """Every event of the store from ``user_keys`` (``user_key``, ``item_id``, ``action`` name,
    ``ts_us``), sorted by user and time: the histories logged lists were answered from."""
    names = {code: action for action, code in ACTION_CODES.items()}
    schema = {"user_key": pl.String, "item_id": pl.String, "action": pl.Int64, "ts_us": pl.Int64}
    db = _connect(store)
    parts = []
    try:
        for i in range(0, len(user_keys), chunk):
            keys = user_keys[i : i + chunk]
            parts.append(
                _frame(
                    db,
                    "SELECT user_key, item_id, action, ts_us FROM events "
                    f"WHERE user_key IN ({','.join('?' * len(keys))})",
                    schema,
                    tuple(keys),
                )
            )
    except sqlite3.Error as exc:
        raise ValueError(f"{redacted(store)}: not a readable crossrec event store ({exc})") from exc
    finally:
        db.close()
    frame = pl.concat(parts) if parts else pl.DataFrame(schema=schema)
    return frame.with_columns(pl.col("action").replace_strict(names, return_dtype=pl.String)).sort(
        "user_key", "ts_us", maintain_order=True
    )
