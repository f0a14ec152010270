"""What every benchmark result is stamped with: the machine, the library versions, the commit and
the time (standard library only, so that every package may use it)."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

#: Libraries whose versions every stamp records.
LIBRARIES = ("crossrec", "numpy", "faiss-cpu", "grpcio", "lightgbm")


def stamp(extra: tuple[str, ...] = ()) -> dict:
    """Machine, Python, the versions of :data:`LIBRARIES` and ``extra`` ("not installed" when
    missing), the git commit of the working tree (or "unknown"), and the UTC time."""

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {n: installed(n) for n in dict.fromkeys(LIBRARIES + tuple(extra))},
        "commit": commit or "unknown",
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
