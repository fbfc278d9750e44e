"""Amazon raw files (2014, 2018, 2023 releases): streaming, counts of every line, exact contract output."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import pandas as pd
import pyarrow.parquet as pq
import pytest

from data_prep import amazon
from data_prep.amazon import prepare
from data_prep.schema import DatasetError, date_to_ts, validate


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
        "",                                              # blank line
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


def assert_every_line_counted(report: dict) -> None:
    """The prep report's totals add up to the input lines, per kind and per file."""
    for kind, parts in (("reviews", ("blank", "malformed", "without_meta_dropped", "duplicates_dropped", "behaviors")),
                        ("meta", ("blank", "malformed", "duplicate_lines", "not_reviewed", "items"))):
        files = [f for f in report["files"].values() if f["kind"] == kind]
        assert report[kind]["lines"] == sum(f["lines"] for f in files)
        assert report[kind]["lines"] == sum(report[kind][part] for part in parts), (kind, report[kind])
        assert report[kind]["blank"] == sum(f["blank_lines"] for f in files)
        assert report[kind]["malformed"] == sum(f["malformed"] for f in files)


def test_prepare_counts_and_contract(raw, tmp_path):
    out = prepare(raw["reviews"], raw["meta"], tmp_path / "amazon", chunk_size=2)
    ds = validate(out)
    report = ds.meta["prep_report"]
    files = report["files"]
    assert files[str(raw["reviews"][0])] == {"kind": "reviews", "release": "2014/2018", "lines": 9, "blank_lines": 1,
                                             "malformed": 2, "first_malformed_line": 4}
    assert files[str(raw["reviews"][1])] == {"kind": "reviews", "release": "2014/2018", "lines": 5, "blank_lines": 0,
                                             "malformed": 1, "first_malformed_line": 4}
    assert files[str(raw["meta"][0])]["malformed"] == 1 and files[str(raw["meta"][0])]["release"] == "2018"
    assert report["reviews"] == {"lines": 14, "blank": 1, "malformed": 3, "without_meta_dropped": 2,
                                 "duplicates_dropped": 1, "behaviors": 7}
    assert report["meta"] == {"lines": 7, "blank": 0, "malformed": 1, "duplicate_lines": 1, "not_reviewed": 1,
                              "items": 4}
    assert report["items_with_empty_title"] == 1
    assert_every_line_counted(report)
    assert ds.meta["summary"]["prep_report"] == report
    assert ds.name == "amazon-2018"
    # default windows: the last 10 calendar months (the last review is 2018-05-01)
    assert (ds.meta["history_end"], ds.meta["label_end"]) == ("2017-08-01", "2018-06-01")

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


def test_default_windows_give_the_papers_split_on_the_2018_release():
    last_2018_review = np.array([date_to_ts("2014-03-03"), date_to_ts("2018-10-02")])
    assert amazon.default_windows(last_2018_review, None, None) == ("2018-01-01", "2018-11-01")
    assert amazon.default_windows(last_2018_review, None, "2018-03-01") == ("2017-05-01", "2018-03-01")
    assert amazon.default_windows(last_2018_review, "2018-06-01", None) == ("2018-06-01", "2018-11-01")


def test_one_category_file_takes_its_tasks_from_the_second_level(tmp_path):
    """A single category's files (the usual download): tasks on sub-categories, not 'buys anything'."""
    meta = [_meta(f"G{i}", f"guitar {i}", ["Musical Instruments", "Guitars"]) for i in range(3)]
    meta += [_meta(f"D{i}", f"drum {i}", ["Musical Instruments", "Drums"]) for i in range(2)]
    reviews = [_review(f"U{u}", f"G{u % 3}", "2016-05-01") for u in range(6)]
    reviews += [_review(f"U{u}", f"D{u % 2}", "2018-03-01") for u in range(0, 6, 2)]
    out = prepare([_write(tmp_path / "Musical_Instruments.json", reviews, gz=False)],
                  [_write(tmp_path / "meta_Musical_Instruments.json", meta, gz=False)], tmp_path / "mi")
    ds = validate(out)
    assert [t["name"] for t in ds.tasks] == ["future_Guitars", "future_Drums"]
    assert sorted(ds.items.category.unique()) == ["Drums", "Guitars"]
    assert ds.items.category_path.str.startswith("Musical Instruments > ").all()
    assert ds.meta["summary"]["tasks"]["future_Drums"]["positive_rate"] == 0.5  # U0, U2, U4 of six
    assert "second level" in ds.meta["notes"]


