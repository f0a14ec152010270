"""The split as arrays: item codes, sparse user-item matrices, and the one way lists are cut.

Items are coded by catalogue row (``0 .. n_items - 1``); training users by sorted id; test users by
their position in ``Split.test_users``. A recommendation list is a row of item codes, best first,
padded with ``-1``. Every method's list goes through :func:`top_k_unseen` (scores) or
:func:`drop_seen` (ready lists), so train-touched items are excluded the same way for all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from apps.evaluation.split import Split
from crossrec.vocabulary import ACTION_WEIGHT

PAD = -1


@dataclass(frozen=True)
class EvalSet:
    """Everything a method needs, with shapes:

    - ``item_ids`` (n_items,) str, catalogue order; ``item_category`` (n_items,) int codes into
      ``categories``.
    - ``train``: training events with ``u`` (training-user code), ``i`` (item code), ``weight``
      (action weight: view 1, click 2, cart 4, purchase 8) and ``age_days`` (days before the cut).
    - ``train_users`` (n_train_users,) str; ``test_rows`` (n_test,) their codes for the test users.
    - ``seen`` (n_test, n_items) CSR bool: items each test user touched in training.
    - ``positives`` / ``cross_positives`` (n_test, n_items) CSR bool.
    """

    split: Split
    item_ids: np.ndarray
    item_category: np.ndarray
    categories: list[str]
    train: pl.DataFrame
    train_users: np.ndarray
    test_rows: np.ndarray
    seen: sp.csr_matrix
    positives: sp.csr_matrix
    cross_positives: sp.csr_matrix

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_test(self) -> int:
        return len(self.test_rows)

    def code_of(self) -> dict[str, int]:
        """item id -> item code."""
        return {item: i for i, item in enumerate(self.item_ids.tolist())}

    def user_items(self, values: str = "weight", rows: np.ndarray | None = None) -> sp.csr_matrix:
        """(training users, items) CSR of summed ``values`` per pair (``"weight"``: action weights;
        ``"binary"``: 1 per touched pair); ``rows`` selects training-user codes (default all)."""
        frame = self.train.group_by("u", "i").agg(pl.col("weight").sum())
        data = (
            np.ones(frame.height, np.float32)
            if values == "binary"
            else frame["weight"].to_numpy().astype(np.float32)
        )
        m = sp.csr_matrix(
            (data, (frame["u"].to_numpy(), frame["i"].to_numpy())),
            shape=(len(self.train_users), self.n_items),
        )
        m.sort_indices()
        return m if rows is None else m[rows]


def build_eval_set(split: Split, catalog: pl.DataFrame) -> EvalSet:
    """Code the split against the catalogue (events on unknown items are dropped here)."""
    item_ids = catalog["item_id"].to_numpy()
    codes = pl.DataFrame(
        {"item_id": catalog["item_id"], "i": np.arange(catalog.height, dtype=np.int64)}
    )
    categories = sorted(catalog["category"].unique().to_list())
    category_code = {c: k for k, c in enumerate(categories)}
    item_category = np.array(
        [category_code[c] for c in catalog["category"].to_list()], dtype=np.int64
    )
    train_users = np.array(sorted(split.train["user_id"].unique().to_list()), dtype=object)
    users = pl.DataFrame(
        {"user_id": train_users.tolist(), "u": np.arange(len(train_users), dtype=np.int64)}
    )
    weight = pl.col("action").cast(pl.String).replace_strict(ACTION_WEIGHT, return_dtype=pl.Float64)
    cut = split.cut
    train = (
        split.train.join(codes, on="item_id")
        .join(users, on="user_id")
        .select(
            "u",
            "i",
            weight.alias("weight"),
            ((pl.lit(cut) - pl.col("ts")).dt.total_microseconds() / 86_400e6).alias("age_days"),
        )
    )
    test_code = {u: k for k, u in enumerate(split.test_users)}
    row_of = dict(zip(users["user_id"].to_list(), users["u"].to_list()))
    test_rows = np.array([row_of[u] for u in split.test_users], dtype=np.int64)
    n_test, n_items = len(split.test_users), catalog.height

    def matrix(frame: pl.DataFrame) -> sp.csr_matrix:
        frame = frame.join(codes, on="item_id").select("user_id", "i").unique()
        rows = np.array([test_code[u] for u in frame["user_id"].to_list()], dtype=np.int64)
        m = sp.csr_matrix(
            (np.ones(frame.height, bool), (rows, frame["i"].to_numpy())), shape=(n_test, n_items)
        )
        m.sort_indices()
        return m

    seen = matrix(split.train.filter(pl.col("user_id").is_in(split.test_users)))
    positives = matrix(split.positives)
    cross = matrix(split.positives.filter("cross"))
    return EvalSet(
        split,
        item_ids,
        item_category,
        categories,
        train,
        train_users,
        test_rows,
        seen,
        positives,
        cross,
    )


def pair_keys(m: sp.csr_matrix) -> np.ndarray:
    """Sorted ``row * n_cols + col`` of a CSR matrix's stored entries (int64)."""
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    return np.sort(rows * m.shape[1] + m.indices.astype(np.int64))


