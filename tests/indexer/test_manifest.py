"""The index manifest as typed values (indexer/manifest.py): what the build writes reads back to
the same document, refusals name the problem, and the typed fields say what the JSON says."""

from __future__ import annotations

import json

import pytest

from indexer.errors import ArtifactError
from indexer.manifest import EventsWindow, FileEntry, IndexManifest, ShardEntry, Sources


def _on_disk(root) -> dict:
    version = (root / "LATEST").read_text().strip()
    return json.loads((root / version / "manifest.json").read_text())


def test_a_built_manifest_reads_back_to_the_same_document(built_index, tiny_built):
    for root in (built_index.path.parent, tiny_built):
        data = _on_disk(root)
        manifest = IndexManifest.from_json(data)
        assert manifest.to_json() == data
        assert manifest.version == data["version"]
        assert manifest.items == sum(s.count for s in manifest.shards)
        assert set(manifest.files) >= {"items", "vectors", "transitions", "categories"}
        assert manifest.files["vectors"].extra == {"shape": [manifest.items, manifest.dim],
                                                  "dtype": "float32"}  # fmt: skip
        for category, ids in manifest.category_shards.items():
            assert {s.category for s in manifest.shards if s.id in ids} == {category}


def test_the_events_window_and_the_stage_reports_are_typed(built_index):
    from indexer.artifact import open_index

    version = open_index(built_index.path, verify=False)
    manifest = version.info
    window = manifest.sources.events_window
    assert isinstance(window, EventsWindow)
    assert window.events > 0
    assert window.first <= window.last
    assert manifest.report("adaptation")["dim"] == 64
    assert manifest.report("nothing") is None
    assert manifest is version.info  # computed once per version


def test_hand_written_entries_by_hand():
    entry = FileEntry.from_json({"file": "a.npz", "bytes": 10, "sha256": "ab", "rows": 3})
    assert (entry.file, entry.bytes, entry.sha256, entry.extra) == ("a.npz", 10, "ab", {"rows": 3})
    shard = {
        "file": "shards/s0001.faiss",
        "bytes": 99,
        "sha256": "cd",
        "id": "s0001",
        "category": "Outdoors > Tents",
        "part": 0,
        "count": 7,
        "factory": "HNSW32,Flat",
        "search_params": {"efSearch": 64},
        "recall_at_10": 0.97,
        "build_seconds": 0.5,
    }
    parsed = ShardEntry.from_json(shard)
    assert parsed.kind == "HNSW"
    assert parsed.note == ""
    assert parsed.to_json() == shard  # no "note" key when there is none
    noted = ShardEntry.from_json({**shard, "factory": "IDMap,Flat", "note": "missed recall"})
    assert noted.kind == "IDMap"
    assert noted.to_json()["note"] == "missed recall"
    window = EventsWindow(3, "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00")
    assert window.last_us == 1_767_312_000 * 1_000_000
    sources = Sources("c.parquet", "e.parquet", window)
    assert Sources.from_json(sources.to_json()) == sources
    assert Sources.from_json(None) is None


@pytest.mark.parametrize(
    ("change", "reason", "message"),
    [
        ({"format": "crossrec-model"}, "format", "not an index manifest: 'crossrec-model'"),
        ({"format_version": 2}, "format", "index format version 2 is not supported"),
        ({"items": "many"}, "manifest", "malformed index manifest"),
        ({"version": None, "items": None}, "manifest", "malformed index manifest"),
    ],
)
def test_another_format_or_a_malformed_document_is_refused(change, reason, message):
    data = {"format": "crossrec-index", "format_version": 1, "version": "v", "items": 1, "dim": 2}
    data.update(change)
    if change.get("version", 0) is None:
        del data["version"]
    with pytest.raises(ArtifactError, match=message) as caught:
        IndexManifest.from_json(data)
    assert caught.value.reason == reason
