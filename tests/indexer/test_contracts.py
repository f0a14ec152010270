"""Catalogue and event readers: valid files in every format, and a precise error for each bad
one."""

from __future__ import annotations

import json

import polars as pl
import pytest

from indexer import DataValidationError, read_catalog, read_events
from indexer.tables import parse_timestamps

CATALOG_CSV = """item_id,title,category,price,in_stock,brand,colour
007,Trailcrest dome tent,Outdoors > Camping > Tents,189.99,true,Trailcrest,green
008,Down sleeping bag,Outdoors>Camping >Sleeping Bags,89.5,0,,blue
"""
EVENTS_CSV = """user_id,item_id,action,ts,session_id
u1,007,view,2026-01-05T10:00:00Z,s1
u1,007,purchase,2026-01-05 10:05:00.250+02:00,s1
u2,008,click,2026-01-06T09:00:00,
"""


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(excinfo) -> list[tuple[int | None, str | None]]:
    return [(p.row, p.column) for p in excinfo.value.problems]


def test_valid_csv_catalogue_keeps_text_ids_and_free_attributes(tmp_path):
    catalog = read_catalog(write(tmp_path, "c.csv", CATALOG_CSV))
    assert catalog["item_id"].to_list() == ["007", "008"]  # not inferred as integers
    assert catalog["category"].to_list() == [
        "Outdoors > Camping > Tents",
        "Outdoors > Camping > Sleeping Bags",
    ]
    assert catalog["price"].dtype == pl.Float64
    assert catalog["in_stock"].to_list() == [True, False]
    assert catalog["brand"].to_list() == ["Trailcrest", None]
    assert catalog["colour"].to_list() == ["green", "blue"]


def test_valid_events_parse_timestamps_to_utc(tmp_path):
    events = read_events(write(tmp_path, "e.csv", EVENTS_CSV))
    assert events["ts"].dtype == pl.Datetime("us", "UTC")
    assert [t.isoformat() for t in events["ts"]] == [
        "2026-01-05T10:00:00+00:00",
        "2026-01-05T08:05:00.250000+00:00",
        "2026-01-06T09:00:00+00:00",
    ]
    assert events["action"].cast(pl.String).to_list() == ["view", "purchase", "click"]
    assert events["session_id"].to_list() == ["s1", "s1", None]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_the_same_data_reads_the_same_in_every_format(tmp_path, fmt):
    expected_catalog = read_catalog(write(tmp_path, "c.csv", CATALOG_CSV))
    expected_events = read_events(write(tmp_path, "e.csv", EVENTS_CSV))
    if fmt == "parquet":
        expected_catalog.write_parquet(tmp_path / "c.parquet")
        expected_events.with_columns(pl.col("action").cast(pl.String)).write_parquet(
            tmp_path / "e.parquet"
        )
    else:
        expected_catalog.write_ndjson(tmp_path / "c.jsonl")
        expected_events.write_ndjson(tmp_path / "e.jsonl")
    assert read_catalog(tmp_path / f"c.{fmt}").equals(expected_catalog)
    assert read_events(tmp_path / f"e.{fmt}").equals(expected_events)


def test_missing_required_column_is_named(tmp_path):
    with pytest.raises(DataValidationError) as excinfo:
        read_catalog(write(tmp_path, "c.csv", "item_id,category\n1,Tents\n"))
    assert problems_of(excinfo) == [(None, "title")]
    assert "c.csv" in str(excinfo.value)
    assert "required column missing" in str(excinfo.value)


def test_wrong_type_names_row_column_and_value(tmp_path):
    text = "item_id,title,category,price,in_stock\n1,a,T,12,true\n2,b,T,twelve,maybe\n"
    with pytest.raises(DataValidationError) as excinfo:
        read_catalog(write(tmp_path, "c.csv", text))
    assert problems_of(excinfo) == [(2, "in_stock"), (2, "price")]
    assert "expected a number, got 'twelve'" in str(excinfo.value)


def test_wrong_type_in_parquet_is_refused_not_coerced(tmp_path):
    pl.DataFrame(
        {"item_id": ["1"], "title": ["a"], "category": ["T"], "price": ["12.0"]}
    ).write_parquet(tmp_path / "c.parquet")
    with pytest.raises(DataValidationError) as excinfo:
        read_catalog(tmp_path / "c.parquet")
    assert problems_of(excinfo) == [(None, "price")]
    assert "has type String; expected a number" in str(excinfo.value)


