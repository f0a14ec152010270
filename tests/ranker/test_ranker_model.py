"""Model versions on disk: the round trip, what the loaded model offers, and a refusal with the
right ``reason`` for every kind of broken version. On the session's trained model (``m1``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers_ranker import FEATURES, held_out, trained

from crossrec.versions import sha256_of
from ranker import OBJECTIVES, RankerError
from ranker.calibration import Calibration
from ranker.metrics import evaluate
from ranker.model import RankerModel, write_model
from ranker.rows import schema_hash


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return trained(tmp_path_factory)


@pytest.fixture
def root(fitted, tmp_path) -> Path:
    """A private copy of the model root (``m1`` and ``LATEST``), free to tamper with."""
    return Path(shutil.copytree(fitted[1].path.parent, tmp_path / "models"))


def manifest_of(version: Path) -> dict:
    return json.loads((version / "manifest.json").read_text())


def save_manifest(version: Path, manifest: dict) -> None:
    (version / "manifest.json").write_text(json.dumps(manifest))


def refused(path: Path, reason: str, **kwargs) -> RankerError:
    with pytest.raises(RankerError) as info:
        RankerModel.load(path, **kwargs)
    assert info.value.reason == reason, str(info.value)
    return info.value


def test_a_loaded_model_predicts_exactly_as_the_trained_one(fitted):
    rows, report = fitted
    loaded = RankerModel.load(report.path.parent)  # through LATEST
    x = rows.matrix()
    in_memory, from_disk = report.model.predict(x), loaded.predict(x)
    for objective in OBJECTIVES:
        assert from_disk[objective].dtype == np.float64
        assert from_disk[objective].shape == (len(x),)
        assert np.array_equal(from_disk[objective], in_memory[objective])
    x_test, test = held_out(rows, report)
    recomputed = evaluate(test, loaded.predict(x_test))
    assert all(recomputed[o] == report.metrics[o] for o in OBJECTIVES)


def test_the_loaded_model_describes_itself(fitted):
    _, report = fitted
    model = RankerModel.load(report.path, num_threads=2)
    assert model.version == "m1"
    assert model.path == report.path
    assert model.num_threads == 2
    assert model.features == FEATURES
    assert model.objectives == OBJECTIVES
    assert model.schema_hash == schema_hash(FEATURES)
    assert model.trained_on["index_version"] == "v-index-1"
    assert model.manifest["format"] == "crossrec-ranker"
    assert model.manifest["format_version"] == 1
    heads = model.manifest["heads"]
    assert [heads[o]["file"] for o in OBJECTIVES] == [f"head-{o}.txt" for o in OBJECTIVES]
    assert heads["cart"]["sha256"] == sha256_of(report.path / "head-cart.txt")
    assert heads["cart"]["bytes"] == (report.path / "head-cart.txt").stat().st_size


def test_predict_checks_the_width_and_takes_any_float_matrix(fitted):
    rows, report = fitted
    model = report.model
    x = rows.matrix()[:50]
    as_float64 = model.predict(x.astype(np.float64))
    assert all(np.array_equal(as_float64[o], model.predict(x)[o]) for o in OBJECTIVES)
    empty = model.predict(np.zeros((0, len(FEATURES)), np.float32))
    assert all(empty[o].shape == (0,) for o in OBJECTIVES)
    for bad in (x[:, :3], x[0], np.zeros((2, 5), np.float32)):
        with pytest.raises(RankerError) as info:
            model.predict(bad)
        assert info.value.reason == "schema"
        assert "relevance" in str(info.value)


def test_missing_values_are_scored(fitted):
    _, report = fitted
    x = np.array([[np.nan, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]], np.float32)
    p = report.model.predict(x)
    assert np.all(np.isfinite(p["click"]))
    assert p["click"][1] > p["click"][0]


def test_calibration_keeps_the_order_of_the_raw_scores(fitted):
    rows, report = fitted
    x = rows.matrix()
    raw, calibrated = report.model.uncalibrated(x), report.model.predict(x)
    order = np.argsort(raw["click"], kind="stable")
    steps = np.diff(raw["click"][order]) > 0
    assert np.all(np.diff(calibrated["click"][order])[steps] > 0)


def test_the_funnel_holds_even_when_calibrations_cross(fitted):
    rows, report = fitted
    # Deliberately crossing maps: click pushed down to .01-.02, cart pushed up to .5-.9.
    low = Calibration(np.array([0.0, 1.0]), np.array([0.01, 0.02]))
    high = Calibration(np.array([0.0, 1.0]), np.array([0.5, 0.9]))
    model = RankerModel(
        report.model.manifest,
        report.model.boosters,
        {"click": low, "cart": high, "purchase": high},
    )
    p = model.predict(rows.matrix()[:200])
    assert np.array_equal(p["cart"], p["click"])
    assert np.array_equal(p["purchase"], p["cart"])
    assert np.all(p["click"] <= 0.021)


def test_contributions_are_additive_log_odds_along_the_funnel(fitted):
    rows, report = fitted
    model = report.model
    x = rows.matrix()[:40]
    raw = model.uncalibrated(x)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    click = model.contributions(x, "click")
    assert click.shape == (40, len(FEATURES) + 1)
    assert click.sum(axis=1) == pytest.approx(logit(raw["click"]), abs=1e-6)
    cart_given_click = raw["cart"] / raw["click"]
    purchase_given_cart = raw["purchase"] / raw["cart"]
    expected = logit(raw["click"]) + logit(cart_given_click) + logit(purchase_given_cart)
    assert model.contributions(x, "purchase").sum(axis=1) == pytest.approx(expected, abs=1e-6)
    # The purchase chain leans on buy_signal more than the click head does.
    column = FEATURES.index("buy_signal")
    purchase = model.contributions(x, "purchase")
    assert np.abs(purchase[:, column]).mean() > 3 * np.abs(click[:, column]).mean()
    with pytest.raises(ValueError, match="unknown objective"):
        model.contributions(x, "view")
    with pytest.raises(RankerError):
        model.contributions(x[:, :2], "click")


def test_latest_names_the_newest_version(fitted, root):
    _, _report = fitted
    assert RankerModel.load(root).version == "m1"
    loaded = RankerModel.load(root / "m1")
    manifest = {k: v for k, v in loaded.manifest.items() if k not in ("format", "version")}
    path, written = write_model(root, "m2", loaded.boosters, manifest)
    assert path == root / "m2"
    assert (root / "LATEST").read_text() == "m2\n"
    assert written["version"] == "m2"
    assert "reliability_plot" not in written["files"]
    second = RankerModel.load(root)
    assert second.version == "m2"
    assert second.path == root / "m2"
    x = np.zeros((3, len(FEATURES)), np.float32)
    assert np.array_equal(second.predict(x)["purchase"], loaded.predict(x)["purchase"])
    with pytest.raises(RankerError) as info:
        write_model(root, "m2", loaded.boosters, manifest)
    assert info.value.reason == "exists"
    (root / "LATEST").write_text("m9\n")
    assert "LATEST names 'm9'" in str(refused(root, "missing"))


def test_missing_or_unfinished_versions_are_refused(root):
    refused(root / "nope", "missing")
    staged = root / ".building-m3-4242"
    shutil.copytree(root / "m1", staged)
    error = refused(staged, "incomplete")
    assert "an unfinished build, not a ranker model version" in str(error)
    (root / "m1" / "manifest.json").unlink()
    refused(root / "m1", "incomplete")
    refused(root, "incomplete")  # LATEST names it


def test_a_tampered_or_missing_head_is_refused(root):
    head = root / "m1" / "head-cart.txt"
    original = head.read_bytes()
    altered = bytearray(original)
    altered[-20] = ord("7") if altered[-20] != ord("7") else ord("8")
    head.write_bytes(bytes(altered))  # same size, other content
    error = refused(root, "checksum")
    assert "sha256" in str(error)
    assert error.path == str(head)
    head.write_bytes(original[:-1])
    assert "size" in str(refused(root, "checksum", verify=False))
    head.unlink()
    assert refused(root, "missing").path == str(head)


def test_a_feature_list_that_does_not_fit_the_heads_is_refused(root):
    version = root / "m1"
    manifest = manifest_of(version)
    manifest["features"] = list(FEATURES[:3])
    manifest["schema_hash"] = schema_hash(FEATURES[:3])
    save_manifest(version, manifest)
    error = refused(root, "schema")
    assert "head has 4 features, the feature list 3" in str(error)
    renamed = ["relevance", "cart_signal", "buy_signal", "other"]
    manifest.update(features=renamed, schema_hash=schema_hash(renamed))
    save_manifest(version, manifest)
    assert "differ from the feature list" in str(refused(root, "schema"))


def test_a_manifest_with_another_schema_hash_is_refused(root):
    manifest = manifest_of(root / "m1")
    manifest["schema_hash"] = schema_hash(["something", "else"])
    save_manifest(root / "m1", manifest)
    assert "hashes to" in str(refused(root, "schema"))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"format": "crossrec-index"}, "format"),
        ({"format_version": 2}, "format"),
        ({"objectives": ["click", "purchase"]}, "schema"),
        ({"calibration": {}}, "manifest"),
        ({"heads": {}}, "manifest"),
        ({"heads": []}, "manifest"),
        ({"features": "relevance"}, "manifest"),
        ({"features": [1, 2, 3, 4]}, "manifest"),
    ],
)
def test_manifests_of_another_kind_or_shape_are_refused(root, change, reason):
    manifest = manifest_of(root / "m1")
    manifest.update(change)
    save_manifest(root / "m1", manifest)
    refused(root, reason)


def test_broken_manifest_entries_are_refused(root):
    version = root / "m1"
    good = manifest_of(version)
    broken = json.loads(json.dumps(good))
    del broken["features"]
    save_manifest(version, broken)
    assert "no 'features'" in str(refused(root, "manifest"))
    broken = json.loads(json.dumps(good))
    broken["heads"]["cart"]["given"] = "purchase"  # a later objective cannot condition
    save_manifest(version, broken)
    refused(root, "manifest")
    broken = json.loads(json.dumps(good))
    broken["calibration"]["cart"]["y"] = list(reversed(broken["calibration"]["cart"]["y"]))
    save_manifest(version, broken)
    assert "calibration of 'cart'" in str(refused(root, "manifest"))
    (version / "manifest.json").write_text("{not json")
    refused(root, "manifest")


def test_a_head_file_that_is_not_a_lightgbm_model_is_refused(root):
    version = root / "m1"
    head = version / "head-click.txt"
    head.write_text("tree\nversion=v4\nnot a model\n")
    manifest = manifest_of(version)
    manifest["heads"]["click"].update(bytes=head.stat().st_size, sha256=sha256_of(head))
    save_manifest(version, manifest)
    assert refused(root, "format").path == str(head)


def test_concurrent_predictions_agree_with_serial_ones(fitted):
    from concurrent.futures import ThreadPoolExecutor

    rows, report = fitted
    model = RankerModel.load(report.path)
    batches = [rows.matrix()[i * 300 : (i + 1) * 300] for i in range(8)]
    serial = [model.predict(b)["purchase"] for b in batches]
    with ThreadPoolExecutor(4) as pool:
        parallel = [p["purchase"] for p in pool.map(model.predict, batches)]
    assert all(np.array_equal(s, p) for s, p in zip(serial, parallel))


def test_a_failed_write_leaves_no_version_and_no_build_folder(fitted, root):
    loaded = RankerModel.load(root)

    def broken_plot(path: Path) -> bool:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_model(root, "m5", loaded.boosters, dict(loaded.manifest), plot=broken_plot)
    assert sorted(p.name for p in root.iterdir()) == ["LATEST", "m1"]
    assert (root / "LATEST").read_text() == "m1\n"


def test_the_ranker_imports_neither_engine_nor_apps():
    import subprocess
    import sys

    code = (
        "import sys, pkgutil, importlib, ranker\n"
        "for m in pkgutil.iter_modules(ranker.__path__):\n"
        "    importlib.import_module('ranker.' + m.name)\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'engine', 'apps'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
