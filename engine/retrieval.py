"""Cross-category retrieval: from a profile to a list of items from the right categories.

1. **Targets.** Categories are scored by ``sum_A w_A * P(B | A)`` over the user's interest
   categories A, with ``P(B | A)`` from the index's transition statistics smoothed toward B's
   overall session share (so a source with few sessions leans on popularity). ``cross_share`` of the
   k slots go to categories the user never engaged with, the rest to touched ones; quotas, when
   given, fix the categories and counts instead. Include / exclude lists filter categories first.
2. **Search.** Every interest vector searches the shards of every target category (one batched
   faiss call per shard); a candidate keeps the interest with the highest similarity.
3. **Filter and merge.** Already-bought items, excluded items, out-of-stock items (on request),
   prices outside the range and brands not asked for are dropped; duplicates keep their best score.
4. **Allocate.** Quota categories get exactly their count (fewer only when they run out); otherwise
   slots go round-robin over the target categories in score order, best item first, and the list
   is returned best score first.

An empty profile (unknown user, no inline events) falls back to the most popular items of the most
popular categories, with ``interest_index = -1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from engine.profile import Profile
from indexer.artifact import IndexVersion


@dataclass(frozen=True)
class Query:
    """What a request asks for, with categories already resolved to leaf categories."""

    k: int
    quotas: tuple[tuple[frozenset[str], int], ...] = ()
    cross_share: float = 1.0
    include: frozenset[str] | None = None
    exclude: frozenset[str] = frozenset()
    in_stock_only: bool = False
    min_price: float | None = None
    max_price: float | None = None
    brands: frozenset[str] = frozenset()
    exclude_items: frozenset[str] = frozenset()


@dataclass
class Candidate:
    row: int
    score: float
    interest: int  # -1 for the popularity fallback
    shard: str
    category: str


@dataclass
class Retrieved:
    items: list[Candidate]
    targets: list[str]
    target_scores: dict[str, float]
    shards_searched: int
    fallback: bool
    stage_counts: dict[str, int] = field(default_factory=dict)


class Retriever:
    """Everything retrieval needs from one index version, precomputed once per version."""

    def __init__(
        self,
        version: IndexVersion,
        smoothing: float = 5.0,
        candidates_per_shard: int = 50,
        target_categories: int = 8,
        behaviour_rerank: int = 200,
    ) -> None:
        self.version = version
        items = version.items
        self.item_ids = items["item_id"].to_numpy()
        self.row_of = {item: i for i, item in enumerate(items["item_id"].to_list())}
        self.categories = items["category"].to_numpy()
        self.shard_of = items["shard"].to_numpy()
        self.in_stock = items["in_stock"].fill_null(True).to_numpy() if "in_stock" in items.columns else np.ones(items.height, bool)
        self.price = items["price"].fill_null(np.nan).to_numpy() if "price" in items.columns else np.full(items.height, np.nan)
        self.brand = items["brand"].fill_null("").to_numpy() if "brand" in items.columns else np.full(items.height, "")
        self.popularity = items["popularity"].fill_null(0.0).to_numpy()
        self.all_categories = sorted(version.manifest["category_shards"])
        self.smoothing = smoothing
        self.candidates_per_shard = candidates_per_shard
        self.target_categories = target_categories
        share = dict(version.categories.select("category", "session_share").iter_rows())
        total = sum(share.values())
        if total <= 0:  # no events at build time: fall back on category sizes
            share = dict(version.categories.select("category", "items").iter_rows())
            total = sum(share.values())
        self.category_share = {c: share.get(c, 0.0) / total for c in self.all_categories}
        # Smoothed P(target | source) as a dense (categories x categories) matrix, diagonal zero.
        self.category_index = {c: i for i, c in enumerate(self.all_categories)}
        # The 500 most popular items of each category, for the fallback (one sort, no per-category scan).
        codes = np.array([self.category_index[c] for c in self.categories])
        self.category_code = codes
        order = np.lexsort((-self.popularity, codes))
        starts = np.searchsorted(codes[order], np.arange(len(self.all_categories) + 1))
        self.popular_rows = {c: order[starts[i] : min(starts[i] + 500, starts[i + 1])] for i, c in enumerate(self.all_categories)}
        self._by_popularity = {c: order[starts[i] : starts[i + 1]] for i, c in enumerate(self.all_categories)}
        # Cross-category shard search in the behaviour space (see _behaviour_search).
        self.behaviour_rerank = behaviour_rerank
        self.behaviour_dim = 0
        self._behaviour: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        adaptation = version.manifest.get("adaptation")
        if adaptation and behaviour_rerank > 0:
            self.behaviour_dim = int(adaptation["dim"])
            block = np.asarray(version.vectors[:, -self.behaviour_dim :])
            for shard_id in version.shards:
                rows = np.flatnonzero(self.shard_of == shard_id)
                self._behaviour[shard_id] = (rows, np.ascontiguousarray(block[rows]))
        n = len(self.all_categories)
        counts = np.zeros((n, n))
        for source, target, sessions in version.transitions.select("source", "target", "sessions").iter_rows():
            if source in self.category_index and target in self.category_index:
                counts[self.category_index[source], self.category_index[target]] = sessions
        prior = np.array([self.category_share[c] for c in self.all_categories])
        self.transition_matrix = (counts + smoothing * prior[None, :]) / (counts.sum(axis=1, keepdims=True) + smoothing)
        np.fill_diagonal(self.transition_matrix, 0.0)
        self.popular_categories = sorted(self.all_categories, key=lambda c: -self.category_share[c])


    # -- categories -------------------------------------------------------------------------
    def resolve(self, name: str) -> frozenset[str]:
        """A category path or a prefix of one (a department) -> the leaf categories it covers."""
        name = " > ".join(part.strip() for part in name.split(">"))
        if name in self.version.manifest["category_shards"]:
            return frozenset([name])
        return frozenset(c for c in self.all_categories if c.startswith(name + " > "))

    def transition(self, source: str, target: str) -> float:
        """Smoothed P(target | source)."""
        return float(self.transition_matrix[self.category_index[source], self.category_index[target]])

    def score_targets(self, profile: Profile) -> dict[str, float]:
        weights = np.zeros(len(self.all_categories))
        for source, weight in profile.category_weights.items():
            if source in self.category_index:
                weights[self.category_index[source]] = weight
        return dict(zip(self.all_categories, (weights @ self.transition_matrix).tolist()))

    # -- retrieval --------------------------------------------------------------------------
    def retrieve(self, profile: Profile, query: Query) -> Retrieved:
        allowed = set(self.all_categories) if query.include is None else set(query.include)
        allowed -= query.exclude
        if profile.empty:
            return self._fallback(query, allowed)
        scores = self.score_targets(profile)
        touched = profile.touched_categories
        plan = self._plan(query, allowed, scores, touched)
        wanted = {c for cats, _ in plan for c in cats}
        candidates, searched = self._search(profile, wanted, query)
        # Filters can leave a group short although its categories hold enough matching items
        # further down: search those categories' shards exhaustively once.
        short = {c for cats, n in plan if sum(len(candidates.get(c, [])) for c in cats) < n for c in cats}
        if short:
            more, extra = self._search(profile, short, query, exhaustive=True)
            candidates.update(more)
            searched += extra
        chosen = self._allocate(plan, candidates, query.k, quota_groups=bool(query.quotas))
        targets = sorted(wanted, key=lambda c: -scores.get(c, 0.0))
        counts = {"targets": len(wanted), "candidates": sum(len(v) for v in candidates.values()), "returned": len(chosen)}
        return Retrieved(chosen, targets, scores, searched, False, counts)

    def _plan(self, query: Query, allowed: set[str], scores: dict[str, float], touched: set[str]) -> list[tuple[list[str], int]]:
        """(categories in preference order, slots) groups."""
        if query.quotas:
            plan = [(sorted(cats & allowed, key=lambda c: -scores.get(c, 0.0)), n) for cats, n in query.quotas]
            rest = query.k - sum(n for _, n in query.quotas)
            quota_cats = {c for cats, _ in query.quotas for c in cats}
            if rest > 0:
                others = sorted(allowed - quota_cats, key=lambda c: -scores.get(c, 0.0))[: self.target_categories]
                plan.append((others, rest))
            return plan
        n_cross = round(query.cross_share * query.k)
        cross = sorted(allowed - touched, key=lambda c: -scores[c])[: max(self.target_categories, math.ceil(n_cross / 3))]
        same = sorted(allowed & touched, key=lambda c: -scores[c])[: self.target_categories]
        # When the allowed categories leave one side empty, the other side takes all k slots.
        if not cross:
            return [(same, query.k)]
        if not same:
            return [(cross, query.k)]
        plan = [(cross, n_cross)]
        if query.k - n_cross > 0:
            plan.append((same, query.k - n_cross))
        return plan

    def _search(self, profile: Profile, categories: set[str], query: Query, exhaustive: bool = False) -> tuple[dict[str, list[Candidate]], int]:
        all_scores, all_rows, all_interests = [], [], []
        searched = 0
        m = len(profile.interests)
        for category in categories:
            for shard_id in self.version.shards_of(category):
                count = self.version.shards[shard_id].ntotal
                if count == 0:
                    continue
                wanted_k = count if exhaustive else max(self.candidates_per_shard, 3 * query.k + len(profile.purchased_rows))
                k = int(min(count, wanted_k))
                if shard_id in self._behaviour and category not in profile.touched_categories and not exhaustive:
                    scores, rows = self._behaviour_search(shard_id, profile.interests, k)
                else:
                    scores, rows = self.version.search(shard_id, profile.interests, k)
                searched += 1
                all_scores.append(scores.ravel())
                all_rows.append(rows.ravel())
                all_interests.append(np.repeat(np.arange(m), k))
        if not all_rows:
            return {}, searched
        scores, rows, interests = np.concatenate(all_scores), np.concatenate(all_rows), np.concatenate(all_interests)
        valid = rows >= 0
        scores, rows, interests = scores[valid], rows[valid], interests[valid]
        # Best score per item: sort by (row, -score) and keep each row's first.
        order = np.lexsort((-scores, rows))
        first = np.r_[True, rows[order][1:] != rows[order][:-1]]
        pick = order[first]
        rows, scores, interests = rows[pick], scores[pick], interests[pick]
        keep = np.isin(rows, self._passes(rows, query, profile.purchased_rows))
        rows, scores, interests = rows[keep], scores[keep], interests[keep]
        # No category can contribute more than k items: keep each category's best k, best first.
        codes = self.category_code[rows]
        order = np.lexsort((rows, -scores, codes))
        codes_sorted = codes[order]
        group_start = np.searchsorted(codes_sorted, codes_sorted)
        order = order[np.arange(len(order)) - group_start < query.k]
        by_category: dict[str, list[Candidate]] = {}
        for row, score, interest in zip(rows[order].tolist(), scores[order].tolist(), interests[order].tolist()):
            category = self.categories[row]
            by_category.setdefault(category, []).append(Candidate(row, score, interest, str(self.shard_of[row]), category))
        return by_category, searched

    def _behaviour_search(self, shard_id: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of a shard for queries from *other* categories: scan the shard's 64-d behaviour
        block, then re-rank the best ``behaviour_rerank`` (at least 4k) with the full vectors.

        Such queries are out of distribution for a category shard (graph and IVF indexes miss most
        neighbours) and a full scan reads every 500+-d vector; in the behaviour space, trained to put
        complements together, the true neighbours are near the top, and the scan is ~9x smaller.
        Measured at 1M items: recall@10 1.000 against exact full-vector search at 200 candidates,
        0.34 ms instead of 1.9 ms (numpy scan) per query on a 39k-item shard.
        """
        rows, block = self._behaviour[shard_id]
        k = min(k, len(rows))
        n_candidates = min(len(rows), max(self.behaviour_rerank, 4 * k))
        coarse = block @ queries[:, -self.behaviour_dim :].T  # (n, m)
        if n_candidates < len(rows):
            candidates = np.argpartition(-coarse, n_candidates - 1, axis=0)[:n_candidates].T  # (m, c)
        else:
            candidates = np.broadcast_to(np.arange(len(rows)), (len(queries), len(rows)))
        out_scores = np.empty((len(queries), k), dtype=np.float32)
        out_rows = np.empty((len(queries), k), dtype=np.int64)
        for j, cand in enumerate(candidates):
            exact = np.asarray(self.version.vectors[rows[cand]]) @ queries[j]
            best = np.argsort(-exact, kind="stable")[:k]
            out_scores[j], out_rows[j] = exact[best], rows[cand[best]]
        return out_scores, out_rows

    def _passes(self, rows: np.ndarray, query: Query, purchased: set[int]) -> np.ndarray:
        if len(rows) == 0:
            return rows
        ok = ~np.isin(rows, np.fromiter(purchased, dtype=np.int64, count=len(purchased)))
        if query.exclude_items:
            ok &= ~np.isin(self.item_ids[rows], list(query.exclude_items))
        if query.in_stock_only:
            ok &= self.in_stock[rows]
        if query.min_price is not None:
            ok &= self.price[rows] >= query.min_price
        if query.max_price is not None:
            ok &= self.price[rows] <= query.max_price
        if query.brands:
            ok &= np.isin(self.brand[rows], list(query.brands))
        return rows[ok]

    @staticmethod
    def _allocate(plan: list[tuple[list[str], int]], candidates: dict[str, list[Candidate]], k: int, quota_groups: bool = False) -> list[Candidate]:
        chosen: list[Candidate] = []
        used: set[int] = set()
        for categories, slots in plan:
            queues = [[c for c in candidates.get(cat, []) if c.row not in used] for cat in categories]
            taken = 0
            while taken < slots and any(queues):
                for queue in queues:
                    while queue and queue[0].row in used:
                        queue.pop(0)
                    if queue and taken < slots:
                        pick = queue.pop(0)
                        chosen.append(pick)
                        used.add(pick.row)
                        taken += 1
        # Slots a group could not fill go to the best remaining candidates of the planned categories
        # (quota groups are exact: their counts are never exceeded, only the unconstrained rest).
        if len(chosen) < k and not quota_groups:
            planned = {cat for categories, _ in plan for cat in categories}
            rest = sorted((c for cat in planned for c in candidates.get(cat, []) if c.row not in used), key=lambda c: (-c.score, c.row))
            chosen += rest[: k - len(chosen)]
        chosen.sort(key=lambda c: (-c.score, c.row))
        return chosen[:k]

    def _fallback(self, query: Query, allowed: set[str]) -> Retrieved:
        categories = [c for c in self.popular_categories if c in allowed]
        top = max(float(self.popularity.max()), 1e-12)
        candidates: dict[str, list[Candidate]] = {}
        for c in categories:
            rows = self._passes(self.popular_rows[c], query, set())
            if len(rows) < query.k and len(self.popular_rows[c]) < len(self._by_popularity[c]):
                rows = self._passes(self._by_popularity[c], query, set())  # filters reach past the top 500
            candidates[c] = [Candidate(int(r), float(self.popularity[r]) / top, -1, str(self.shard_of[r]), c) for r in rows[: 3 * query.k]]
        if query.quotas:
            plan = [([c for c in categories if c in cats], n) for cats, n in query.quotas]
            rest = query.k - sum(n for _, n in query.quotas)
            if rest > 0:
                quota_cats = {c for cats, _ in query.quotas for c in cats}
                plan.append(([c for c in categories if c not in quota_cats][: self.target_categories], rest))
        else:
            plan = [(categories[: max(self.target_categories, query.k)], query.k)]
        chosen = self._allocate(plan, candidates, query.k, quota_groups=bool(query.quotas))
        return Retrieved(chosen, categories[: self.target_categories], dict(self.category_share), 0, True,
                         {"targets": len(categories), "candidates": sum(len(v) for v in candidates.values()), "returned": len(chosen)})
