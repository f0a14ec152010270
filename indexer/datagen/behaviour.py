"""Synthetic behaviour: users with several drifting interests, sessions that walk along complement
edges (and from an item to its partner), and a view -> click -> cart -> purchase funnel.

Everything is vectorised over users, sessions and steps, so a million-item shop with millions of
events takes a minute or two on one core.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from indexer.datagen.catalog import SyntheticCatalog
from indexer.datagen.complements import ComplementGraph
from indexer.datagen.config import ShopConfig
from indexer.datagen.partners import PartnerPairs

MAX_INTERESTS = 3
_US = 1_000_000


@dataclass(frozen=True)
class Users:
    """Hidden truth per user: up to three interest categories with weights (-1 / 0 for unused
    slots); a drift time (seconds, inf for none) at which slot ``drift_slot`` switches to
    ``drift_leaf``; a budget multiplier on category median prices; whether seen only once."""

    interests: np.ndarray  # (U, 3) leaf index
    weights: np.ndarray  # (U, 3)
    drift_s: np.ndarray
    drift_slot: np.ndarray
    drift_leaf: np.ndarray
    budget: np.ndarray
    single: np.ndarray


def draw_users(cfg: ShopConfig, leaf_popularity: np.ndarray, rng: np.random.Generator) -> Users:
    n = cfg.n_users
    window_s = cfg.weeks * 7 * 86_400
    # Gumbel top-k draws MAX_INTERESTS + 1 distinct categories per user in proportion to popularity;
    # the extra one is where a drifting interest moves to.
    keys = np.log(leaf_popularity)[None, :] + rng.gumbel(size=(n, len(leaf_popularity)))
    ranked = np.argsort(-keys, axis=1)[:, : MAX_INTERESTS + 1]
    count = rng.choice([1, 2, 3], size=n, p=[0.35, 0.4, 0.25])
    used = np.arange(MAX_INTERESTS)[None, :] < count[:, None]
    interests = np.where(used, ranked[:, :MAX_INTERESTS], -1)
    raw = rng.gamma(2.0, size=(n, MAX_INTERESTS)) * used
    weights = raw / raw.sum(axis=1, keepdims=True)
    single = rng.random(n) < cfg.single_event_user_rate
    drifts = ~single & (rng.random(n) < cfg.drift_user_rate)
    drift_s = np.where(drifts, rng.uniform(0.3, 0.8, n) * window_s, np.inf)
    drift_slot = np.floor(rng.random(n) * count).astype(np.int64)
    return Users(
        interests,
        weights,
        drift_s,
        drift_slot,
        ranked[:, MAX_INTERESTS],
        rng.lognormal(0.0, 0.4, n),
        single,
    )


def interest_at(users: Users, user: np.ndarray, slot: np.ndarray, t_s: np.ndarray) -> np.ndarray:
    """The leaf of interest ``slot`` of each ``user`` at time ``t_s``, drift applied."""
    drifted = (t_s >= users.drift_s[user]) & (slot == users.drift_slot[user])
    return np.where(drifted, users.drift_leaf[user], users.interests[user, slot])


def _pick_slot(users: Users, user: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cum = np.cumsum(users.weights[user], axis=1)
    return np.minimum((rng.random(len(user))[:, None] > cum).sum(axis=1), MAX_INTERESTS - 1)


class _ItemSampler:
    """Draws an item of a given leaf by popularity, among items already launched at a given time."""

    def __init__(self, catalog: SyntheticCatalog, n_leaves: int) -> None:
        self.order = np.argsort(catalog.leaf, kind="stable")
        w = catalog.weight[self.order]
        leaf_sorted = catalog.leaf[self.order]
        totals = np.bincount(leaf_sorted, weights=w, minlength=n_leaves)
        # Cumulative weight normalised per leaf and offset by the leaf index: leaf c spans (c, c+1].
        within = np.cumsum(w) - np.concatenate([[0.0], np.cumsum(totals)])[leaf_sorted]
        self.cum = leaf_sorted + within / totals[leaf_sorted]
        self.first = np.searchsorted(leaf_sorted, np.arange(n_leaves))
        self.last = np.searchsorted(leaf_sorted, np.arange(n_leaves), side="right") - 1
        self.top = np.array(
            [
                self.order[self.first[c] + np.argmax(w[self.first[c] : self.last[c] + 1])]
                for c in range(n_leaves)
            ]
        )
        self.launch_s = catalog.launch_s

    def sample(
        self, leaf: np.ndarray, t_s: np.ndarray, rng: np.random.Generator, tries: int = 8
    ) -> np.ndarray:
        item = np.empty(len(leaf), dtype=np.int64)
        todo = np.arange(len(leaf))
        for _ in range(tries):
            pos = np.searchsorted(self.cum, leaf[todo] + rng.random(len(todo)))
            pos = np.clip(pos, self.first[leaf[todo]], self.last[leaf[todo]])
            item[todo] = self.order[pos]
            todo = todo[self.launch_s[item[todo]] > t_s[todo]]
            if len(todo) == 0:
                break
        item[todo] = self.top[leaf[todo]]  # launched at the start by construction
        return item


def generate_events(
    cfg: ShopConfig,
    catalog: SyntheticCatalog,
    graph: ComplementGraph,
    partners: PartnerPairs,
    users: Users,
    leaf_median_price: np.ndarray,
    rng: np.random.Generator,
) -> pl.DataFrame:
    """Events in the event contract (user_id, item_id, action, ts, session_id), sorted by time."""
    n_leaves = len(leaf_median_price)
    window_s = cfg.weeks * 7 * 86_400
    n_users = len(users.single)

    # Sessions: who, when, how many distinct steps.
    per_user = np.where(users.single, 1, rng.geometric(1.0 / cfg.mean_sessions, n_users))
    s_user = np.repeat(np.arange(n_users), per_user)
    n_sessions = len(s_user)
    s_start = rng.uniform(0.0, window_s - 3_600, n_sessions)
    s_len = np.where(
        users.single[s_user], 1, 1 + rng.poisson(cfg.mean_session_items - 1, n_sessions)
    )

    # Walk each session through categories and items, all sessions one step at a time. Steps are
    # exponential gaps of about 1.5 minutes apart; an item is drawn by popularity among those
    # launched by then, unless a complement move lands on the previous item's partner.
    targets, cum = graph.padded(n_leaves)
    sampler = _ItemSampler(catalog, n_leaves)
    # Steps are stored session by session: step k of session s sits at offset[s] + k.
    offset = np.concatenate([[0], np.cumsum(s_len)[:-1]])
    total = int(s_len.sum())
    session = np.repeat(np.arange(n_sessions), s_len)
    leaf = np.empty(total, dtype=np.int64)
    item = np.empty(total, dtype=np.int64)
    t_view = np.empty(total)
    alive = np.arange(n_sessions)
    current = interest_at(users, s_user, _pick_slot(users, s_user, rng), s_start)
    t_now = s_start + rng.exponential(90.0, n_sessions)
    item_now = sampler.sample(current, t_now, rng)
    for step in range(int(s_len.max())):
        if step > 0:
            still = s_len[alive] > step
            alive, current, t_now, previous = (
                alive[still],
                current[still],
                t_now[still],
                item_now[still],
            )
            u = s_user[alive]
            r = rng.random(len(alive))
            to_complement = r < cfg.p_complement
            to_interest = (r >= cfg.p_complement) & (r < cfg.p_complement + cfg.p_other_interest)
            to_random = (r >= cfg.p_complement + cfg.p_other_interest) & (
                r < cfg.p_complement + cfg.p_other_interest + cfg.p_random
            )
            edge = (rng.random(len(alive))[:, None] > cum[current]).sum(axis=1)
            moved = targets[current, np.minimum(edge, targets.shape[1] - 1)]
            current = np.where(to_complement, moved, current)
            back = interest_at(users, u, _pick_slot(users, u, rng), s_start[alive])
            current = np.where(to_interest, back, current)
            current = np.where(to_random, rng.integers(0, n_leaves, len(alive)), current)
            t_now = t_now + rng.exponential(90.0, len(alive))
            item_now = sampler.sample(current, t_now, rng)
            # Partners launch no later than their item, so a partner is always live here.
            moves = np.flatnonzero(to_complement)
            partner = partners.partner_in(previous[moves], current[moves])
            take = (partner >= 0) & (rng.random(len(moves)) < cfg.partner_take)
            item_now[moves[take]] = partner[take]
        at = offset[alive] + step
        leaf[at], item[at], t_view[at] = current, item_now, t_now
    user = s_user[session]

    # The funnel. Appeal raises every stage; a price above the user's budget lowers carts and
    # purchases; out-of-stock items cannot be carted; one-time visitors only view.
    is_interest = (users.interests[user] == leaf[:, None]).any(axis=1)
    price_gap = np.log(catalog.price[item] / (leaf_median_price[leaf] * users.budget[user]))
    p_click, p_cart, p_buy = funnel(
        catalog.appeal[item], is_interest, price_gap, catalog.in_stock[item]
    )
    clicked = (rng.random(len(item)) < p_click) & ~users.single[user]
    carted = clicked & (rng.random(len(item)) < p_cart)
    bought = carted & (rng.random(len(item)) < p_buy)

    t_click = t_view + rng.exponential(20.0, len(item))
    t_cart = t_click + rng.exponential(60.0, len(item))
    t_buy = t_cart + rng.exponential(180.0, len(item))
    stages = [
        (np.ones(len(item), bool), t_view, 0),
        (clicked, t_click, 1),
        (carted, t_cart, 2),
        (bought, t_buy, 3),
    ]
    rows = np.concatenate([np.flatnonzero(mask) for mask, _, _ in stages])
    action = np.concatenate(
        [np.full(int(mask.sum()), code, dtype=np.int8) for mask, _, code in stages]
    )
    t = np.concatenate([times[mask] for mask, times, _ in stages])
    order = np.argsort(t, kind="stable")
    rows, action, t = rows[order], action[order], t[order]

    start_us = int(cfg.start.timestamp() * _US)
    return pl.DataFrame(
        {
            "user_id": _ids("u", n_users).gather(user[rows]),
            "item_id": catalog.frame["item_id"].gather(item[rows]),
            "action": pl.Series(action)
            .cast(pl.UInt32)
            .replace_strict(
                {0: "view", 1: "click", 2: "cart", 3: "purchase"}, return_dtype=pl.String
            ),
            "ts": pl.Series(start_us + (t * _US).astype(np.int64)).cast(pl.Datetime("us", "UTC")),
            "session_id": _ids("s", n_sessions).gather(session[rows]),
        }
    )


def funnel(
    appeal: np.ndarray, is_interest: np.ndarray, price_gap: np.ndarray, in_stock: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(click | view), P(cart | click), P(purchase | cart) of the shop's funnel: appeal raises
    every stage, an interest category raises clicks, a price above the user's budget (``price_gap``
    = log(price / (category median x budget))) lowers carts and purchases, out-of-stock items
    cannot be carted. The shopper simulator (``crossrec simulate``) uses the same."""
    p_click = _sigmoid(-0.9 + 0.7 * appeal + 0.5 * is_interest)
    p_cart = _sigmoid(-0.9 + 0.6 * appeal - 1.0 * price_gap) * in_stock
    p_buy = _sigmoid(-0.5 + 0.4 * appeal - 0.8 * price_gap)
    return p_click, p_cart, p_buy


def user_ids(n: int) -> pl.Series:
    return _ids("u", n)


def _ids(prefix: str, n: int) -> pl.Series:
    width = max(6, len(str(n - 1)))
    return pl.Series([f"{prefix}{i:0{width}d}" for i in range(n)], dtype=pl.String)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
