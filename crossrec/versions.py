"""Immutable version folders: the on-disk protocol shared by index versions and ranker models.
Dependency-free (standard library only).

A *root* folder holds versions side by side plus ``LATEST``, a one-line pointer to the newest::

    root/
        LATEST                  "v20250101T120000000000Z\\n"
        v20250101T120000000000Z/
            manifest.json       format, format_version, version, files + sha256, ...
            ...
        .building-v2-4711/      a build in progress (or abandoned by a killed process 4711)

The protocol, and why each step:

===================================  ==========================================================
step                                 why
===================================  ==========================================================
stage in ``.building-<v>-<pid>``     readers never see a half-written version; the pid lets
                                     :func:`remove_abandoned_builds` tell killed builds from
                                     live ones
write ``manifest.json`` last         a folder without a manifest is incomplete by definition
fsync, then rename into place        a rename within one file system is atomic
swap ``LATEST`` by ``os.replace``    the pointer names the old or the new version, never half
                                     of either
record size and sha256 of each file  a reader refuses truncated or altered files
===================================  ==========================================================

A :class:`VersionFormat` names what one kind of version is (format name and versions, the noun used
in messages, the subfolders a build starts with) and which exception its errors become, so each
package keeps its own exception type with a machine-readable ``reason`` (``missing``,
``incomplete``, ``format``, ``manifest``, ``checksum``, ``exists``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

MANIFEST = "manifest.json"
LATEST = "LATEST"
BUILDING_PREFIX = ".building-"


class VersionError(Exception):
    """A version folder problem. ``path`` names the folder or file; ``reason`` is a short tag."""

    def __init__(self, message: str, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True)
class VersionFormat:
    """One kind of version folder.

    ``name``/``version``: what the manifest's ``format``/``format_version`` say; ``supported``: the
    format versions a reader accepts; ``noun``: how messages name it (``"index"``); ``subfolders``:
    created empty in every build; ``error``: ``error(message, path, reason)`` builds the exception
    raised for every problem.
    """

    name: str
    version: int
    supported: tuple[int, ...]
    noun: str
    subfolders: tuple[str, ...] = ()
    error: Callable[[str, str | Path, str], Exception] = VersionError

    @property
    def article(self) -> str:
        return "an" if self.noun[:1].lower() in "aeiou" else "a"


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(root: Path, path: Path, **extra) -> dict:
    """What the manifest records of one file: relative name, size and sha256."""
    return {
        "file": str(path.relative_to(root)),
        "bytes": path.stat().st_size,
        "sha256": sha256_of(path),
        **extra,
    }


#: Manifest keys that record when a build ran or what it cost (time, memory, throughput), never
#: what it built; :func:`without_timings` drops them at any depth.
TIMING_KEYS = frozenset({"created_at", "seconds", "peak_rss_mb"})
TIMING_SUFFIXES = ("_seconds", "_per_s", "_at")
TIMING_PREFIXES = ("seconds_",)


def is_timing_key(key: str) -> bool:
    """True for a key that records when or how long (``seconds``, ``build_seconds``,
    ``seconds_before_write``, ``items_per_s``, ``created_at``, ``peak_rss_mb``)."""
    return key in TIMING_KEYS or key.endswith(TIMING_SUFFIXES) or key.startswith(TIMING_PREFIXES)


def without_timings(value: object) -> object:
    """``value`` (a manifest or any part of it) with every timing key (:func:`is_timing_key`)
    removed from every dict at any depth, lists walked element by element: what was built, so
    that two builds of the same inputs compare equal however long each took."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not is_timing_key(str(k))}
    if isinstance(value, list | tuple):
        return [without_timings(v) for v in value]
    return value


def new_version_name() -> str:
    """``v`` + the UTC time to the microsecond: names sort by build time."""
    return "v" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


