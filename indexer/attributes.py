"""The attribute encoder: category path, brand and price band as one vector.

Each attribute value is a token (``cat1:Outdoors``, ``cat3:Outdoors > Camping > Tents``,
``brand:Trailcrest``, ``price:7``) with a fixed pseudo-random direction derived from a hash of the
token, so the encoding needs no fitted vocabulary, is identical on every machine, and gives an
unseen brand or category a vector of its own. An item's vector is the weighted sum of its tokens'
directions, L2-normalised. Two items share a category level -> that level's weight shows up in their
cosine; unrelated tokens add noise of about ``1/sqrt(dim)``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import cast

import numpy as np
import polars as pl

from crossrec.vocabulary import CATEGORY_SEPARATOR


@dataclass(frozen=True)
class AttributeEncoder:
    """``level_weights[i]`` weighs the i-th category level counted from the leaf (leaf first);
    deeper paths reuse the last weight. The price band is ``floor(log2(price + 1))``."""

    dim: int = 64
    level_weights: tuple[float, ...] = (1.0, 0.6, 0.4)
    brand_weight: float = 0.5
    price_weight: float = 0.3
    name: str = "attributes"

    def describe(self) -> dict:
        return {
            "name": self.name,
            "kind": "hashed-attributes",
            "dim": self.dim,
            "level_weights": list(self.level_weights),
            "brand_weight": self.brand_weight,
            "price_weight": self.price_weight,
            "price_band": "floor(log2(price + 1))",
            "hash": "blake2b-64 seed -> numpy PCG64 standard normal",
            "normalised": True,
        }

    def token_vector(self, token: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
        v = np.random.default_rng(seed).standard_normal(self.dim)
        return (v / np.linalg.norm(v)).astype(np.float32)

    def encode(self, catalog: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """``(n, dim)`` vectors and an all-true mask (every item has a category)."""
        n = catalog.height
        out = np.zeros((n, self.dim), dtype=np.float32)
        paths = catalog["category"].str.split(CATEGORY_SEPARATOR)
        depth = int(cast(int, paths.list.len().max()))
        for level in range(depth):
            prefix = paths.list.head(level + 1).list.join(CATEGORY_SEPARATOR)
            from_leaf = paths.list.len() - 1 - level  # 0 for the leaf itself
            weights = np.array(
                [
                    self.level_weights[min(d, len(self.level_weights) - 1)] if d >= 0 else 0.0
                    for d in from_leaf.to_list()
                ],
                dtype=np.float32,
            )
            tokens = (f"cat{level + 1}:" + prefix).fill_null("")
            self._add(out, tokens, weights)
        if "brand" in catalog.columns:
            brand = catalog["brand"]
            self._add(
                out,
                ("brand:" + brand).fill_null(""),
                np.where(brand.is_null().to_numpy(), 0.0, self.brand_weight),
            )
        if "price" in catalog.columns:
            price = catalog["price"].to_numpy()
            band = np.floor(np.log2(np.nan_to_num(price, nan=0.0) + 1.0)).astype(np.int64)
            has = ~np.isnan(price.astype(np.float64))
            tokens = pl.Series([f"price:{b}" for b in band])
            self._add(out, tokens, np.where(has, self.price_weight, 0.0))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.maximum(norms, 1e-12)
        return out, np.ones(n, dtype=bool)

    def _add(self, out: np.ndarray, tokens: pl.Series, weights: np.ndarray) -> None:
        codes = (tokens.rank("dense") - 1).to_numpy()
        vocab = tokens.unique().sort().to_list()
        table = np.stack(
            [
                self.token_vector(t)
                if t and not t.endswith(":")
                else np.zeros(self.dim, np.float32)
                for t in vocab
            ]
        )
        out += table[codes] * np.asarray(weights, dtype=np.float32)[:, None]


def expected_noise(dim: int) -> float:
    """Typical |cosine| of two unrelated token directions."""
    return 1.0 / math.sqrt(dim)
