from __future__ import annotations

import os

import pytest

# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shop():
    """The default synthetic shop (5,000 items, seed 0), generated once."""
    from indexer.datagen.config import ShopConfig
    from indexer.datagen.shop import generate_shop

    return generate_shop(ShopConfig())


@pytest.fixture(scope="session")
def shop_stats(shop):
    from indexer.datagen.stats import shop_stats

    return shop_stats(shop.catalog.frame, shop.events, sorted(shop.complement_pairs()))
