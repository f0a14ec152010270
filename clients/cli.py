"""The ``crossrec`` command line.

Sub-commands come from the packages that own them, registered under the ``crossrec.commands``
entry-point group in pyproject.toml (``datagen`` from ``indexer``, ``serve`` from ``engine``, ...).
Each entry point is a ``register(subparsers)`` function that adds its parser and sets ``func`` to a
callable taking the parsed namespace and returning an exit code. This keeps ``clients`` free of
imports of the batch packages, and loads a command's heavy dependencies only when it runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

log = logging.getLogger("crossrec")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossrec", description="Cross-category recommendation engine."
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for ep in sorted(entry_points(group="crossrec.commands"), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the CLI shows library errors as one clear message, not a traceback
        if args.verbose >= 2 or not _is_expected(exc):
            raise
        print(f"crossrec {args.command}: {exc}", file=sys.stderr)
        return 2


def _is_expected(exc: Exception) -> bool:
    # Each package's base exception marks errors that are about the input, not bugs.
    return any(
        cls.__name__.endswith("Error") and cls.__module__.endswith(".errors")
        for cls in type(exc).__mro__
    )


if __name__ == "__main__":
    sys.exit(main())