def test_release_2014_meta_as_python_literals(tmp_path):
    reviews = [json.dumps({"reviewerID": u, "asin": a, "helpful": [0, 0], "reviewText": "x", "overall": 4.0,
                           "summary": "x", "unixReviewTime": date_to_ts(d), "reviewTime": "x"})
               for u, a, d in [("A1", "X1", "2013-01-05"), ("A1", "X2", "2014-02-01"), ("A2", "X2", "2013-03-01"),
                               ("A2", "X1", "2014-05-01")]]
    meta = [
        repr({"asin": "X1", "title": "Rock 'n' Roll &amp; more", "salesRank": {"Music": 5},
              "categories": [["CDs & Vinyl", "Rock"], ["CDs & Vinyl", "Pop"]], "related": {"also_bought": ["X2"]}}),
        repr({"asin": "X2", "categories": [["CDs & Vinyl"]], "imUrl": "http://x"}),  # no title (common in 2014)
        "{'asin': 'X3', 'title': 'cut",                                                 # malformed literal
    ]
    out = prepare([_write(tmp_path / "reviews_CDs_5.json", reviews, gz=False)],
                  [_write(tmp_path / "meta_CDs.json.gz", meta, gz=True)], tmp_path / "a14")
    ds = validate(out)
    items = ds.items.set_index(pd.read_parquet(out / "id_map_items.parquet")["asin"])
    assert items.loc["X1", "title"] == "Rock 'n' Roll & more"
    assert items.loc["X1", "category_path"] == "CDs & Vinyl > Rock"
    # one top level in the file: category is the second level where the path has one
    assert items.loc["X1", "category"] == "Rock" and items.loc["X2", "category"] == "CDs & Vinyl"
    assert items.loc["X2", "title"] == "CDs & Vinyl"  # empty title: the category path
    report = ds.meta["prep_report"]
    assert [f["release"] for f in report["files"].values()] == ["2014/2018", "2014"]
    assert report["meta"]["malformed"] == 1 and ds.name == "amazon-2014"
    assert (ds.meta["history_end"], ds.meta["label_end"]) == ("2013-08-01", "2014-06-01")
    assert_every_line_counted(report)


def test_release_2023_parent_asin_and_millisecond_times(tmp_path):
    def review(user, parent, ms):
        return json.dumps({"rating": 5.0, "title": "great", "text": "ok", "images": [], "asin": parent + "-v",
                           "parent_asin": parent, "user_id": user, "timestamp": ms, "helpful_vote": 0,
                           "verified_purchase": True})

    ms = 1_650_000_000_123  # 2022-04-15
    reviews = [review("AE1", "P1", ms), review("AE1", "P2", ms + 86_400_000 * 300),
               review("AE2", "P1", ms + 5_000), json.dumps({"user_id": "AE3", "parent_asin": "P1"})]
    meta = [
        json.dumps({"main_category": "All Beauty", "title": "Lip gloss", "categories": [], "parent_asin": "P1",
                    "average_rating": 4.1, "rating_number": 10, "features": [], "details": {}}),
        json.dumps({"main_category": None, "title": "Night cream", "categories": ["Beauty", "Skin Care"],
                    "parent_asin": "P2"}),
    ]
    out = prepare([_write(tmp_path / "All_Beauty.jsonl.gz", reviews, gz=True)],
                  [_write(tmp_path / "meta_All_Beauty.jsonl", meta, gz=False)], tmp_path / "a23")
    ds = validate(out)
    assert ds.name == "amazon-2023"
    items = ds.items.set_index(pd.read_parquet(out / "id_map_items.parquet")["asin"])
    assert items.loc["P1", "category"] == "All Beauty" and items.loc["P1", "category_path"] == "All Beauty"
    assert items.loc["P2", "category"] == "Beauty" and items.loc["P2", "category_path"] == "Beauty > Skin Care"
    users = pd.read_parquet(out / "id_map_users.parquet")
    first = ds.behaviors[ds.behaviors["user_id"] == users.loc[users["reviewerID"] == "AE1", "user_id"].item()]
    assert first["ts"].tolist() == [1_650_000_000, 1_650_000_000 + 86_400 * 300]  # milliseconds floored to seconds
    report = ds.meta["prep_report"]
    assert report["reviews"]["malformed"] == 1 and report["reviews"]["behaviors"] == 3
    assert_every_line_counted(report)


