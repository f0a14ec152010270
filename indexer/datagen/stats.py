"""What a generated shop actually contains, measured from its files.

Used by the tests (the proportions the generator promises), by ``crossrec datagen`` (printed and
stored in ground_truth.json) and by anyone checking that a change kept the shop realistic. Works on
the public files alone (catalogue, events, complement edges, item partner pairs), so it applies to
any shop in the same format.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import cast

import numpy as np
import polars as pl
from scipy import sparse

_TOKEN = re.compile(r"[a-z0-9][a-z0-9\-\.]*")


def popularity_skew(events: pl.DataFrame, n_items: int, top: float = 0.01) -> float:
    """Share of all events that fall on the ``top`` fraction of catalogue items (by event count)."""
    counts = events["item_id"].value_counts()["count"].sort(descending=True)
    k = max(1, round(top * n_items))
    return float(counts.head(k).sum()) / float(counts.sum())


def with_category(events: pl.DataFrame, catalog: pl.DataFrame) -> pl.DataFrame:
    return events.join(catalog.select("item_id", "category"), on="item_id", how="left")


def outside_first_category(events: pl.DataFrame) -> float:
    """Mean over users with at least two events of the share of their events outside the category
    of their first event. Needs a ``category`` column."""
    per_user = (
        events.sort("ts")
        .group_by("user_id")
        .agg(
            pl.len().alias("n"),
            (pl.col("category") != pl.col("category").first()).mean().alias("outside"),
        )
        .filter(pl.col("n") >= 2)
    )
    return float(cast(float, per_user["outside"].mean()))


def basket_sizes(events: pl.DataFrame) -> pl.Series:
    """Distinct items touched per session; takes events or their ``session_touches``."""
    return events.group_by("session_id").agg(pl.col("item_id").n_unique().alias("items"))["items"]


def single_event_user_share(events: pl.DataFrame) -> float:
    counts = events["user_id"].value_counts()["count"]
    return float(cast(float, (counts == 1).mean()))


def funnel(events: pl.DataFrame) -> dict[str, float]:
    """Conversion between consecutive stages, counted in events."""
    n = dict(events["action"].cast(pl.String).value_counts().iter_rows())
    return {
        "click_per_view": n.get("click", 0) / max(n.get("view", 0), 1),
        "cart_per_click": n.get("cart", 0) / max(n.get("click", 0), 1),
        "purchase_per_cart": n.get("purchase", 0) / max(n.get("cart", 0), 1),
    }


def session_touches(events: pl.DataFrame, catalog: pl.DataFrame) -> pl.DataFrame:
    """Distinct (session, item) pairs: ``session_id`` (as an integer code), ``item_id``, the item's
    ``category`` and catalogue ``row``. What the session-level figures count, computed once."""
    items = catalog.select("item_id", "category").with_row_index("row")
    return (
        events.select(
            pl.col("session_id").cast(pl.Categorical).to_physical().cast(pl.Int64), "item_id"
        )
        .unique()
        .join(items, on="item_id")
    )


def session_category_lift(events: pl.DataFrame, categories: list[str]) -> np.ndarray:
    """``lift[a, b]`` = P(session touches b | it touches a) / P(session touches b), over sessions
    (or users, when there is no session_id) touching at least one category. Needs ``category``;
    takes events or their ``session_touches``."""
    key = "session_id" if "session_id" in events.columns else "user_id"
    index = {c: i for i, c in enumerate(categories)}
    pairs = events.select(key, "category").unique()
    session = _codes(pairs[key])
    cat = pairs["category"].replace_strict(index, return_dtype=pl.Int64).to_numpy()
    n_sessions = pairs[key].n_unique()
    # Sparse: a session touches a handful of categories, and the dense (sessions x categories)
    # product was the slowest step of a million-item shop.
    incidence = sparse.csr_matrix(
        (np.ones(len(session)), (session, cat)), shape=(int(session.max()) + 1, len(categories))
    )
    together = (incidence.T @ incidence).toarray()
    seen = np.diag(together).copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = together * n_sessions / np.outer(seen, seen)
    return np.nan_to_num(lift)


def partner_lift(
    touches: pl.DataFrame,
    catalog: pl.DataFrame,
    pairs: pl.DataFrame | Sequence[tuple[str, str]],
    seed: int = 0,
) -> dict[str, float]:
    """How much more often planted item pairs share a session than chance for their categories and
    popularity.

    A touch is a distinct (session, item). For a pair (a, b), b in category B: of the touches of
    B's items in the sessions that touch a (``M``), the observed ones are on b; chance expects b's
    share of B's touches in all *other* sessions::

        expected(a, b) = M * (n(b) - n(a, b)) / (N(B) - M)

    with n(b) the sessions touching b, n(a, b) those touching both and N(B) all touches of B. So
    chance already knows that a's sessions go to B (the category complement) and how popular b is
    elsewhere; only the pairing itself lifts the ratio. ``lift`` pools the pairs (sum observed /
    sum expected; pairs whose B is never touched outside a's sessions are left out);
    ``control_lift`` does the same with each pair's b swapped for another item of B drawn
    uniformly (as partners are) and sits at or a little below 1 (the partner takes some of a's
    sessions' B touches); ``pairs_seen`` is the share of pairs seen in one session at least once.

    ``touches``: ``session_touches(events, catalog)``. ``pairs``: (item_id, partner_id) rows, as a
    two-column frame or a sequence of tuples; ids missing from the catalogue are ignored. Cost:
    one join of the pairs with every session of their first item, so about the number of touches.
    """
    nan = float("nan")
    items = catalog.select("item_id", "category").with_row_index("row")
    rows = (
        _pair_frame(pairs)
        .join(items.select(item_id="item_id", a="row"), on="item_id", maintain_order="left")
        .join(items.select(partner_id="item_id", b="row"), on="partner_id", maintain_order="left")
    )  # in the given order, so the control draw is the same every run
    if rows.height == 0:
        return {"lift": nan, "control_lift": nan, "pairs_seen": nan}
    cat_of = (items["category"].rank("dense") - 1).to_numpy().astype(np.int64)
    n_items, n_cats = catalog.height, int(cat_of.max()) + 1
    t_session = _codes(touches["session_id"])
    t_item = touches["row"].to_numpy().astype(np.int64)
    n_item = np.bincount(t_item, minlength=n_items)
    n_cat = np.bincount(cat_of[t_item], minlength=n_cats)
    # Single integer keys: (session, item) for "did this session touch b", (session, category)
    # for "how many of the category's items did it touch".
    touched = pl.Series(t_session * n_items + t_item).implode()
    sc_key, sc_count = np.unique(t_session * n_cats + cat_of[t_item], return_counts=True)

    a = rows["a"].to_numpy().astype(np.int64)
    b = rows["b"].to_numpy().astype(np.int64)
    n_pairs = len(a)
    # Every (pair, session touching a); b and its stand-in share a category, so M serves both.
    expanded = pl.DataFrame({"pair": np.arange(n_pairs), "row": a}).join(
        pl.DataFrame({"s": t_session, "row": t_item}), on="row"
    )
    pair, session = expanded["pair"].to_numpy(), expanded["s"].to_numpy()
    m_rows = pl.DataFrame({"k": session * n_cats + cat_of[b][pair]}).join(
        pl.DataFrame({"k": sc_key, "m": sc_count}), on="k", how="left", maintain_order="left"
    )
    m = np.bincount(pair, weights=m_rows["m"].fill_null(0).to_numpy(), minlength=n_pairs)
    outside = n_cat[cat_of[b]] - m

    def pooled(b: np.ndarray) -> tuple[float, np.ndarray]:
        hit = pl.Series(session * n_items + b[pair]).is_in(touched).to_numpy()
        n_ab = np.bincount(pair, weights=hit & (b[pair] >= 0), minlength=n_pairs)
        usable = (outside > 0) & (b >= 0)
        expected = (m * (n_item[np.maximum(b, 0)] - n_ab))[usable] / outside[usable]
        lift = float(n_ab[usable].sum() / expected.sum()) if expected.sum() > 0 else nan
        return lift, n_ab

    lift, n_ab = pooled(b)
    control_lift, _ = pooled(_control_partner(b, cat_of, np.random.default_rng(seed)))
    return {"lift": lift, "control_lift": control_lift, "pairs_seen": float((n_ab > 0).mean())}


def _pair_frame(pairs: pl.DataFrame | Sequence[tuple[str, str]]) -> pl.DataFrame:
    if isinstance(pairs, pl.DataFrame):
        return pairs.select(pl.nth(0).alias("item_id"), pl.nth(1).alias("partner_id"))
    return pl.DataFrame(
        list(pairs), schema={"item_id": pl.String, "partner_id": pl.String}, orient="row"
    )


def _control_partner(b: np.ndarray, cat_of: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each partner row ``b``, another row of its category drawn uniformly (-1 where the
    category has no other item)."""
    order = np.argsort(cat_of, kind="stable")
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    first = np.searchsorted(cat_of[order], cat_of[b])
    size = np.bincount(cat_of)[cat_of[b]]
    pick = np.floor(rng.random(len(b)) * (size - 1)).astype(np.int64)
    pick += pick >= position[b] - first  # skip b itself
    return np.where(size > 1, order[np.minimum(first + pick, len(order) - 1)], -1)


def _codes(ids: pl.Series) -> np.ndarray:
    """An integer per distinct id (not necessarily dense; integer ids pass through); far cheaper
    than ranking strings."""
    if ids.dtype.is_integer():
        return ids.to_numpy().astype(np.int64)
    return ids.cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)


def title_similarity(
    catalog: pl.DataFrame, categories: list[str], sample: int = 20_000, seed: int = 0
) -> tuple[np.ndarray, float]:
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


def shop_stats(
    catalog: pl.DataFrame,
    events: pl.DataFrame,
    complements: list[tuple[str, str]],
    partners: pl.DataFrame | Sequence[tuple[str, str]] | None = None,
) -> dict:
    """Every figure above for one shop, as a JSON-ready dict; the partner figures only when
    ``partners`` (planted (item_id, partner_id) pairs) are given and events have sessions."""
    if "session_id" not in events.columns:  # a basket log: each user's events are one basket
        events = events.with_columns(pl.col("user_id").alias("session_id"))
    categories = sorted(catalog["category"].unique().to_list())
    index = {c: i for i, c in enumerate(categories)}
    edges = [(index[a], index[b]) for a, b in complements]
    ev = with_category(events, catalog)
    outside = outside_first_category(ev)
    touches = None
    if "session_id" in events.columns:
        # Session figures count distinct (session, item) touches, a third fewer rows than events;
        # letting go of the event-level join first keeps the peak memory where it was.
        del ev
        ev = touches = session_touches(events, catalog)
    lift = session_category_lift(ev, categories)
    text_sim, own = title_similarity(catalog, categories)
    is_edge = np.zeros_like(lift, dtype=bool)
    for a, b in edges:
        is_edge[a, b] = True
    off = ~np.eye(len(categories), dtype=bool)
    n_users = events["user_id"].n_unique()
    out = {
        "items": catalog.height,
        "users": n_users,
        "events": events.height,
        "sessions": int(events["session_id"].n_unique()) if touches is not None else None,
        "categories": len(categories),
        "complement_edges": len(edges),
        "top1pct_item_share": round(popularity_skew(events, catalog.height), 4),
        "outside_first_category_share": round(outside, 4),
        "median_basket": float(cast(float, basket_sizes(ev).median())),
        "single_event_user_share": round(single_event_user_share(events), 4),
        "funnel": {k: round(v, 4) for k, v in funnel(events).items()},
        "complement_lift_mean": round(float(lift[is_edge].mean()), 3),
        "non_complement_lift_mean": round(float(lift[off & ~is_edge].mean()), 3),
        "complement_auc_by_coengagement": round(edge_auc(lift, edges), 4),
        "complement_auc_by_title_similarity": round(edge_auc(text_sim, edges), 4),
        "titles_nearest_own_category": round(own, 4),
    }
    if partners is not None and touches is not None:
        pairs = _pair_frame(partners)
        p = partner_lift(touches, catalog, pairs)
        out |= {
            "partner_pairs": pairs.height,
            "items_with_partners": pairs["item_id"].n_unique(),
            "partner_lift": round(p["lift"], 2),
            "partner_control_lift": round(p["control_lift"], 3),
            "partner_pairs_seen": round(p["pairs_seen"], 4),
        }
    return out
