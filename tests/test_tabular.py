"""Bring-your-own CSV/Parquet logs: id maps, time parsing, fallbacks, tasks, clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from data_prep.schema import DatasetError, date_to_ts, validate
from data_prep.tabular import prepare


@pytest.fixture()
def files(tmp_path):
    log = pd.DataFrame({
        "uid": ["bob", "ann", "bob", "ann", "cid", "bob", "ann", "cid"],
        "sku": ["p1", "p2", "p3", "p1", "p9", "p2", "p3", "p1"],
        "when": ["2020-01-05", "2020-02-01T10:00:00", "2020-03-01", "2020-01-01", "2020-04-01",
                 "2020-12-20", "2020-12-25 08:00", "2020-06-01"],
    })
    items = pd.DataFrame({"sku": ["p1", "p2", "p3"], "name": ["Red Kettle", None, "Blue Mug"],
                          "cat": ["Kitchen", "Garden", "Kitchen"]})
    users = pd.DataFrame({"uid": ["ann", "bob", "cid", "dan"], "gender": ["F", "M", "M", "F"],
                          "zip": ["1", "2", "3", "4"]})
    log.to_csv(tmp_path / "log.csv", index=False)
    items.to_parquet(tmp_path / "items.parquet", index=False)
    users.to_csv(tmp_path / "users.csv", index=False)
    return tmp_path


def test_csv_with_items_and_users(files, tmp_path):
    out = prepare(files / "log.csv", tmp_path / "ds", user_col="uid", item_col="sku", time_col="when",
                  items=files / "items.parquet", users=files / "users.csv", title_col="name",
                  category_col="cat", chunk_size=3)
    ds = validate(out)
    assert len(ds.behaviors) == 8 and len(ds.users) == 4 and len(ds.items) == 4
    item_map = pd.read_parquet(out / "id_map_items.parquet")
    assert item_map["key"].tolist() == ["p1", "p2", "p3", "p9"]  # items table first, then the log
    assert ds.items["title"].tolist() == ["Red Kettle", "item p2 Garden", "Blue Mug", "item p9"]
    assert ds.items["category"].tolist() == ["Kitchen", "Garden", "Kitchen", "unknown"]
    user_map = pd.read_parquet(out / "id_map_users.parquet")
    ann = user_map.loc[user_map["key"] == "ann", "user_id"].item()
    ann_ts = ds.behaviors.loc[ds.behaviors["user_id"] == ann, "ts"].tolist()
    assert ann_ts == [date_to_ts("2020-01-01"), date_to_ts("2020-02-01") + 36000, date_to_ts("2020-12-25") + 8 * 3600]
    # default windows: the last 10% of the span (2020-01-01 .. 2020-12-25) is the label window
    assert ds.meta["history_end"] == "2020-11-19" and ds.meta["label_end"] == "2020-12-26"
    tasks = {t["name"]: t for t in ds.tasks}
    assert tasks["gender"]["kind"] == "binary" and "zip" in tasks  # zip: 4 classes, still a task
    assert set(tasks) == {"future_Kitchen", "future_Garden", "gender", "zip"}
    report = ds.meta["prep_report"]
    assert report["items_without_title"] == 2 and report["items_not_in_items_table"] == 1
    assert report["rows"] == report["behaviors"] == 8 and report["time_format"] == "ISO 8601 text"


def test_parquet_log_int_ids_and_unix_seconds(tmp_path):
    log = pd.DataFrame({"u": [7, 7, 3], "i": [100, 200, 100], "t": [1_600_000_000, 1_500_000_000, 1_550_000_000],
                        "title": ["a b", "c d", "a b"], "genre": [None, "Jazz", None]})
    log.to_parquet(tmp_path / "log.parquet", index=False)
    out = prepare(tmp_path / "log.parquet", tmp_path / "ds", user_col="u", item_col="i", time_col="t",
                  title_col="title", category_col="genre", history_end="2018-01-01", label_end="2021-01-01",
                  chunk_size=2)
    ds = validate(out)
    assert pd.read_parquet(out / "id_map_users.parquet")["key"].tolist() == [7, 3]  # int keys stay int
    assert ds.behaviors["ts"].tolist() == [1_500_000_000, 1_600_000_000, 1_550_000_000]
    assert ds.items["category"].tolist() == ["unknown", "Jazz"]  # first row of an item wins
    assert ds.tasks == [{"name": "future_Jazz", "kind": "binary", "rule": {"future_category": "Jazz"}}]


@pytest.mark.parametrize("bad,words", [
    ({"when": "yesterday"}, ["log.csv", "3 of 4 data rows are malformed", "data row 1", "'when'", "yesterday",
                             "ISO 8601"]),
    ({"uid": None}, ["log.csv", "3 of 4 data rows are malformed", "data row 1", "'uid' is empty"]),
])
def test_mostly_malformed_log_is_an_error_naming_file_column_row(tmp_path, bad, words):
    log = pd.DataFrame({"uid": ["a", "b", "c", "d"], "sku": ["x", "y", "z", "x"], "when": ["2020-01-01"] * 4})
    for col, value in bad.items():
        log.loc[1:3, col] = value
    log.to_csv(tmp_path / "log.csv", index=False)
    with pytest.raises(DatasetError) as info:
        prepare(tmp_path / "log.csv", tmp_path / "ds", user_col="uid", item_col="sku", time_col="when")
    for word in words:
        assert word in str(info.value)
    assert not (tmp_path / "ds").exists()


def test_missing_column_and_milliseconds(tmp_path):
    pd.DataFrame({"uid": [1, 1], "sku": [2, 3], "when": [1_600_000_000_000, 1_600_200_000_999],
                  "cat": ["A", "A"]}).to_csv(
        tmp_path / "log.csv", index=False)
    with pytest.raises(DatasetError, match=r"log.csv: missing column 'time' \(columns: uid, sku, when, cat; read with "
                                           r"separator ','"):
        prepare(tmp_path / "log.csv", tmp_path / "ds", user_col="uid", item_col="sku", time_col="time")
    ds = validate(prepare(tmp_path / "log.csv", tmp_path / "ds", user_col="uid", item_col="sku", time_col="when",
                          category_col="cat", history_end="2020-09-15"))
    assert ds.behaviors["ts"].tolist() == [1_600_000_000, 1_600_200_000]
    assert ds.meta["prep_report"]["time_format"] == "unix milliseconds"
