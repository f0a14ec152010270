"""What a generated shop actually contains, measured from its files.

Used by the tests (the proportions the generator promises), by ``crossrec datagen`` (printed and
stored in ground_truth.json) and by anyone checking that a change kept the shop realistic. Works on
the public files alone (catalogue, events, complement edges), so it applies to any shop in the
same format.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

_TOKEN = re.compile(r"[a-z0-9][a-z0-9\-\.]*")


def popularity_skew(events: pl.DataFrame, n_items: int, top: float = 0.01) -> float:
    """Share of all events that fall on the ``top`` fraction of catalogue items (by event count)."""
    counts = events["item_id"].value_counts()["count"].sort(descending=True)
    k = max(1, int(round(top * n_items)))
    return float(counts.head(k).sum() / counts.sum())


def with_category(events: pl.DataFrame, catalog: pl.DataFrame) -> pl.DataFrame:
    return events.join(catalog.select("item_id", "category"), on="item_id", how="left")


def outside_first_category(events: pl.DataFrame) -> float:
    """Mean over users with at least two events of the share of their events outside the category
    of their first event. Needs a ``category`` column."""
    per_user = (
        events.sort("ts")
        .group_by("user_id")
        .agg(pl.len().alias("n"), (pl.col("category") != pl.col("category").first()).mean().alias("outside"))
        .filter(pl.col("n") >= 2)
    )
    return float(per_user["outside"].mean())


def basket_sizes(events: pl.DataFrame) -> pl.Series:
    """Distinct items touched per session."""
    return events.group_by("session_id").agg(pl.col("item_id").n_unique().alias("items"))["items"]


def single_event_user_share(events: pl.DataFrame) -> float:
    counts = events["user_id"].value_counts()["count"]
    return float((counts == 1).mean())


def funnel(events: pl.DataFrame) -> dict[str, float]:
    """Conversion between consecutive stages, counted in events."""
    n = dict(events["action"].cast(pl.String).value_counts().iter_rows())
    return {
        "click_per_view": n.get("click", 0) / max(n.get("view", 0), 1),
        "cart_per_click": n.get("cart", 0) / max(n.get("click", 0), 1),
        "purchase_per_cart": n.get("purchase", 0) / max(n.get("cart", 0), 1),
    }


def session_category_lift(events: pl.DataFrame, categories: list[str]) -> np.ndarray:
    """``lift[a, b]`` = P(session touches b | it touches a) / P(session touches b), over sessions
    (or users, when there is no session_id) touching at least one category. Needs ``category``."""
    key = "session_id" if "session_id" in events.columns else "user_id"
    index = {c: i for i, c in enumerate(categories)}
    pairs = events.select(key, "category").unique()
    session = (pairs[key].rank("dense") - 1).to_numpy()
    cat = pairs["category"].replace_strict(index, return_dtype=pl.Int64).to_numpy()
    n_sessions = int(session.max()) + 1
    incidence = np.zeros((n_sessions, len(categories)), dtype=np.float32)
    incidence[session, cat] = 1.0
    together = incidence.T @ incidence
    seen = np.diag(together).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = together * n_sessions / np.outer(seen, seen)
    return np.nan_to_num(lift)


def title_similarity(catalog: pl.DataFrame, categories: list[str], sample: int = 20_000, seed: int = 0) -> tuple[np.ndarray, float]:
    """Cosine similarity between categories' TF-IDF title centroids, and the share of sampled
    titles whose nearest centroid is their own category (how much category signal titles carry).

    Sparse throughout: cost grows with the number of (title, token) pairs, not with the vocabulary.
    """
    if catalog.height > sample:
        catalog = catalog.sample(sample, seed=seed)
    index = {c: i for i, c in enumerate(categories)}
    vocab: dict[str, int] = {}
    doc_list, tok_list = [], []
    for d, title in enumerate(catalog["title"]):
        for tok in set(_TOKEN.findall(title.lower())):
            doc_list.append(d)
            tok_list.append(vocab.setdefault(tok, len(vocab)))
    doc, tok = np.array(doc_list), np.array(tok_list)
    n_docs = catalog.height
    df = np.bincount(tok, minlength=len(vocab))
    w = (np.log(n_docs / (1.0 + df)) + 1.0)[tok]
    w /= np.sqrt(np.bincount(doc, weights=w * w, minlength=n_docs))[doc]
    cat = np.array([index[c] for c in catalog["category"]])
    centroids = np.zeros((len(categories), len(vocab)))
    np.add.at(centroids, (cat[doc], tok), w)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-12
    scores = np.zeros((n_docs, len(categories)))
    np.add.at(scores, doc, w[:, None] * centroids[:, tok].T)
    own = float((scores.argmax(axis=1) == cat).mean())
    return centroids @ centroids.T, own


def edge_auc(score: np.ndarray, edges: list[tuple[int, int]]) -> float:
    """Probability that a planted edge (a, b) outscores a random non-edge pair (a != b): 0.5 means
    ``score`` says nothing about complements, 1.0 that it separates them perfectly."""
    n = score.shape[0]
    is_edge = np.zeros((n, n), dtype=bool)
    for a, b in edges:
        is_edge[a, b] = True
    off_diagonal = ~np.eye(n, dtype=bool)
    pos = score[is_edge]
    neg = score[off_diagonal & ~is_edge]
    ranks = _average_ranks(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    boundaries = np.r_[True, sorted_x[1:] != sorted_x[:-1], True]
    starts = np.flatnonzero(boundaries[:-1])
    ends = np.flatnonzero(boundaries[1:])
    for s, e in zip(starts, ends):
        ranks[order[s : e + 1]] = (s + e) / 2 + 1
    return ranks


def shop_stats(catalog: pl.DataFrame, events: pl.DataFrame, complements: list[tuple[str, str]]) -> dict:
    """Every figure above for one shop, as a JSON-ready dict."""
    categories = sorted(catalog["category"].unique().to_list())
    index = {c: i for i, c in enumerate(categories)}
    edges = [(index[a], index[b]) for a, b in complements]
    ev = with_category(events, catalog)
    lift = session_category_lift(ev, categories)
    text_sim, own = title_similarity(catalog, categories)
    is_edge = np.zeros_like(lift, dtype=bool)
    for a, b in edges:
        is_edge[a, b] = True
    off = ~np.eye(len(categories), dtype=bool)
    baskets = basket_sizes(events)
    n_users = events["user_id"].n_unique()
    return {
        "items": catalog.height,
        "users": n_users,
        "events": events.height,
        "sessions": int(events["session_id"].n_unique()) if "session_id" in events.columns else None,
        "categories": len(categories),
        "complement_edges": len(edges),
        "top1pct_item_share": round(popularity_skew(events, catalog.height), 4),
        "outside_first_category_share": round(outside_first_category(ev), 4),
        "median_basket": float(baskets.median()),
        "single_event_user_share": round(single_event_user_share(events), 4),
        "funnel": {k: round(v, 4) for k, v in funnel(events).items()},
        "complement_lift_mean": round(float(lift[is_edge].mean()), 3),
        "non_complement_lift_mean": round(float(lift[off & ~is_edge].mean()), 3),
        "complement_auc_by_coengagement": round(edge_auc(lift, edges), 4),
        "complement_auc_by_title_similarity": round(edge_auc(text_sim, edges), 4),
        "titles_nearest_own_category": round(own, 4),
    }
