"""Rows on disk as a folder of parts: the same rows as one frame, written atomically, and refused
(by reason) when a part is missing, disagrees with the manifest or splits a decision."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from ranker import RankerError
from ranker.row_files import MANIFEST_FILE, RowWriter, read_rows
from ranker.rows import TrainingRows

FEATURES = ["f_a", "f_b"]


def decisions(*ids: int) -> pl.DataFrame:
    """Two rows per decision id: items a and b, a clicked; f_a = id, f_b = 10 * id + row."""
    rows = [
        {
            "decision_id": d,
            "decision_ts_us": 100 * d,
            "item_id": item,
            "price": 1.0,
            "blend_score": 0.5 - j / 10,
            "click": int(j == 0),
            "cart": 0,
            "purchase": 0,
            "f_a": float(d),
            "f_b": 10.0 * d + j,
        }
        for d in ids
        for j, item in enumerate("ab")
    ]
    return pl.DataFrame(rows)


def test_parts_read_back_as_the_rows_of_one_frame(tmp_path):
    with RowWriter(tmp_path / "rows", FEATURES) as writer:
        writer.write(decisions(1, 2))
        writer.write(decisions(3))
        writer.write(decisions())  # an empty part writes nothing
        assert (writer.rows, writer.decisions) == (6, 3)
        path = writer.close({"index_version": "v1"})
    assert sorted(p.name for p in path.iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        MANIFEST_FILE,
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["rows"]  # no staging folder left
    rows = read_rows(path)
    expected = TrainingRows.from_frame(decisions(1, 2, 3), FEATURES)
    assert rows.meta == {"index_version": "v1"}
    assert rows.features == ("f_a", "f_b")
    assert rows.keys.equals(expected.keys)
    np.testing.assert_array_equal(rows.x, [[1, 10], [1, 11], [2, 20], [2, 21], [3, 30], [3, 31]])
    assert rows.x.dtype == np.float32
    assert rows.x.flags.c_contiguous
    assert rows.matrix() is rows.x  # all features in order: the matrix itself, no copy
    np.testing.assert_array_equal(rows.matrix(["f_b"]), rows.x[:, [1]])
    assert rows.frame.equals(expected.frame)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    assert manifest["parts"] == [
        {"file": "part-00000.parquet", "rows": 4, "decisions": 2},
        {"file": "part-00001.parquet", "rows": 2, "decisions": 1},
    ]


def test_new_rows_replace_old_ones_only_when_closed(tmp_path):
    path = tmp_path / "rows"
    with RowWriter(path, FEATURES) as writer:
        writer.write(decisions(1))
        writer.close({"n": 1})

    def failing_replay() -> None:
        with RowWriter(path, FEATURES) as writer:
            writer.write(decisions(2))
            raise RuntimeError("the replay failed")

    with pytest.raises(RuntimeError):
        failing_replay()
    assert read_rows(path).meta == {"n": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["rows"]
    with RowWriter(path, FEATURES) as writer:
        writer.write(decisions(5, 6))
        writer.close({"n": 2})
    assert read_rows(path).keys["decision_id"].unique().sort().to_list() == [5, 6]
    with pytest.raises(RankerError, match="no rows were written"), RowWriter(path, FEATURES) as w:
        w.close({})


def test_a_decision_split_over_two_parts_is_refused(tmp_path):
    with RowWriter(tmp_path / "rows", FEATURES) as writer:
        writer.write(decisions(1, 2))
        with pytest.raises(RankerError) as info:
            writer.write(decisions(2, 3))
    assert info.value.reason == "values"
    assert "decision 2 is split over two parts" in str(info.value)
    # A part is validated as it is written: a bad label is refused by name.
    with RowWriter(tmp_path / "other", FEATURES) as writer, pytest.raises(RankerError) as info:
        writer.write(decisions(1).with_columns(pl.lit(2).alias("cart")))
    assert "'cart'" in str(info.value)


def test_a_damaged_folder_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "rows"
    with RowWriter(path, FEATURES) as writer:
        writer.write(decisions(1))
        writer.write(decisions(2))
        writer.close({})

    def reason() -> RankerError:
        with pytest.raises(RankerError) as info:
            read_rows(path)
        return info.value

    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["parts"][1]["rows"] = 3
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert reason().reason == "format"
    assert "holds 2 rows, rows.json says 3" in str(reason())
    manifest["parts"][1]["rows"] = 2
    manifest["parts"][0]["file"] = "../elsewhere.parquet"  # only files of the folder are read
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert "part ../elsewhere.parquet is missing" in str(reason())
    manifest["parts"][0]["file"] = "part-00001.parquet"  # the same part twice: one decision twice
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert reason().reason == "values"
    (path / MANIFEST_FILE).unlink()
    assert reason().reason == "format"
    assert "no rows.json" in str(reason())
    assert read_rows_missing(tmp_path / "nothing").reason == "missing"


def read_rows_missing(path) -> RankerError:
    with pytest.raises(RankerError) as info:
        read_rows(path)
    return info.value


def test_a_model_trained_with_the_features_left_on_disk_is_the_one_trained_in_memory(tmp_path):
    from helpers_ranker import FEATURES as RANKER_FEATURES
    from helpers_ranker import TRAINING, synthetic_rows

    from ranker.train import TrainConfig, train_model

    frame = synthetic_rows(decisions=300, items=20, seed=5)
    with RowWriter(tmp_path / "rows", RANKER_FEATURES) as writer:
        for first in range(1_000, 1_300, 70):  # parts of whole decisions (ids from 1,000)
            ids = pl.col("decision_id")
            writer.write(frame.filter((ids >= first) & (ids < first + 70)))
        writer.close({})
    in_memory = read_rows(tmp_path / "rows")
    on_disk = read_rows(tmp_path / "rows", features_in_memory=False)
    assert on_disk.x is None
    mask = np.arange(on_disk.height) % 7 == 3
    np.testing.assert_array_equal(on_disk.take(mask), in_memory.x[mask])
    names = list(reversed(RANKER_FEATURES[:2]))
    np.testing.assert_array_equal(on_disk.take(mask, names), in_memory.take(mask, names))
    a = train_model(in_memory, tmp_path / "a", TrainConfig(**{**TRAINING, "version": "a"}))
    b = train_model(on_disk, tmp_path / "b", TrainConfig(**{**TRAINING, "version": "b"}))
    x = in_memory.matrix(a.model.features)[:300]
    for objective, p in a.model.predict(x).items():
        np.testing.assert_array_equal(p, b.model.predict(x)[objective])
    assert a.metrics["click"] == b.metrics["click"]
