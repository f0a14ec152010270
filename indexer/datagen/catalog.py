"""Synthetic products: categories, text, brand, price, stock, popularity, appeal, launch time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from indexer.datagen.config import ShopConfig
from indexer.datagen.taxonomy import (
    BRANDS_PER_DEPARTMENT,
    COLOURS,
    DEPARTMENT_SENTENCES,
    DEPARTMENT_WORDS,
    Leaf,
    brand_names,
    departments,
)

_CLOSING = [
    "Backed by a two-year warranty.",
    "Ships in recyclable packaging.",
    "Free returns within 30 days.",
    "Rated highly by verified buyers.",
    "Designed and tested in-house.",
    "Part of our best-selling range.",
]


@dataclass(frozen=True)
class SyntheticCatalog:
    """The catalogue (``frame``, in the catalogue contract) and per-item hidden truth, aligned with
    the frame's rows: leaf index, popularity weight, appeal (standard normal; raises click and
    conversion), launch time (seconds after the window start; 0 = before it)."""

    frame: pl.DataFrame
    leaf: np.ndarray
    weight: np.ndarray
    appeal: np.ndarray
    launch_s: np.ndarray
    price: np.ndarray
    in_stock: np.ndarray


def item_ids(n: int) -> list[str]:
    width = max(6, len(str(n - 1)))
    return [f"i{i:0{width}d}" for i in range(n)]


def generate_catalog(
    cfg: ShopConfig, leaves: list[Leaf], rng: np.random.Generator
) -> SyntheticCatalog:
    n, n_leaves = cfg.items, len(leaves)
    dept_names = departments()
    dept_of_leaf = np.array([dept_names.index(leaf.department) for leaf in leaves])

    # Category sizes vary (log-normal shares); every leaf gets at least one item.
    share = rng.lognormal(0.0, 0.5, n_leaves)
    leaf = np.concatenate(
        [np.arange(n_leaves), rng.choice(n_leaves, size=n - n_leaves, p=share / share.sum())]
    )
    rng.shuffle(leaf)

    weight = rng.lognormal(0.0, cfg.popularity_sigma, n)
    appeal = rng.standard_normal(n)
    window_s = cfg.weeks * 7 * 86_400
    launched_late = rng.random(n) < cfg.launch_rate
    launch_s = np.where(launched_late, rng.uniform(0.05, 0.9, n) * window_s, 0.0)
    # The most popular item of each category exists from the start, so every category can always
    # be shopped (the event generator relies on it).
    order = np.lexsort((-weight, leaf))
    first_of_leaf = order[np.searchsorted(leaf[order], np.arange(n_leaves))]
    launch_s[first_of_leaf] = 0.0

    median = np.array([lf.median_price for lf in leaves])[leaf]
    price = np.maximum(np.floor(median * rng.lognormal(0.0, 0.35, n)), 1.0) - 0.01
    in_stock = rng.random(n) < cfg.in_stock_rate

    # Brands: a Zipf-like share within the department.
    brand_rank = np.minimum(rng.zipf(1.6, n) - 1, BRANDS_PER_DEPARTMENT - 1)
    brands_by_dept = [brand_names(d) for d in range(len(dept_names))]
    brand = [brands_by_dept[d][b] for d, b in zip(dept_of_leaf[leaf], brand_rank)]

    titles, descriptions = _texts(leaves, leaf, brand, dept_of_leaf, dept_names, rng)
    frame = pl.DataFrame(
        {
            "item_id": item_ids(n),
            "title": titles,
            "category": [leaves[c].path for c in leaf],
            "description": descriptions,
            "brand": brand,
            "price": price,
            "in_stock": in_stock,
        }
    )
    return SyntheticCatalog(frame, leaf, weight, appeal, launch_s, price, in_stock)


def _texts(
    leaves: list[Leaf],
    leaf: np.ndarray,
    brand: list[str],
    dept_of_leaf: np.ndarray,
    dept_names: list[str],
    rng: np.random.Generator,
) -> tuple[list[str], list[str]]:
    n = len(leaf)
    noun_i = rng.integers(0, 3, n)
    q = rng.random((n, 6)).argsort(axis=1)[:, :3]  # three distinct qualifiers per item
    colour_i = rng.integers(0, len(COLOURS), n)
    dept_word_i = rng.integers(0, 6, n)
    closing_i = rng.integers(0, len(_CLOSING), n)
    model = rng.integers(10, 999, n)
    letters = rng.integers(0, 26, n)
    titles, descriptions = [], []
    for i in range(n):
        lf = leaves[leaf[i]]
        dept = dept_names[dept_of_leaf[leaf[i]]]
        noun = lf.nouns[noun_i[i]]
        q1, q2, q3 = (lf.qualifiers[j] for j in q[i])
        titles.append(f"{brand[i]} {q1} {noun} {chr(65 + letters[i])}{model[i]}")
        descriptions.append(
            f"A {q2}, {q3} {noun} in {COLOURS[colour_i[i]]}, "
            f"{DEPARTMENT_WORDS[dept][dept_word_i[i]]} "
            f"and made to last. {DEPARTMENT_SENTENCES[dept]} {_CLOSING[closing_i[i]]}"
        )
    return titles, descriptions