def test_truncated_gzip_names_the_file_and_the_last_line(tmp_path):
    lines = [_review(f"U{k}", "B001", "2017-05-01") for k in range(3000)]
    whole = gzip.compress(("\n".join(lines) + "\n").encode())
    cut = tmp_path / "Books.json.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    meta = _write(tmp_path / "meta_Books.json", [_meta("B001", "t", ["Books"])], gz=False)
    with pytest.raises(DatasetError, match=r"Books\.json\.gz: the gzip stream is cut off or corrupt after line \d+ .*"
                                           r"download the file again.*gzip -dc Books\.json\.gz > Books\.json"):
        prepare([cut], [meta], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    cli = subprocess.run([sys.executable, "-m", "data_prep", "amazon", "--reviews", str(cut), "--meta", str(meta),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert cli.returncode == 1 and "Traceback" not in cli.stderr
    assert cli.stderr.startswith(f"error: {cut}: the gzip stream is cut off") and cli.stderr.count("\n") == 1


def test_no_review_matching_the_meta_is_a_clear_error(raw, tmp_path):
    other_meta = _write(tmp_path / "meta_Toys.json", [_meta("T1", "a toy", ["Toys"])], gz=False)
    with pytest.raises(DatasetError, match=r"no review matches a meta line: 5 reviewed items \(e\.g\. 'B001'\).*"
                                           r"meta_Toys\.json \(1 readable meta lines.*same category and release"):
        prepare(raw["reviews"], [other_meta], tmp_path / "out")


def test_wrong_files_and_mixed_releases_are_clear_errors(raw, tmp_path):
    with pytest.raises(DatasetError, match=r"meta_Books\.json\.gz: no line is an Amazon reviews record.*"
                                           r"2023: user_id, parent_asin, timestamp.*Is it a meta file\?"):
        prepare(raw["meta"], raw["meta"], tmp_path / "out")
    meta_2023 = _write(tmp_path / "meta_Books.jsonl", [json.dumps({"parent_asin": "B001", "title": "t",
                                                                    "main_category": "Books", "categories": []})],
                       gz=False)
    with pytest.raises(DatasetError, match=r"mix the 2023 release.*meta_Books\.jsonl: 2023.*one release"):
        prepare(raw["reviews"], [meta_2023], tmp_path / "out")
    unreadable = _write(tmp_path / "Unreadable.json", ["{bad", "[1, 2]", ""], gz=False)
    with pytest.raises(DatasetError, match=r"no readable review in .*Unreadable\.json: 3 lines, 2 malformed "
                                           r"\(first malformed line: \{'Unreadable.json': 1\}\)"):
        prepare([unreadable], raw["meta"], tmp_path / "out")


def test_windows_outside_the_data_are_a_clear_error(raw, tmp_path):
    with pytest.raises(DatasetError, match=r"no review in the label window 2019-01-01\.\.2019-06-01; the reviews "
                                           r"span 2016-05-01\.\.2018-05-01.*--history-end 2017-08-01 "
                                           r"--label-end 2018-06-01"):
        prepare(raw["reviews"], raw["meta"], tmp_path / "out", history_end="2019-01-01", label_end="2019-06-01")
    with pytest.raises(DatasetError, match="no review before history_end 2010-01-01"):
        prepare(raw["reviews"], raw["meta"], tmp_path / "out", history_end="2010-01-01", label_end="2019-06-01")


def test_failed_prep_keeps_the_previous_dataset_and_id_maps(raw, tmp_path, monkeypatch):
    out = prepare(raw["reviews"], raw["meta"], tmp_path / "amazon")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_write = amazon.write_dataset

    def write_with_a_broken_task(out, items, behaviors, users, meta, extras=None):
        meta["tasks"].append({"name": "future_Cars", "kind": "binary", "rule": {"future_category": "Cars"}})
        return real_write(out, items, behaviors, users, meta, extras=extras)

    monkeypatch.setattr(amazon, "write_dataset", write_with_a_broken_task)
    music_only = [raw["reviews"][1]]  # a different log: new behaviours and id maps are staged, then rejected
    with pytest.raises(DatasetError, match="unknown category 'Cars'"):
        prepare(music_only, raw["meta"], out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert len(validate(out).behaviors) == 7
