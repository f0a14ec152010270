"""Helpers that read and tamper with the manifest and files of an index version."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from indexer.artifact import (
    ArtifactError,
    open_index,
)


def manifest_of(version: Path) -> dict:
    return json.loads((version / "manifest.json").read_text())


def save_manifest(version: Path, manifest: dict) -> None:
    (version / "manifest.json").write_text(json.dumps(manifest))


def rewrite(version: Path, key: str, write) -> None:
    """Replace the file of ``manifest["files"][key]`` through ``write(path)`` and record its new
    size and sha256, so only the content checks can refuse it."""
    manifest = manifest_of(version)
    entry = manifest["files"][key]
    path = version / entry["file"]
    write(path)
    entry["bytes"] = path.stat().st_size
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    save_manifest(version, manifest)


def refused(path, **kwargs) -> ArtifactError:
    with pytest.raises(ArtifactError) as info:
        open_index(path, **kwargs)
    return info.value


def check(error: ArtifactError, reason: str, path: Path, message: str) -> None:
    assert (error.reason, error.path, str(error)) == (reason, str(path), f"{path}: {message}")
