"""Client commands of the ``crossrec`` CLI: recommend, ingest, status, delete-user, swap (over
gRPC). Every one takes the target, a bearer token and TLS settings."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from clients.sdk import ACTION, Connection, CrossrecClient, CrossrecError, Event
from crossrec.vocabulary import parse_timestamp

DEFAULT_TARGET = "127.0.0.1:50051"


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target", default=DEFAULT_TARGET, help="engine address host:port (default %(default)s)"
    )
    p.add_argument("--timeout", type=float, default=5.0, help="deadline per call, seconds")
    p.add_argument(
        "--token",
        default=os.environ.get("CROSSREC_TOKEN", ""),
        help="bearer token (default: $CROSSREC_TOKEN)",
    )
    p.add_argument("--tls-ca", default="", help="CA certificate (PEM) of the engine: use TLS")
    p.add_argument("--tls-cert", default="", help="client certificate (PEM), when required")
    p.add_argument("--tls-key", default="", help="client key (PEM), when required")
    p.add_argument("--server-name", default="", help="name on the engine's certificate")


def client_of(args: argparse.Namespace) -> CrossrecClient:
    """The client the common options describe."""
    return CrossrecClient(
        args.target,
        timeout=args.timeout,
        connection=Connection(
            args.token, args.tls_ca, args.tls_cert, args.tls_key, args.server_name
        ),
    )


def register_recommend(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="ask the engine for recommendations")
    _target(p)
    p.add_argument("--user", default="", help="user id")
    p.add_argument("-k", "--k", type=int, default=10)
    p.add_argument(
        "--cross-share", type=float, help="share of items from categories the user never touched"
    )
    p.add_argument(
        "--quota",
        action="append",
        default=[],
        metavar="CATEGORY=N",
        help="exactly N items from CATEGORY (repeatable)",
    )
    p.add_argument("--include", action="append", default=[], metavar="CATEGORY")
    p.add_argument("--exclude", action="append", default=[], metavar="CATEGORY")
    p.add_argument("--in-stock", action="store_true")
    p.add_argument("--explain", action="store_true")
    p.add_argument("--json", action="store_true", help="print the response as JSON")
    p.set_defaults(func=run_recommend)


def run_recommend(args: argparse.Namespace) -> int:
    quotas = {}
    for q in args.quota:
        category, _, count = q.rpartition("=")
        quotas[category] = int(count)
    with client_of(args) as client:
        try:
            rec = client.recommend(
                args.user,
                k=args.k,
                cross_category_share=args.cross_share,
                category_quotas=quotas,
                include_categories=args.include,
                exclude_categories=args.exclude,
                in_stock_only=args.in_stock,
                explain=args.explain,
            )
        except CrossrecError as exc:
            return _fail(exc)
    if args.json:
        print(json.dumps(asdict(rec), indent=2))
        return 0
    print(
        f"recommendation {rec.recommendation_id} "
        f"(arm {rec.arm}: index {rec.index_version}, model {rec.model_version})"
        f"{' [popular fallback]' if rec.fallback else ''}"
    )
    for i, item in enumerate(rec.items, 1):
        print(
            f"{i:3d}. {item.item_id:<12} {item.score:7.3f}  {item.category}   "
            f"<- {item.interest_label}"
        )
        if item.explanation:
            print(f"      {item.explanation['summary']}")
            for feature, value, contribution in item.explanation.get("contributions", []):
                print(f"        {feature} = {value:.3g}: {contribution:+.3f} log-odds")
    return 0


def register_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="send an event file (.parquet, .csv, .jsonl) to the engine")
    _target(p)
    p.add_argument("file", type=Path)
    p.add_argument("--batch", type=int, default=1000, help="events per IngestEvents call")
    p.set_defaults(func=run_ingest)


def read_event_rows(path: Path):
    """Rows of an event file as dicts (columns per the event contract), values as stored."""
    import polars as pl

    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        frame = pl.read_parquet(path)
    elif suffix == ".csv":
        frame = pl.read_csv(path, infer_schema=False)
    else:
        frame = pl.read_ndjson(path, infer_schema_length=None)
    if "action" in frame.columns:
        frame = frame.with_columns(pl.col("action").cast(pl.String))
    return frame.iter_rows(named=True)


def events_from_rows(rows) -> tuple[list[Event], list[str]]:
    """Events from file rows, and every row problem (``row N, column 'c': ...``; row 1 is the first
    record). Timestamps: datetimes, or ISO 8601 text (no offset means UTC)."""
    events, problems = [], []
    for n, r in enumerate(rows, 1):
        action, ts = r.get("action"), r.get("ts")
        if action not in ACTION:
            problems.append(
                f"row {n}, column 'action': expected one of {', '.join(ACTION)}, got {action!r}"
            )
        when = _timestamp(ts)
        if when is None:
            problems.append(f"row {n}, column 'ts': expected an ISO 8601 timestamp, got {ts!r}")
        if action in ACTION and when is not None:
            events.append(
                Event(
                    r.get("user_id") or "",
                    r.get("item_id") or "",
                    action,
                    when,
                    r.get("session_id") or "",
                    r.get("recommendation_id") or "",
                    r.get("event_id") or "",
                )
            )
    return events, problems


def _timestamp(value) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        return None
    return parse_timestamp(value)


def run_ingest(args: argparse.Namespace) -> int:
    """Check the whole file first (nothing is sent if a row is bad), then send it in batches."""
    import sys

    events, problems = events_from_rows(read_event_rows(args.file))
    if problems:
        print(f"error: {args.file}: {len(problems)} problem(s), nothing sent", file=sys.stderr)
        for line in problems[:20]:
            print(f"  {line}", file=sys.stderr)
        return 2
    accepted = duplicates = unknown = conflicts = expired = 0
    with client_of(args) as client:
        for first in range(0, len(events), args.batch):
            try:
                result = client.ingest(events[first : first + args.batch])
            except CrossrecError as exc:
                # Name file rows, not request positions.
                exc.field_violations = {
                    _file_field(f, first + 1): d for f, d in exc.field_violations.items()
                }
                _fail(exc)
                print(
                    f"{accepted:,} events were stored before the error; re-sending the file is "
                    "safe (events are recognised by their id, or by their content without one)",
                    file=sys.stderr,
                )
                return 2
            accepted += result.accepted
            duplicates += result.duplicates
            unknown += result.unknown_items
            conflicts += result.conflicts
            expired += result.expired
    print(
        f"stored {accepted:,} events ({duplicates:,} already present; {unknown:,} naming items "
        "the serving index does not know)"
    )
    if conflicts or expired:
        print(
            f"not stored: {conflicts:,} reusing a stored event id with other content (the first "
            f"is kept), {expired:,} older than the engine's event retention",
            file=sys.stderr,
        )
    return 0


def _file_field(field: str, first_row: int) -> str:
    if field.startswith("events[") and "]" in field:
        index = int(field[len("events[") : field.index("]")])
        return f"row {first_row + index}, column '{field[field.index(']') + 2 :]}'"
    return field


def register_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="what the engine serves and holds")
    _target(p)
    p.set_defaults(func=run_status)


def run_status(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        try:
            s = client.status()
        except CrossrecError as exc:
            return _fail(exc)
    print(json.dumps(asdict(s), indent=2))
    return 0


def register_delete_user(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("delete-user", help="remove a user's events and profile")
    _target(p)
    p.add_argument("user")
    p.set_defaults(func=run_delete_user)


def run_delete_user(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        try:
            n = client.delete_user(args.user)
        except CrossrecError as exc:
            return _fail(exc)
    print(f"deleted {n} events")
    return 0


def register_swap(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "swap",
        help="serve another index version (and model) without a restart (admin role)",
    )
    _target(p)
    p.add_argument(
        "--artifact", default="", help="index version or root (default: the arm's configured one)"
    )
    p.add_argument("--model", default="", help="ranker model (default: the arm's configured one)")
    p.add_argument("--retrieval-only", action="store_true", help="serve no model")
    p.add_argument("--arm", default="a", choices=("a", "b"))
    p.set_defaults(func=run_swap)


def run_swap(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        try:
            index, model, changed = client.swap_version(
                args.artifact, args.model, args.retrieval_only, args.arm
            )
        except CrossrecError as exc:
            return _fail(exc)
    print(f"arm {args.arm} serves index {index} with {model}{'' if changed else ' (unchanged)'}")
    return 0


def _fail(exc: CrossrecError) -> int:
    import sys

    print(f"error: {exc}", file=sys.stderr)
    for field, description in exc.field_violations.items():
        print(f"  {field}: {description}", file=sys.stderr)
    return 2
