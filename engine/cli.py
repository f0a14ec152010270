"""``crossrec serve``: run the gRPC engine; ``crossrec config show``: print what it would run
with."""

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
    _config_arguments(p)
    p.add_argument("--json-logs", action="store_true", help="structured (JSON) log lines")
    p.set_defaults(func=run_serve)


def _config_arguments(p: argparse.ArgumentParser) -> None:
    """The configuration file and the flags that override it (serve and config show alike)."""
    p.add_argument("--artifact", help="index version folder or root (uses LATEST)")
    p.add_argument(
        "--model",
        help="ranker model version (or root) trained for that index by crossrec train "
        "(default: none, the retrieval-only order)",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="TOML configuration, one table per section (CROSSREC_<SECTION>__<FIELD> "
        "environment variables override it; docs/configuration.md)",
    )
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--store", help="SQLite event store file")
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (0 = off)")
    p.add_argument(
        "--processes", type=int, help="engine processes on the one port ([server] processes)"
    )


def run_serve(args: argparse.Namespace) -> int:
    from engine.api.server import serve_forever

    if args.json_logs:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
    config = _load("serve", args)
    if config is None:
        return 2
    if not config.arms.artifact:
        raise SystemExit(
            "crossrec serve: give --artifact (or [arms] artifact in the config / "
            "CROSSREC_ARMS__ARTIFACT)"
        )
    if config.server.processes > 1:
        from engine.api.processes import serve_processes

        return serve_processes(config)
    asyncio.run(serve_forever(config))
    return 0


def _load(command: str, args: argparse.Namespace) -> EngineConfig | None:
    """The configuration from ``--config``, the environment and the command's flags; None (and
    one line naming the bad setting on stderr) when it cannot be built."""
    flags = {
        "arms": {"artifact": args.artifact, "model": args.model},
        "server": {
            "host": args.host,
            "port": args.port,
            "metrics_port": args.metrics_port,
            "processes": args.processes,
        },
        "store": {"path": args.store},
    }
    try:
        return EngineConfig.load(args.config, flags)
    except (ValueError, OSError) as exc:  # a bad setting or file: one line naming it, exit 2
        print(f"crossrec {command}: {exc}", file=sys.stderr)
        return None


def register_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the effective engine configuration (secrets redacted)")
    p.add_argument("action", choices=["show"], help="show: print it as TOML")
    _config_arguments(p)
    p.set_defaults(func=run_config)


def run_config(args: argparse.Namespace) -> int:
    from engine.config.file import show

    config = _load("config", args)
    if config is None:
        return 2
    print(show(config), end="")
    return 0
