"""One answered list as the impression log keeps it: the :class:`Impression` record, whether a
list is sampled, and its rows in the log's tables (the same tables in SQLite and, under the
``crossrec`` schema, in PostgreSQL; engine/feedback/impressions.py and impressions_postgres.py).

Tables (one row per response, one per shown item)::

    lists(recommendation_id PK, user_key, ts_us, arm, index_version, model_version, features,
          exploration)
    shown(recommendation_id, position, item_id, category, cross_category, sources, score,
          price, vector, propensity)            PK (recommendation_id, position)
    feature_lists(schema, names)    names: JSON list of the feature columns in ``vector``

``user_key`` is the pseudonym (never a raw id); ``vector`` is the item's feature row as the ranker
saw it (float32 bytes, ``feature_lists.names`` order), so training can learn from exactly what was
served.

``propensity`` is the probability with which the engine put that item at that position
(engine/retrieval/explore.py: 1.0 in a list that did not explore) and ``exploration`` how the list
was drawn (``""`` for an arm that does not explore, else the JSON of
:class:`engine.retrieval.explore.Draw`: kind, position, the arm's settings, the pool size, from
which the list's whole distribution is rebuilt). Both came with log version 2 (``LOG_VERSION``):
a log written before them gains the columns when an engine opens it (``MIGRATIONS``), and its
lists read as deterministic (propensity 1.0, no exploration), which they were.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass

import numpy as np

from engine.state.pseudonym import hash_fraction

SCHEMA = """
CREATE TABLE IF NOT EXISTS lists (
  recommendation_id TEXT PRIMARY KEY,
  user_key TEXT NOT NULL,
  ts_us INTEGER NOT NULL,
  arm TEXT NOT NULL,
  index_version TEXT NOT NULL,
  model_version TEXT NOT NULL,
  features TEXT NOT NULL,
  exploration TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS lists_by_time ON lists (ts_us);
CREATE INDEX IF NOT EXISTS lists_by_user ON lists (user_key);
CREATE TABLE IF NOT EXISTS shown (
  recommendation_id TEXT NOT NULL,
  position INTEGER NOT NULL,
  item_id TEXT NOT NULL,
  category TEXT NOT NULL,
  cross_category INTEGER NOT NULL,
  sources TEXT NOT NULL,
  score REAL NOT NULL,
  price REAL,
  vector BLOB,
  propensity REAL NOT NULL DEFAULT 1.0,
  PRIMARY KEY (recommendation_id, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS feature_lists (
  schema TEXT PRIMARY KEY,
  names TEXT NOT NULL
) WITHOUT ROWID;
"""


#: The log's format: 2 added ``lists.exploration`` and ``shown.propensity``.
LOG_VERSION = 2
#: (table, column, SQLite declaration, PostgreSQL declaration) added since version 1.
MIGRATIONS = (
    ("lists", "exploration", "TEXT NOT NULL DEFAULT ''", "TEXT NOT NULL DEFAULT ''"),
    ("shown", "propensity", "REAL NOT NULL DEFAULT 1.0", "DOUBLE PRECISION NOT NULL DEFAULT 1.0"),
)


@dataclass(frozen=True)
class Impression:
    """One response as shown: per position (arrays of equal length) the item, its category,
    whether that category is new to the user, its sources, score, price and feature row."""

    recommendation_id: str
    user_key: str  # pseudonym; "" for an anonymous request
    ts_us: int
    arm: str
    index_version: str
    model_version: str
    item_ids: list[str]
    categories: list[str]
    cross_category: np.ndarray  # (k,) bool
    sources: list[tuple[str, ...]]
    scores: np.ndarray  # (k,)
    prices: np.ndarray  # (k,) NaN: unknown
    features: np.ndarray | None  # (k, len(feature_names)) float32
    feature_names: tuple[str, ...]
    propensities: np.ndarray | None = None  # (k,) None: every item at probability 1
    exploration: str = ""  # "" or the list's Draw as JSON (engine/retrieval/explore.py)


def sampled(recommendation_id: str, rate: float) -> bool:
    """Whether the list ``recommendation_id`` is logged at ``rate``: its sha256 read as a fraction
    in [0, 1) below ``rate`` (1 logs all, 0 none)."""
    if rate >= 1.0:
        return True
    return hash_fraction(recommendation_id) < rate


@functools.lru_cache(maxsize=16)
def feature_schema(names: tuple[str, ...]) -> str:
    """Short id of a feature list (computed once per distinct list, not per impression)."""
    return hashlib.sha256(json.dumps(list(names)).encode()).hexdigest()[:16]


def rows_of(batch: list[Impression], known_schemas: set[str]) -> tuple[list, list, list]:
    """(feature list rows not in ``known_schemas``, list rows, shown rows) of ``batch``, in the
    tables' column order."""
    lists: list[tuple] = []
    shown: list[tuple] = []
    schemas: list[tuple[str, str]] = []
    for imp in batch:
        schema = feature_schema(imp.feature_names)
        if schema not in known_schemas and all(schema != s for s, _ in schemas):
            schemas.append((schema, json.dumps(list(imp.feature_names))))
        lists.append(
            (
                imp.recommendation_id,
                imp.user_key,
                imp.ts_us,
                imp.arm,
                imp.index_version,
                imp.model_version,
                schema,
                imp.exploration,
            )
        )
        for p, item in enumerate(imp.item_ids):
            price = float(imp.prices[p])
            shown.append(
                (
                    imp.recommendation_id,
                    p,
                    item,
                    imp.categories[p],
                    int(bool(imp.cross_category[p])),
                    ",".join(imp.sources[p]),
                    float(imp.scores[p]),
                    None if price != price else price,
                    None
                    if imp.features is None
                    else np.ascontiguousarray(imp.features[p], np.float32).tobytes(),
                    1.0 if imp.propensities is None else float(imp.propensities[p]),
                )
            )
    return schemas, lists, shown
