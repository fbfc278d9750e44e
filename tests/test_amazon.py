"""Amazon 2018 raw files: streaming, counts of what is dropped, exact contract output."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from data_prep.amazon import prepare
from data_prep.schema import date_to_ts, validate


def _review(user, asin, date, **extra):
    ts = date_to_ts(date) + 3600
    month, day, year = date[5:7], date[8:10], date[:4]
    rec = {"overall": 5.0, "verified": True, "reviewTime": f"{month} {day}, {year}", "reviewerID": user,
           "asin": asin, "reviewerName": "x", "reviewText": "ok", "summary": "ok", "unixReviewTime": ts}
    rec.update(extra)
    return json.dumps(rec)


def _meta(asin, title, category):
    return json.dumps({"category": category, "tech1": "", "description": [], "fit": "", "title": title,
                       "also_buy": [], "image": [], "tech2": "", "brand": "B", "feature": [], "rank": [],
                       "also_view": [], "main_cat": "Books", "similar_item": "", "date": "", "price": "",
                       "asin": asin})


def _write(path: Path, lines: list[str], gz: bool) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.fixture()
def raw(tmp_path) -> dict:
    books = [
        _review("U1", "B001", "2016-05-01"),
        _review("U1", "B002", "2017-03-01"),
        _review("U1", "B002", "2017-03-01"),            # duplicate (same user, item, time)
        "{not json",                                     # malformed: bad JSON
        _review("U2", "B001", "2017-07-01"),
        json.dumps({"reviewerID": "U3", "asin": "B001"}),  # malformed: no unixReviewTime
        _review("U2", "B999", "2017-08-01"),            # item without metadata
        _review("U1", "B001", "2018-02-01"),
    ]
    music = [
        _review("U3", "M01", "2017-01-01"),
        _review("U2", "M01", "2018-05-01"),
        _review("U3", "M02", "2018-03-03"),
        json.dumps({"reviewerID": "U4", "asin": "M01", "unixReviewTime": "soon"}),  # malformed: time not int
        _review("U4", "B999", "2017-02-02"),             # only review of U4: item without metadata
    ]
    meta_books = [
        _meta("B001", "Pride &amp; Prejudice", ["Books", "Literature &amp; Fiction", "Classics"]),
        _meta("B002", "The  Hobbit", ["Books", "Literature & Fiction"]),
        _meta("B001", "duplicate line", ["Books"]),
        "garbage",                                       # malformed
        _meta("B003", "Never reviewed", ["Books"]),
    ]
    meta_music = [
        _meta("M01", "Kind of Blue", []),                # no category list: file category
        _meta("M02", "", ["CDs & Vinyl", "Jazz"]),       # empty title: category path
    ]
    return {
        "reviews": [_write(tmp_path / "Books.json.gz", books, gz=True),
                    _write(tmp_path / "Digital_Music_5.json", music, gz=False)],
        "meta": [_write(tmp_path / "meta_Books.json.gz", meta_books, gz=True),
                 _write(tmp_path / "meta_Digital_Music.json", meta_music, gz=False)],
    }


def test_prepare_counts_and_contract(raw, tmp_path):
    out = prepare(raw["reviews"], raw["meta"], tmp_path / "amazon", chunk_size=2)
    ds = validate(out)
    report = ds.meta["prep_report"]
    files = report["files"]
    assert files[str(raw["reviews"][0])] == {"lines": 8, "malformed": 2, "first_malformed_line": 4}
    assert files[str(raw["reviews"][1])] == {"lines": 5, "malformed": 1, "first_malformed_line": 4}
    assert files[str(raw["meta"][0])]["malformed"] == 1
    assert report["malformed_lines"] == 4
    assert report["reviews_without_meta_dropped"] == 2
    assert report["duplicate_reviews_dropped"] == 1
    assert report["duplicate_meta_lines"] == 1
    assert report["items_with_empty_title"] == 1
    assert ds.meta["summary"]["prep_report"] == report

    assert len(ds.behaviors) == 7 and len(ds.users) == 3 and len(ds.items) == 4  # U4 and B999/B003 gone
    items = ds.items.set_index(pd.read_parquet(out / "id_map_items.parquet")["asin"])
    assert items.loc["B001", "title"] == "Pride & Prejudice"
    assert items.loc["B001", "category_path"] == "Books > Literature & Fiction > Classics"
    assert items.loc["B002", "title"] == "The Hobbit"
    assert items.loc["M01", "category"] == "Digital Music" and items.loc["M01", "title"] == "Kind of Blue"
    assert items.loc["M02", "title"] == "CDs & Vinyl > Jazz" and items.loc["M02", "category"] == "CDs & Vinyl"

    users = pd.read_parquet(out / "id_map_users.parquet")
    assert sorted(users["reviewerID"]) == ["U1", "U2", "U3"]
    u1 = users.loc[users["reviewerID"] == "U1", "user_id"].item()
    assert ds.behaviors.loc[ds.behaviors["user_id"] == u1, "ts"].is_monotonic_increasing
    assert len(ds.label_window()) == 3
    assert [t["name"] for t in ds.tasks] == ["future_Books", "future_Digital Music", "future_CDs & Vinyl"]
    assert pq.ParquetFile(out / "behaviors.parquet").num_row_groups == 4  # 7 rows in chunks of 2


def test_target_categories_and_windows(raw, tmp_path):
    out = prepare(raw["reviews"], raw["meta"], tmp_path / "amazon", history_end="2017-02-01",
                  label_end="2017-08-01", target_categories=["Books"])
    ds = validate(out)
    assert [t["name"] for t in ds.tasks] == ["future_Books"]
    # population: U1 and U3 (U2 has no history); U1 reviews B002 in 2017-03, U3 nothing in Books
    assert ds.meta["summary"]["tasks"]["future_Books"]["positive_rate"] == 0.5
    with pytest.raises(ValueError, match="Toys"):
        prepare(raw["reviews"], raw["meta"], tmp_path / "bad", target_categories=["Toys"])
