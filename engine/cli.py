"""``crossrec serve``: run the gRPC engine."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path

from engine.config import EngineConfig


class JsonFormatter(logging.Formatter):
    """One JSON object per log line (time, level, logger, message), for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def register_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the gRPC engine on an index version")
    p.add_argument("--artifact", help="index version folder or root (uses LATEST)")
    p.add_argument(
        "--model",
        help="ranker model version (or root) trained for that index by crossrec train "
        "(default: none, the retrieval-only order)",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="TOML configuration (CROSSREC_* environment variables override it)",
    )
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--store", help="SQLite event store file")
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (0 = off)")
    p.add_argument("--json-logs", action="store_true", help="structured (JSON) log lines")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from engine.server import serve_forever

    if args.json_logs:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
    try:
        config = EngineConfig.load(
            args.config,
            artifact=args.artifact,
            model=args.model,
            host=args.host,
            port=args.port,
            store=args.store,
            metrics_port=args.metrics_port,
        )
    except ValueError as exc:  # a bad setting or file: one line naming it, exit 2
        print(f"crossrec serve: {exc}", file=sys.stderr)
        return 2
    if not config.artifact:
        raise SystemExit(
            "crossrec serve: give --artifact (or artifact in the config / CROSSREC_ARTIFACT)"
        )
    asyncio.run(serve_forever(config))
    return 0
