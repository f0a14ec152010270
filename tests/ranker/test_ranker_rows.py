"""The training-row contract: schema hash, Parquet round trip with metadata, funnel normalisation,
and a refusal (with the column named) for every way rows can break it."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import polars as pl
import pytest

from ranker import OBJECTIVES, RankerError
from ranker.row_files import METADATA_KEY, read_rows, write_rows
from ranker.rows import TrainingRows, schema_hash

FEATURES = ["f_a", "f_b"]


def tiny_frame(**changes) -> pl.DataFrame:
    """Two decisions of two items; labels as booleans, features as Float64 (both get cast)."""
    columns = {
        "decision_id": [1, 1, 2, 2],
        "decision_ts_us": [10, 10, 20, 20],
        "item_id": ["a", "b", "a", "c"],
        "price": [1.5, None, float("nan"), 4.0],
        "blend_score": [0.3, 0.2, 0.9, 0.1],
        "click": [True, False, True, False],
        "cart": [True, False, False, False],
        "purchase": [False, False, False, False],
        "f_a": [0.5, None, 2.0, 3.0],
        "f_b": [1, 2, 3, 4],
    }
    columns.update(changes)
    return pl.DataFrame(columns, strict=False)


def refused(frame: pl.DataFrame, reason: str, *words: str, features=FEATURES) -> None:
    with pytest.raises(RankerError) as info:
        TrainingRows.from_frame(frame, features)
    assert info.value.reason == reason
    for word in words:
        assert word in str(info.value)


def test_objectives_are_the_funnel():
    assert OBJECTIVES == ("click", "cart", "purchase")


def test_schema_hash_is_sha256_of_the_canonical_encoding():
    canonical = '{"features":["f_a","f_b"],"format":"crossrec-rows","format_version":1}'
    assert schema_hash(FEATURES) == hashlib.sha256(canonical.encode()).hexdigest()
    assert schema_hash(("f_a", "f_b")) == schema_hash(FEATURES)
    assert schema_hash(["f_b", "f_a"]) != schema_hash(FEATURES)  # the order matters
    assert schema_hash(["f_a"]) != schema_hash(FEATURES)


def test_write_then_read_round_trips_rows_features_and_meta(tmp_path):
    path = tmp_path / "rows" / "train.parquet"  # a missing folder is created
    meta = {"index_version": "v7", "window": ["2025-01-01", "2025-02-01"]}
    write_rows(path, tiny_frame(extra=["w", "x", "y", "z"]), FEATURES, meta)
    assert [p.name for p in path.parent.iterdir()] == ["train.parquet"]  # no temporary left
    rows = read_rows(path)
    assert rows.features == ("f_a", "f_b")
    assert rows.meta == meta
    assert rows.schema_hash == schema_hash(FEATURES)
    frame = rows.frame
    assert frame.columns == [
        "decision_id",
        "decision_ts_us",
        "item_id",
        "price",
        "blend_score",
        *OBJECTIVES,
        *FEATURES,
        "extra",
    ]
    assert [frame[c].dtype for c in ("decision_id", "click", "f_a", "f_b", "price")] == [
        pl.Int64,
        pl.Int8,
        pl.Float32,
        pl.Float32,
        pl.Float64,
    ]
    assert frame["click"].to_list() == [1, 0, 1, 0]
    assert frame["cart"].to_list() == [1, 0, 0, 0]
    assert np.isnan(frame["f_a"][1])
    assert frame["f_b"].to_list() == [1.0, 2.0, 3.0, 4.0]
    assert frame["price"][1] is None
    assert frame["extra"].to_list() == ["w", "x", "y", "z"]
    assert rows.matrix().shape == (4, 2)
    assert rows.matrix().dtype == np.float32
    assert rows.matrix(["f_b"]).ravel().tolist() == [1.0, 2.0, 3.0, 4.0]
    stored = json.loads(pl.read_parquet_metadata(path)[METADATA_KEY])
    assert stored == {
        "format_version": 1,
        "features": FEATURES,
        "schema_hash": schema_hash(FEATURES),
        "meta": meta,
    }


def test_labels_are_normalised_along_the_funnel_and_logged(caplog):
    frame = tiny_frame(
        click=[0, 0, 1, 0], cart=[0, 1, 0, 0], purchase=[1, 0, 0, 0]
    )  # row 0: purchase only; row 1: cart without click
    with caplog.at_level(logging.WARNING, logger="ranker.rows"):
        rows = TrainingRows.from_frame(frame, FEATURES)
    assert rows.frame["purchase"].to_list() == [1, 0, 0, 0]
    assert rows.frame["cart"].to_list() == [1, 1, 0, 0]
    assert rows.frame["click"].to_list() == [1, 1, 1, 0]
    messages = [r.getMessage() for r in caplog.records]
    assert any("1 row(s) with purchase = 1 but cart = 0" in m for m in messages)
    assert any("2 row(s) with cart = 1 but click = 0" in m for m in messages)


def test_missing_columns_and_bad_dtypes_are_refused_by_name():
    refused(tiny_frame().drop("cart", "f_b"), "schema", "missing columns", "'cart'", "'f_b'")
    refused(tiny_frame(f_b=["1", "2", "3", "4"]), "schema", "'f_b'", "expected a number")
    refused(tiny_frame(decision_id=[1.0, 1.0, 2.0, 2.0]), "schema", "'decision_id'", "integer")
    refused(tiny_frame(item_id=[1, 2, 3, 4]), "schema", "'item_id'", "string")
    refused(tiny_frame(click=[0.0, 1.0, 0.0, 1.0]), "schema", "'click'", "0/1")
    refused(tiny_frame(), "schema", "empty", features=[])
    refused(tiny_frame(), "schema", "twice", "'f_a'", features=["f_a", "f_a"])
    refused(tiny_frame(), "schema", "reuse", "'price'", features=["f_a", "price"])


def test_bad_values_are_refused_by_name():
    refused(tiny_frame(cart=[0, 2, 0, 0]), "values", "'cart'", "holds 2")
    refused(tiny_frame(purchase=[0, 300, 0, 0]), "values", "'purchase'", "holds 300")
    refused(tiny_frame(click=[True, None, True, False]), "values", "'click'", "1 null")
    refused(tiny_frame(item_id=["a", None, "a", "c"]), "values", "'item_id'", "null")
    refused(tiny_frame(blend_score=[0.1, float("nan"), 0.2, 0.3]), "values", "'blend_score'")
    refused(tiny_frame(decision_ts_us=[10, 11, 20, 20]), "values", "decision 1", "2 different")
    refused(tiny_frame(item_id=["a", "a", "a", "c"]), "values", "twice")


def _write_with_metadata(path, payload) -> None:
    TrainingRows.from_frame(tiny_frame(), FEATURES).frame.write_parquet(
        path, metadata=None if payload is None else {METADATA_KEY: payload}
    )


def test_files_that_are_not_crossrec_rows_are_refused(tmp_path):
    def reason(path) -> RankerError:
        with pytest.raises(RankerError) as info:
            read_rows(path)
        assert info.value.path == str(path)
        return info.value

    assert reason(tmp_path / "nope.parquet").reason == "missing"
    text = tmp_path / "text.parquet"
    text.write_text("not parquet")
    assert reason(text).reason == "format"
    plain = tmp_path / "plain.parquet"
    _write_with_metadata(plain, None)
    assert reason(plain).reason == "format"
    assert "no 'crossrec.rows' metadata" in str(reason(plain))
    garbled = tmp_path / "garbled.parquet"
    _write_with_metadata(garbled, "{not json")
    assert reason(garbled).reason == "format"
    future = tmp_path / "future.parquet"
    payload = {"format_version": 2, "features": FEATURES, "schema_hash": schema_hash(FEATURES)}
    _write_with_metadata(future, json.dumps(payload))
    assert reason(future).reason == "format"
    assert "version 2" in str(reason(future))


def test_a_stored_hash_that_does_not_match_the_feature_list_is_refused(tmp_path):
    path = tmp_path / "rows.parquet"
    payload = {"format_version": 1, "features": FEATURES, "schema_hash": schema_hash(["f_a"])}
    _write_with_metadata(path, json.dumps(payload))
    with pytest.raises(RankerError) as info:
        read_rows(path)
    assert info.value.reason == "schema"
    assert "does not match" in str(info.value)
    # The stored list names a column the file lacks: refused by name.
    payload = {"format_version": 1, "features": ["f_a", "f_c"], "schema_hash": ""}
    payload["schema_hash"] = schema_hash(payload["features"])
    _write_with_metadata(path, json.dumps(payload))
    with pytest.raises(RankerError) as info:
        read_rows(path)
    assert info.value.reason == "schema"
    assert "'f_c'" in str(info.value)


def test_a_refused_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "rows.parquet"
    write_rows(path, tiny_frame(), FEATURES, {"n": 1})
    with pytest.raises(RankerError):
        write_rows(path, tiny_frame(cart=[0, 2, 0, 0]), FEATURES, {"n": 2})
    assert read_rows(path).meta == {"n": 1}
    assert len(list(tmp_path.iterdir())) == 1