def member(lists: np.ndarray, m: sp.csr_matrix, row_offset: int = 0) -> np.ndarray:
    """(n, k) bool: ``lists[r, j]`` is stored in row ``row_offset + r`` of ``m`` (pads are
    False)."""
    keys = pair_keys(m)
    rows = np.arange(row_offset, row_offset + lists.shape[0], dtype=np.int64)[:, None]
    wanted = rows * m.shape[1] + np.maximum(lists, 0)
    pos = np.searchsorted(keys, wanted)
    hit = (
        keys[np.minimum(pos, len(keys) - 1)] == wanted if len(keys) else np.zeros(lists.shape, bool)
    )
    return hit & (lists >= 0)


def top_k_unseen(scores: np.ndarray, seen: sp.csr_matrix, k: int) -> np.ndarray:
    """Best ``k`` item codes per row of ``scores`` (n, n_items), excluding each row's ``seen``
    items (CSR, n rows) and non-finite scores; ties go to the lower item code. (n, k), -1 padded."""
    scores = np.array(scores, dtype=np.float32, copy=True)
    rows = np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr))
    scores[rows, seen.indices] = -np.inf
    n, n_items = scores.shape
    k_eff = min(k, n_items)
    part = (
        np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
        if k_eff < n_items
        else np.broadcast_to(np.arange(n_items), (n, n_items)).copy()
    )
    top_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -top_scores), axis=1)
    part, top_scores = (
        np.take_along_axis(part, order, axis=1),
        np.take_along_axis(top_scores, order, axis=1),
    )
    out = np.full((n, k), PAD, dtype=np.int64)
    out[:, :k_eff] = np.where(np.isfinite(top_scores), part, PAD)
    return compact(out)


def drop_seen(lists: np.ndarray, seen: sp.csr_matrix) -> np.ndarray:
    """Remove each row's ``seen`` items from ready lists (n, k), keeping order; -1 padded."""
    return compact(np.where(member(lists, seen), PAD, lists))


def compact(lists: np.ndarray) -> np.ndarray:
    """Move each row's pads to its end, keeping the order of the items."""
    order = np.argsort(lists < 0, axis=1, kind="stable")
    return np.take_along_axis(lists, order, axis=1)


def lists_from_ids(ids: list[list[str]], code_of: dict[str, int], k: int) -> np.ndarray:
    """Item-id lists (best first) -> (n, k) codes; unknown ids are dropped, then -1 padded."""
    out = np.full((len(ids), k), PAD, dtype=np.int64)
    for r, row in enumerate(ids):
        codes = [code_of[i] for i in row if i in code_of][:k]
        out[r, : len(codes)] = codes
    return out
