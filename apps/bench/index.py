"""``crossrec bench index``: index build throughput per stage (read, encode, fuse, behaviour,
neighbours, adapt, shards, write) for a catalogue size, on this machine's CPUs, in this process
or on Ray (``--ray [ADDRESS]``).

Either a synthetic shop of ``--items`` items (generated first, not timed) or a given
``--catalog`` / ``--events``. Each stage's seconds, items per second and peak memory go to
``index-bench.json`` (stamped like every benchmark: machine, library versions, commit) and a bar
chart ``index-bench.png``. GPU builds are not measured here (no device on these machines).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def measure(
    catalog: Path, events: Path | None, out: Path, text: bool, ray: str | None = None
) -> dict:
    """Build once and time it; ``ray``: on the Ray cluster at that address ("" : local)."""
    import polars as pl

    from crossrec.stamp import stamp
    from indexer.build import BuildConfig, build_index
    from indexer.manifest import IndexManifest
    from indexer.ray_build import RayOptions

    items = pl.scan_parquet(catalog).select(pl.len()).collect().item()
    options = None if ray is None else RayOptions(address=ray)
    started = time.perf_counter()
    report = build_index(catalog, out, events, BuildConfig(text=text, progress=False, ray=options))
    wall = time.perf_counter() - started
    stages = {
        name: {
            **figures,
            "items_per_s": round(items / figures["seconds"], 1) if figures["seconds"] else None,
        }
        for name, figures in report.stages.items()
        if name != "total"
    }
    return {
        "items": items,
        "events": str(events) if events else None,
        "text": text,
        "executor": "local" if ray is None else "ray",
        "ray_address": ray,
        "encode_timing": IndexManifest.from_json(report.manifest).encode_timing,
        "index_version": report.path.name,
        "seconds": round(wall, 2),
        "items_per_s": round(items / wall, 1),
        "stages": stages,
        "stamp": stamp(),
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["stages"])
    seconds = [result["stages"][n]["seconds"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.barh(names, seconds)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title(
        f"index build ({result.get('executor', 'local')}), {result['items']:,} items "
        f"({'text + ' if result['text'] else ''}attributes): {result['seconds']:.1f} s"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index", help="index build throughput per stage", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--items", type=int, default=5_000, help="synthetic shop size")
    p.add_argument("--catalog", type=Path, help="a catalogue instead of a synthetic shop")
    p.add_argument("--events", type=Path, help="its events")
    p.add_argument("--no-text", action="store_true", help="attributes only")
    p.add_argument("--out", type=Path, default=Path("bench-index"))
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="build on Ray (the cluster at ADDRESS, or a local Ray started for the build)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="crossrec-bench-") as tmp:
        catalog, events = args.catalog, args.events
        if catalog is None:
            from indexer.datagen.config import ShopConfig
            from indexer.datagen.shop import CATALOG_FILE, EVENTS_FILE, generate_shop, write_shop

            shop = write_shop(generate_shop(ShopConfig(items=args.items)), Path(tmp) / "shop")
            catalog, events = shop / CATALOG_FILE, shop / EVENTS_FILE
        result = measure(catalog, events, Path(tmp) / "index", not args.no_text, args.ray)
    (args.out / "index-bench.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "index-bench.png")
    rate = f"{result['items_per_s']:,} items/s"
    print(f"{result['items']:,} items built in {result['seconds']} s ({rate})")
    for name, s in result["stages"].items():
        rate = f"{s['items_per_s']:,.0f} items/s" if s["items_per_s"] else ""
        peak = f"peak {s['peak_rss_mb']:,.0f} MB" if "peak_rss_mb" in s else ""
        print(f"  {name:<18} {s['seconds']:>8.2f} s  {rate:>16}  {peak}")
    print(f"wrote {args.out / 'index-bench.json'} and {args.out / 'index-bench.png'}")
    return 0
