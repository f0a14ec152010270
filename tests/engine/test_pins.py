"""A SwapVersion that names a version pins the arm to it: the version watcher leaves it, a
restart serves it (a rollback stays rolled back), and a SwapVersion naming nothing unpins."""

from __future__ import annotations

import json

import pytest
from test_operations import build_v2, root_engine

from engine.pins import Pin, Pins, PinsError


def test_pins_are_kept_in_a_file_and_read_back(tmp_path):
    path = tmp_path / "s.pins.json"
    pins = Pins(path)
    assert pins.get("a") is None
    assert not path.exists()  # nothing pinned, nothing written
    pins.set("a", Pin("/idx/v1", ""))
    pins.set("b", Pin("/idx/v2", "/models/m1"))
    again = Pins(path)
    assert (again.get("a"), again.get("b")) == (Pin("/idx/v1", ""), Pin("/idx/v2", "/models/m1"))
    assert json.loads(path.read_text())["format"] == "crossrec-pins"
    again.set("a", None)
    assert Pins(path).get("a") is None
    assert Pins(path).get("b") == Pin("/idx/v2", "/models/m1")
    assert [p.name for p in tmp_path.iterdir()] == ["s.pins.json"]  # no temporary file left


@pytest.mark.parametrize(
    "text", ["", "{", '{"format": "other", "arms": {}}', '{"format": "crossrec-pins"}']
)
def test_a_damaged_pins_file_is_refused_naming_it_and_the_way_out(tmp_path, text):
    path = tmp_path / "s.pins.json"
    path.write_text(text)
    with pytest.raises(PinsError, match=rf"{path}.*remove {path} to serve the configured versions"):
        Pins(path)


def test_a_rollback_survives_the_watcher_and_a_restart(root, tiny_built, tmp_path):
    engine = root_engine(tmp_path, root)
    build_v2(root, tiny_built)
    assert engine.versions.refresh() == ["a"]  # unpinned: follows LATEST
    assert engine.served.version.version == "v2"
    engine.versions.swap(artifact=str(root / "v1"))  # the rollback
    assert engine.versions.refresh() == []  # pinned: the watcher leaves it
    assert engine.served.version.version == "v1"
    engine.close()

    restarted = root_engine(tmp_path, root)  # same store folder, same configured root
    assert restarted.served.version.version == "v1"
    assert restarted.versions.refresh() == []
    restarted.versions.swap()  # naming nothing: back to the configured root, unpinned
    assert restarted.served.version.version == "v2"
    restarted.close()
    assert root_engine(tmp_path, root).served.version.version == "v2"


def test_a_pinned_version_that_is_gone_falls_back_to_the_configured_one(
    root, tiny_built, tmp_path, caplog
):
    import shutil

    engine = root_engine(tmp_path, root)
    build_v2(root, tiny_built)
    engine.versions.swap(artifact=str(root / "v1"))
    engine.close()
    shutil.rmtree(root / "v1")
    restarted = root_engine(tmp_path, root)
    assert restarted.served.version.version == "v2"
    assert "the pinned pair" in caplog.text
    assert "cannot be served" in caplog.text
    assert restarted.versions.pins.get("a") is None
    restarted.close()


def test_a_pin_that_cannot_be_written_undoes_the_swap(root, tiny_built, tmp_path, monkeypatch):
    from engine.errors import SwapRefused

    engine = root_engine(tmp_path, root)
    build_v2(root, tiny_built)

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("engine.pins._write", full)
    with pytest.raises(SwapRefused, match=r"keeps index v1.*could not be kept for restarts"):
        engine.versions.swap(artifact=str(root / "v2"))
    assert engine.served.version.version == "v1"
    engine.close()


def test_naming_only_the_model_pins_too(root, tiny_built, tmp_path):
    engine = root_engine(tmp_path, root)
    engine.versions.swap(model="")  # the configured index, explicitly without a ranker
    assert engine.versions.pins.get("a") == Pin(str((root / "v1").resolve()), "")
    build_v2(root, tiny_built)
    assert engine.versions.refresh() == []
    assert engine.served.version.version == "v1"
    engine.close()


def test_reload_sees_another_processes_writes_and_not_its_own(tmp_path, monkeypatch):
    path = tmp_path / "s.pins.json"
    mine, other = Pins(path), Pins(path)
    assert not mine.reload()  # no file, nothing changed
    mine.set("a", Pin("/idx/v1", ""))
    assert not mine.reload()  # its own write is not news
    assert other.reload()  # another process's is
    assert other.get("a") == Pin("/idx/v1", "")
    assert not other.reload()  # and only once
    writes = []
    monkeypatch.setattr("engine.pins._write", lambda *args: writes.append(args))
    mine.set("a", Pin("/idx/v1", ""))  # the same pin again: nothing to write
    assert writes == []
    monkeypatch.undo()
    path.unlink()  # the file removed by hand: every pin gone
    assert other.reload()
    assert other.get("a") is None
