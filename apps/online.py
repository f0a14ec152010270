"""Online metrics from the impression log: lists joined to the events that quote them, rates with
intervals per arm, model version, source, position and category, and training rows from what was
shown.

Attribution (the engine's live metrics use the same rule, :mod:`engine.feedback.outcomes`): an
event is an outcome of a shown item when it quotes the list's ``recommendation_id``, comes from the
user the list was shown to (any user for an anonymous list), names an item of the list, is a click,
cart or purchase, and happens within ``window`` after the list was shown. Each (list, item, action)
counts once. Revenue is the price as shown, for purchases.

Rates are per item impression (one item shown at one position): click-through (clicks /
impressions), add-to-cart and purchase rates, revenue per thousand impressions (RPM). Arms are
assigned per user, and one user's lists are not independent, so intervals are for a ratio of sums
over users: the delta method with the users as clusters, ``r +- 1.96 * sqrt(var_u(y_u - r n_u) /
(U * mean(n_u)^2))``, with ``y_u``, ``n_u`` the user's outcomes and impressions.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from crossrec.vocabulary import OBJECTIVES
from engine.feedback.outcomes import OUTCOMES

#: Columns a breakdown may be by.
DIMENSIONS = (
    "arm",
    "model_version",
    "index_version",
    "position",
    "source",
    "cross_category",
    "explored",
)
_Z = 1.959964


def attribute(
    lists: pl.DataFrame, shown: pl.DataFrame, events: pl.DataFrame, window_us: int
) -> pl.DataFrame:
    """One row per item impression: the list's user, time, arm and versions, the item's position,
    sources, category flag and price, and 0/1 per outcome (``click``, ``cart``, ``purchase``) with
    ``revenue`` (see the module docstring for the rule)."""
    base = shown.join(lists, on="recommendation_id", how="inner")
    hits = (
        events.filter(pl.col("action").is_in(OUTCOMES))
        .join(
            base.select("recommendation_id", "item_id", "user_key", "ts_us"),
            on=["recommendation_id", "item_id"],
            suffix="_shown",
        )
        .filter(
            ((pl.col("user_key_shown") == "") | (pl.col("user_key") == pl.col("user_key_shown")))
            & (pl.col("ts_us") >= pl.col("ts_us_shown"))
            & (pl.col("ts_us") <= pl.col("ts_us_shown") + window_us)
        )
        .select("recommendation_id", "item_id", "action")
        .unique()
        .with_columns(hit=pl.lit(1, pl.Int8))
        .pivot(on="action", index=["recommendation_id", "item_id"], values="hit")
    )
    for action in OUTCOMES:
        if action not in hits.columns:
            hits = hits.with_columns(pl.lit(None, pl.Int8).alias(action))
    out = base.join(
        hits.select("recommendation_id", "item_id", *OUTCOMES),
        on=["recommendation_id", "item_id"],
        how="left",
    ).with_columns(pl.col(a).fill_null(0).cast(pl.Int8) for a in OUTCOMES)
    return out.with_columns(
        revenue=pl.when(pl.col("purchase") == 1)
        .then(pl.col("price").fill_null(0.0))
        .otherwise(0.0),
        # how the list was drawn, without the position: "none", "swap" or "slot"
        explored=pl.col("exploration").str.json_path_match("$.kind").fill_null("none"),
    )


def ratio_interval(y: np.ndarray, n: np.ndarray) -> tuple[float, float, float]:
    """sum(y) / sum(n) over clusters (users) and its 95% delta-method interval."""
    total = float(n.sum())
    if total == 0:
        return float("nan"), float("nan"), float("nan")
    r = float(y.sum()) / total
    clusters = len(n)
    if clusters < 2:
        return r, float("nan"), float("nan")
    residual = y - r * n
    se = np.sqrt(residual.var(ddof=1) / clusters) / (total / clusters)
    return r, r - _Z * se, r + _Z * se


def per_user(attributed: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """Sums per group of ``by`` (from :data:`DIMENSIONS`, or any column) and user: lists,
    impressions, outcomes, revenue - all :func:`summarise` needs. Frames of disjoint sets of lists
    add up: :func:`combine`."""
    unknown = sorted(set(by) - set(DIMENSIONS) - set(attributed.columns))
    if unknown:
        raise ValueError(f"unknown breakdown {unknown}; choose from {list(DIMENSIONS)}")
    frame = attributed
    if "source" in by:
        frame = frame.with_columns(source=pl.col("sources").str.split(",")).explode("source")
    return frame.group_by([*by, "user_key"]).agg(
        impressions=pl.len(),
        lists=pl.col("recommendation_id").n_unique(),
        **{a: pl.col(a).sum() for a in OUTCOMES},
        revenue=pl.col("revenue").sum(),
    )


def combine(parts: list[pl.DataFrame], by: list[str]) -> pl.DataFrame:
    """:func:`per_user` frames of disjoint sets of lists, summed into one."""
    sums = ("impressions", "lists", *OUTCOMES, "revenue")
    return pl.concat(parts).group_by([*by, "user_key"]).agg(pl.col(c).sum() for c in sums)


def summarise(attributed: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """Per group of ``by`` (from :data:`DIMENSIONS`): lists, impressions, users, outcome counts,
    and each rate with its interval (``ctr``, ``cart_rate``, ``purchase_rate``, ``rpm``, each with
    ``_low`` / ``_high``)."""
    return summarise_users(per_user(attributed, by), by)


def summarise_users(users: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """:func:`summarise` from :func:`per_user` sums."""
    rows = []
    groups = users.partition_by(by, as_dict=True, maintain_order=True) if by else {(): users}
    for key, g in sorted(groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        n = g["impressions"].to_numpy().astype(np.float64)
        row = dict(zip(by, key))
        row.update(
            lists=int(g["lists"].sum()),
            impressions=int(n.sum()),
            users=g.height,
            **{a: int(g[a].sum()) for a in OUTCOMES},
            revenue=float(g["revenue"].sum()),
        )
        for name, column, scale in (
            ("ctr", "click", 1.0),
            ("cart_rate", "cart", 1.0),
            ("purchase_rate", "purchase", 1.0),
            ("rpm", "revenue", 1000.0),
        ):
            r, low, high = ratio_interval(g[column].to_numpy().astype(np.float64), n)
            row.update({name: r * scale, f"{name}_low": low * scale, f"{name}_high": high * scale})
        rows.append(row)
    return pl.DataFrame(rows)


def bucketed(attributed: pl.DataFrame, bucket_us: int) -> pl.DataFrame:
    """``attributed`` with ``bucket_start_us``: the start of its list's time bucket."""
    return attributed.with_columns(bucket_start_us=(pl.col("ts_us") // bucket_us) * bucket_us)


def over_time(attributed: pl.DataFrame, by: list[str], bucket_us: int) -> pl.DataFrame:
    """:func:`summarise` per time bucket of the list's time (column ``bucket_start_us``)."""
    users = per_user(bucketed(attributed, bucket_us), ["bucket_start_us", *by])
    return timeline_users_summary(users, by)


def timeline_users_summary(users: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """:func:`over_time` from :func:`per_user` sums by ``["bucket_start_us", *by]``."""
    parts = []
    for (start,), part in (
        users.sort("bucket_start_us")
        .partition_by("bucket_start_us", as_dict=True, maintain_order=True)
        .items()
    ):
        part = part.drop("bucket_start_us")
        parts.append(
            summarise_users(part, by).with_columns(bucket_start_us=pl.lit(start, pl.Int64))
        )
    return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()


def exposure_rows(
    attributed: pl.DataFrame, index_version: str, examination: np.ndarray | None = None
):
    """Training rows (:class:`ranker.rows.TrainingRows`) from the logged impressions of
    ``index_version``: each shown item with the feature row it was ranked with and its attributed
    outcomes as labels; a list is a decision. Items shown and not taken are the negatives. Lists
    of other versions or without feature rows are skipped.

    Position: with ``examination`` (by position, top = 1: ``crossrec report --position-bias``) a
    click at ``p`` weighs ``1 / examination[p]`` (column ``weight``: inverse propensity, so a
    click low in the list counts for the attention it overcame); without it the ``position`` is
    one more feature, which serving neutralises."""
    from ranker.rows import TrainingRows

    frame = attributed.filter(
        (pl.col("index_version") == index_version) & pl.col("vector").is_not_null()
    )
    if frame.is_empty():
        raise ValueError(f"no logged impressions with feature rows for index {index_version!r}")
    names = frame["feature_names"].unique().to_list()
    if len(names) > 1:
        raise ValueError(
            "the impressions of one index version were logged with different feature lists; "
            "train on one engine version's impressions"
        )
    features = json.loads(names[0])
    matrix = np.frombuffer(b"".join(frame["vector"].to_list()), np.float32).reshape(
        frame.height, len(features)
    )
    ids = frame["recommendation_id"]
    decision = ids.rank("dense").cast(pl.Int64) - 1
    blend = matrix[:, features.index("blend")] if "blend" in features else frame["score"]
    columns = {
        "decision_id": decision,
        "decision_ts_us": frame["ts_us"],
        "item_id": frame["item_id"],
        "price": frame["price"],
        "blend_score": pl.Series(np.asarray(blend, np.float64)),
        **{o: frame[o].cast(pl.Int8) for o in OBJECTIVES},
        **{name: pl.Series(matrix[:, j]) for j, name in enumerate(features)},
    }
    if examination is None:
        columns["position"] = frame["position"].cast(pl.Float32)
        return TrainingRows.from_frame(pl.DataFrame(columns), [*features, "position"])
    position = frame["position"].to_numpy()
    if position.max() >= len(examination):
        raise ValueError(f"the examination curve stops at {len(examination)} positions")
    # a cart or purchase implies the click (the rows close the funnel the same way)
    clicked = frame.select(pl.max_horizontal(*OBJECTIVES)).to_series().to_numpy() == 1
    columns["weight"] = pl.Series(np.where(clicked, 1.0 / examination[position], 1.0))
    return TrainingRows.from_frame(pl.DataFrame(columns), features)
