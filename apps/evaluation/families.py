"""``crossrec eval --families``: the same evaluation on several shop families at once, a table
per family, so that a default is judged on shops it was not tuned on
(:mod:`indexer.datagen.families`).

Each family's shop is generated into ``OUT/<family>/shop`` (same size and seed), then evaluated
into ``OUT/<family>`` (its result in ``OUT/<family>/eval.json`` as soon as it is done) with the
given settings and the split chosen per family (``auto``: a basket log without a clock gets the
holdout split). The result maps family -> the usual result dict.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def shop_for(family: str, items: int, seed: int, out: Path) -> Path:
    """Generate ``family``'s shop of ``items`` items into ``out`` unless one of the same settings
    is there already; returns the folder."""
    import json

    from indexer.datagen.cli import make_shop
    from indexer.datagen.families import family_config
    from indexer.datagen.shop import TRUTH_FILE

    cfg = family_config(family, items=items, seed=seed)
    truth = out / TRUTH_FILE
    if truth.is_file():
        saved = json.loads(truth.read_text())["config"]
        if (saved.get("family", "default"), saved["items"], saved["seed"]) == (family, items, seed):
            return out
    make_shop(cfg, out, validate=False, echo=lambda *a, **k: None)
    return out


def evaluate_families(config, families: tuple[str, ...], items: int) -> dict[str, dict]:
    """:func:`apps.evaluation.run.evaluate` of ``config`` on each family's shop (``config``'s
    catalogue and events are replaced per family, its output goes to ``out/<family>``)."""
    from apps.evaluation.report import write_json
    from apps.evaluation.run import evaluate

    results = {}
    for family in families:
        shop = shop_for(family, items, config.split.seed, config.out / family / "shop")
        log.info("family %s: %s", family, shop)
        results[family] = evaluate(
            dataclasses.replace(
                config,
                catalog=shop / "catalog.parquet",
                events=shop / "events.parquet",
                out=config.out / family,
            )
        )
        write_json(results[family], config.out / family / "eval.json")  # each as it finishes
    return results