def test_wrong_type_in_jsonl_names_the_line(tmp_path):
    lines = [
        {"item_id": "1", "title": "a", "category": "T"},
        {"item_id": 2, "title": "b", "category": "T"},
    ]
    path = write(tmp_path, "c.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n")
    with pytest.raises(DataValidationError) as excinfo:
        read_catalog(path)
    assert problems_of(excinfo) == [(2, "item_id")]


def test_malformed_json_line_is_reported(tmp_path):
    path = write(
        tmp_path,
        "e.jsonl",
        '{"user_id": "u", "item_id": "i", "action": "view", "ts": "2026-01-01T00:00:00Z"}\n{oops\n',
    )
    with pytest.raises(DataValidationError) as excinfo:
        read_events(path)
    assert problems_of(excinfo) == [(2, None)]
    assert "not valid JSON" in str(excinfo.value)


def test_duplicate_item_id_names_both_rows(tmp_path):
    text = "item_id,title,category\nA,a,T\nB,b,T\nA,c,T\n"
    with pytest.raises(DataValidationError) as excinfo:
        read_catalog(write(tmp_path, "c.csv", text))
    assert problems_of(excinfo) == [(3, "item_id")]
    assert "duplicate item_id 'A' (first at row 1)" in str(excinfo.value)


def test_unknown_action_lists_the_allowed_ones(tmp_path):
    text = (
        "user_id,item_id,action,ts\n"
        "u,i,view,2026-01-01T00:00:00Z\n"
        "u,i,wishlist,2026-01-01T00:00:00Z\n"
    )
    with pytest.raises(DataValidationError) as excinfo:
        read_events(write(tmp_path, "e.csv", text))
    assert problems_of(excinfo) == [(2, "action")]
    assert "expected one of view, click, cart, purchase" in str(excinfo.value)


@pytest.mark.parametrize("text", ["", "item_id,title,category\n"])
def test_empty_file_is_refused(tmp_path, text):
    with pytest.raises(DataValidationError) as excinfo:
        read_catalog(write(tmp_path, "c.csv", text))
    assert "empty" in str(excinfo.value) or "no rows" in str(excinfo.value)


def test_every_problem_is_reported_at_once_in_row_order(tmp_path):
    text = "item_id,title,category,price\nA,,T,1\nA,b,X >  > Y,-3\nC,c,T,inf\n"
    with pytest.raises(DataValidationError) as excinfo:
        read_catalog(write(tmp_path, "c.csv", text))
    assert problems_of(excinfo) == [
        (1, "title"),
        (2, "category"),
        (2, "item_id"),
        (2, "price"),
        (3, "price"),
    ]


def test_unparseable_and_missing_timestamps(tmp_path):
    text = (
        "user_id,item_id,action,ts\nu,i,view,yesterday\nu,i,view,\n,i,view,2026-01-01T00:00:00Z\n"
    )
    with pytest.raises(DataValidationError) as excinfo:
        read_events(write(tmp_path, "e.csv", text))
    assert problems_of(excinfo) == [(1, "ts"), (2, "ts"), (3, "user_id")]


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(DataValidationError, match=r"unknown file type '\.xlsx'"):
        read_catalog(tmp_path / "c.xlsx")
    with pytest.raises(DataValidationError, match="file not found"):
        read_catalog(tmp_path / "nope.csv")


def test_long_reports_are_truncated_but_count_everything(tmp_path):
    rows = "".join(f"{i},t,T,bad\n" for i in range(50))
    with pytest.raises(DataValidationError) as excinfo:
        read_catalog(write(tmp_path, "c.csv", "item_id,title,category,price\n" + rows))
    assert len(excinfo.value.problems) == 50
    assert "... and 30 more" in str(excinfo.value)


def test_timestamp_formats():
    parsed = parse_timestamps(
        pl.Series(
            [
                "2026-01-01T00:00:00Z",
                "2026-01-01 01:00",
                "2026-01-01T00:00:00-0130",
                "01/02/2026",
                "2026-01-05T10:00Z",
                "2026-01-05T10:00+02:00",
            ]
        )
    )
    assert [None if t is None else t.isoformat() for t in parsed] == [
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T01:00:00+00:00",
        "2026-01-01T01:30:00+00:00",
        None,
        "2026-01-05T10:00:00+00:00",
        "2026-01-05T08:00:00+00:00",
    ]


def test_relative_image_paths_resolve_against_the_catalogue_folder(tmp_path):
    text = "item_id,title,category,image\n1,a,T,img/1.png\n2,b,T,/abs/2.png\n3,c,T,\n"
    catalog = read_catalog(write(tmp_path, "c.csv", text))
    assert catalog["image"].to_list() == [f"{tmp_path}/img/1.png", "/abs/2.png", None]
