"""The pairs SwapVersion pinned, kept across restarts.

A SwapVersion that names an index version or a model (a rollback, a hand-picked pair) pins the
arm to exactly the pair it loaded: the version watcher leaves a pinned arm alone, and a restart
serves the pinned pair instead of what the configured roots name - a rollback is not undone
behind the operator's back. A SwapVersion that names neither returns the arm to its configured
roots and drops the pin.

The file is JSON next to the event store (``<store>.pins.json``), written atomically (a temporary
file, fsync, rename), so a crash leaves the old pins or the new ones, never half of either::

    {"format": "crossrec-pins", "arms": {"a": {"index": "/idx/v2", "model": "/models/m7"}}}

``model`` is the model version folder, or "" for retrieval only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

FORMAT = "crossrec-pins"


class PinsError(ValueError):
    """The pins file cannot be read (hand-edited or damaged); the message names it."""


@dataclass(frozen=True)
class Pin:
    #: The index version folder the arm serves.
    index: str
    #: The model version folder, or "" for retrieval only.
    model: str


class Pins:
    """Arm -> its pinned pair, backed by ``path`` (None: kept in memory only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._pins: dict[str, Pin] = {}
        self._seen: tuple[int, int, int] | None = None
        self.reload()

    def reload(self) -> bool:
        """Read the file again if it changed since last read (another process of the engine
        swapped); True when it did."""
        if self.path is None:
            return False
        try:
            stat = self.path.stat()
            # Each write renames a new file into place: a new inode, even within one clock tick.
            seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            seen = None
        if seen == self._seen:
            return False
        self._pins = _read(self.path) if seen is not None else {}
        self._seen = seen
        return True

    def get(self, arm: str) -> Pin | None:
        return self._pins.get(arm)

    def set(self, arm: str, pin: Pin | None, announce: bool = False) -> None:
        """Pin ``arm`` to ``pin`` (None: unpin), on disk before this returns. ``announce``: write
        the file even when the pins are unchanged, so that the other processes of the engine
        look again (a swap to the configured roots, whose ``LATEST`` may have moved)."""
        self.reload()  # start from what the other processes wrote, not a copy up to 1 s old
        pins = dict(self._pins)
        if pin is None:
            pins.pop(arm, None)
        else:
            pins[arm] = pin
        if (announce or pins != self._pins) and self.path is not None:
            _write(self.path, pins)
            stat = self.path.stat()
            self._seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        self._pins = pins


def _read(path: Path) -> dict[str, Pin]:
    fix = f"; remove {path} to serve the configured versions"
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise PinsError(f"{path} is not a crossrec pins file{fix}")
        return {
            str(arm): Pin(str(pin["index"]), str(pin["model"])) for arm, pin in data["arms"].items()
        }
    except PinsError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PinsError(f"{path} cannot be read ({type(exc).__name__}: {exc}){fix}") from exc


def _write(path: Path, pins: dict[str, Pin]) -> None:
    data = {
        "format": FORMAT,
        "arms": {arm: {"index": p.index, "model": p.model} for arm, p in sorted(pins.items())},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per writing process
    with open(temporary, "w") as out:
        json.dump(data, out, indent=2)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
