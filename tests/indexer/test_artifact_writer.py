"""The version writer stages and commits atomically; abandoned builds are cleared; version names."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import UTC

import pytest
from helpers_artifact import check, manifest_of

from indexer.artifact import (
    FORMAT,
    FORMAT_VERSION,
    ArtifactError,
    VersionWriter,
    new_version_name,
    remove_abandoned_builds,
    sha256_of,
)


def test_writer_commits_atomically_and_points_latest_at_the_new_version(root):
    writer = VersionWriter(root, "v2")
    assert writer.dir == root / f".building-v2-{os.getpid()}"
    assert (writer.dir / "shards").is_dir()
    assert writer.path("x.bin") == writer.dir / "x.bin"
    writer.path("x.bin").write_bytes(b"abc")
    entry = writer.entry("x.bin", rows=3)
    assert entry == {
        "file": "x.bin",
        "bytes": 3,
        "sha256": hashlib.sha256(b"abc").hexdigest(),
        "rows": 3,
    }
    final = writer.commit({"items": 0, "files": {}})
    assert final == root / "v2"
    assert not writer.dir.exists()
    assert manifest_of(final) == {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": "v2",
        "items": 0,
        "files": {},
    }
    assert writer.manifest["version"] == "v2"
    assert (root / "LATEST").read_text() == "v2\n"
    assert not (root / ".LATEST.tmp").exists()
    assert (final / "x.bin").read_bytes() == b"abc"


def test_writer_refuses_bad_or_existing_names_and_abort_leaves_nothing(root):
    for name in ("a/b", ".hidden"):
        with pytest.raises(ArtifactError) as info:
            VersionWriter(root, name)
        assert info.value.reason == "manifest"
    with pytest.raises(ArtifactError) as info:
        VersionWriter(root, "v1")
    assert info.value.reason == "exists"
    writer = VersionWriter(root / "new-root")
    assert re.fullmatch(r"v\d{8}T\d{12}Z", writer.version)
    writer.abort()
    assert list((root / "new-root").iterdir()) == []


def test_abandoned_builds_of_dead_processes_are_removed(root):
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = root / f".building-v3-{done.stdout.strip()}"
    alive = root / f".building-v4-{os.getpid()}"
    odd = root / ".building-v5-abc"
    for folder in (dead, alive, odd):
        folder.mkdir()
    assert remove_abandoned_builds(root) == [dead]
    assert not dead.exists()
    assert alive.exists()
    assert odd.exists()


def test_sha256_of_reads_in_chunks(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(b"0123456789" * 7)
    expected = hashlib.sha256(b"0123456789" * 7).hexdigest()
    assert sha256_of(path) == expected
    assert sha256_of(path, chunk=4) == expected
    assert re.fullmatch(r"v\d{8}T\d{12}Z", new_version_name())


def test_writer_details(root, tmp_path):
    writer = VersionWriter(tmp_path / "a" / "b", "v1")  # creates missing parents
    assert writer.manifest == {}
    final = writer.commit({"files": {}})
    assert (final / "manifest.json").read_text() == json.dumps(
        {"format": FORMAT, "format_version": FORMAT_VERSION, "version": "v1", "files": {}}, indent=2
    )
    writer.abort()  # nothing left to remove: no error
    with pytest.raises(ArtifactError) as slash:
        VersionWriter(root, "a/b")
    check(
        slash.value,
        "manifest",
        "a/b",
        "version names may not contain '/' or start with '.'",
    )
    with pytest.raises(ArtifactError) as exists:
        VersionWriter(root, "v1")
    check(
        exists.value,
        "exists",
        root / "v1",
        "version already exists (versions are immutable)",
    )


def test_checking_for_abandoned_builds_leaves_live_processes_alone(root):
    # SIGHUP back to its default (a nohup'd run would pass on "ignore"): any signal would end it.
    code = (
        "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_DFL); "
        "print('ready', flush=True); time.sleep(30)"
    )
    live = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline() == "ready\n"
        folder = root / f".building-v6-{live.pid}"
        folder.mkdir()
        assert remove_abandoned_builds(root) == []
        assert folder.exists()
        with pytest.raises(subprocess.TimeoutExpired):  # asking whether it lives sent it no signal
            live.wait(timeout=0.5)
    finally:
        live.kill()
        live.wait()


def test_version_names_are_utc_whatever_the_local_zone(monkeypatch):
    import time
    from datetime import datetime

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        name = new_version_name()
        stamp = datetime.strptime(name, "v%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
        assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    finally:
        monkeypatch.undo()
        time.tzset()


def _two_builds(**second_changes) -> tuple[dict, dict]:
    """A hand-made manifest and a rebuild of it that took other times, with ``second_changes``
    applied to the rebuild's neighbour report."""

    def manifest(seconds: float, created: str, rss: float, rate: float, neighbours: dict) -> dict:
        return {
            "created_at": created,
            "items": 12,
            "neighbours": {
                "links": 40,
                "items_with_neighbours": 9,
                "seconds": seconds,
                **neighbours,
            },
            "shards": [{"id": "s0", "count": 12, "build_seconds": seconds / 3}],
            "build": {
                "stages": {"read": {"seconds": seconds / 2, "peak_rss_mb": rss}},
                "seconds_before_write": seconds,
            },
            "encode_timing": {
                "text": {"seconds": seconds, "items_per_s": rate, "executor": "local"}
            },
        }

    first = manifest(1.23, "2026-12-04T10:00:00+00:00", 100.0, 9.75, {})
    second = manifest(7.89, "2026-12-04T11:30:00+00:00", 512.5, 1.5, second_changes)
    return first, second


def test_two_builds_that_differ_only_in_timings_compare_equal_without_them():
    from crossrec.versions import without_timings

    first, second = _two_builds()
    assert first != second
    assert without_timings(first) == without_timings(second)
    assert without_timings(first) == {
        "items": 12,
        "neighbours": {"links": 40, "items_with_neighbours": 9},
        "shards": [{"id": "s0", "count": 12}],
        "build": {"stages": {"read": {}}},
        "encode_timing": {"text": {"executor": "local"}},
    }


def test_two_builds_that_differ_in_a_count_do_not_compare_equal_without_timings():
    from crossrec.versions import without_timings

    first, second = _two_builds(links=41)
    assert without_timings(first) != without_timings(second)