class VersionWriter:
    """Stages one version; :meth:`commit` makes it appear atomically, :meth:`abort` removes it."""

    def __init__(self, fmt: VersionFormat, root: str | Path, version: str | None = None) -> None:
        self.format = fmt
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.version = version or new_version_name()
        if "/" in self.version or self.version.startswith("."):
            raise fmt.error(
                "version names may not contain '/' or start with '.'", self.version, "manifest"
            )
        if (self.root / self.version).exists():
            raise fmt.error(
                "version already exists (versions are immutable)",
                self.root / self.version,
                "exists",
            )
        self.dir = self.root / f"{BUILDING_PREFIX}{self.version}-{os.getpid()}"
        self.manifest: dict = {}
        self.dir.mkdir(parents=True)
        for sub in fmt.subfolders:
            (self.dir / sub).mkdir(parents=True)

    def path(self, name: str) -> Path:
        return self.dir / name

    def entry(self, name: str, **extra) -> dict:
        return file_entry(self.dir, self.dir / name, **extra)

    def commit(self, manifest: dict) -> Path:
        """Write the manifest last, fsync, rename into place, then point ``LATEST`` at it."""
        self.manifest = {
            "format": self.format.name,
            "format_version": self.format.version,
            "version": self.version,
            **manifest,
        }
        _write_durably(self.dir / MANIFEST, json.dumps(self.manifest, indent=2).encode())
        for path in self.dir.rglob("*"):
            if path.is_file():
                _fsync(path)
        final = self.root / self.version
        os.rename(self.dir, final)
        _write_durably(self.root / f".{LATEST}.tmp", (self.version + "\n").encode())
        os.replace(self.root / f".{LATEST}.tmp", self.root / LATEST)
        _fsync(self.root)
        return final

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def remove_abandoned_builds(root: str | Path) -> list[Path]:
    """Delete ``.building-*`` folders whose build process is gone (killed builds)."""
    removed = []
    for path in Path(root).glob(f"{BUILDING_PREFIX}*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def resolve_version(path: str | Path, fmt: VersionFormat) -> Path:
    """A version folder, or a root whose ``LATEST`` names one."""
    path = Path(path)
    if not path.exists():
        raise fmt.error(f"no such {fmt.noun} folder", path, "missing")
    if (path / LATEST).is_file() and not (path / MANIFEST).exists():
        name = (path / LATEST).read_text().strip()
        path = path / name
        if not path.is_dir():
            raise fmt.error(f"LATEST names {name!r}, which does not exist", path, "missing")
    if path.name.startswith(BUILDING_PREFIX):
        raise fmt.error(
            f"an unfinished build, not {fmt.article} {fmt.noun} version", path, "incomplete"
        )
    return path


def read_manifest(path: str | Path, fmt: VersionFormat) -> tuple[Path, dict]:
    """The resolved version folder and its manifest, after checking the format and its version."""
    path = resolve_version(path, fmt)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise fmt.error(f"no manifest.json: not a complete {fmt.noun} version", path, "incomplete")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise fmt.error(
            f"manifest.json is not valid JSON: {exc}", manifest_path, "manifest"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != fmt.name:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise fmt.error(f"not a crossrec {fmt.noun} (format {found!r})", manifest_path, "format")
    if manifest.get("format_version") not in fmt.supported:
        raise fmt.error(
            f"format version {manifest.get('format_version')!r} is not supported "
            f"(this crossrec reads {list(fmt.supported)})",
            manifest_path,
            "format",
        )
    return path, manifest


def check_file(root: Path, entry: dict, verify: bool, fmt: VersionFormat) -> Path:
    """Check one manifest file entry against the disk: present, of its recorded size and (when
    ``verify``) of its recorded sha256. Returns the file's path. An entry naming a file outside
    the version folder (``../``, an absolute path, a link out) is refused before that file is
    looked at, so the error reveals nothing about it."""
    name = entry.get("file")
    if not isinstance(name, str) or not name:
        raise fmt.error("a file entry has no file name", root / MANIFEST, "manifest")
    path = root / name
    if not path.resolve().is_relative_to(root.resolve()):
        raise fmt.error(
            "a file entry points outside the version folder", root / MANIFEST, "manifest"
        )
    if not path.is_file():
        raise fmt.error("file listed in the manifest is missing", path, "missing")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise fmt.error(
            f"size {size} bytes, manifest says {entry['bytes']} (truncated or replaced)",
            path,
            "checksum",
        )
    if verify and sha256_of(path) != entry["sha256"]:
        raise fmt.error(
            "sha256 does not match the manifest (file altered or corrupted)", path, "checksum"
        )
    return path


def _write_durably(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync(path: Path) -> None:
    """fsync a file or a folder (a folder's entry list must reach disk for a rename to persist)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
