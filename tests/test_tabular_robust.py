"""Bring-your-own logs as they come: separators, multi-valued categories, time formats,
outliers, duplicates, text ids, empty files, label-free logs, counts that add up."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.__main__ import main
from data_prep.schema import DatasetError, date_to_ts, task_labels, validate
from data_prep.tabular import CHURN_TASK, category_values, outlier_mask, prepare, sniff_separator

DAY = 86_400
YEAR = 365 * DAY


def _log(n_users: int = 6, n_rows: int = 48, start: str = "2015-01-01", years: float = 3.0,
         seed: int = 0) -> pd.DataFrame:
    """A small log spread over ``years`` from ``start``: user, item, unix seconds, category."""
    rng = np.random.default_rng(seed)
    ts = date_to_ts(start) + np.sort(rng.integers(0, int(years * YEAR), n_rows))
    return pd.DataFrame({"user": [f"u{i % n_users}" for i in range(n_rows)],
                         "item": [f"i{i % 7}" for i in range(n_rows)],
                         "time": ts,
                         "cat": [["Books", "Music"][i % 7 % 2] for i in range(n_rows)]})


def _prepare(path, out, **kwargs):
    args = dict(user_col="user", item_col="item", time_col="time")
    return prepare(path, out, **{**args, **kwargs})


# ---------------------------------------------------------------------------------------
# Separators
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sep", [",", "\t", ";", "|"])
def test_separator_is_sniffed_whatever_the_extension(tmp_path, sep):
    log = _log()
    log.to_csv(tmp_path / "log.csv", sep=sep, index=False)
    ds = validate(_prepare(tmp_path / "log.csv", tmp_path / "ds", category_col="cat"))
    assert len(ds.behaviors) == len(log)
    assert ds.meta["prep_report"]["files"][str(tmp_path / "log.csv")]["separator"] == sep


def test_comma_file_with_pipe_lists_is_read_as_comma(tmp_path):
    (tmp_path / "log.csv").write_text("user,item,time,genres\n" + "".join(
        f"u{k % 3},i{k % 4},{1_500_000_000 + k * DAY},Action|Comedy\n" for k in range(12)))
    assert sniff_separator(tmp_path / "log.csv", ["user", "item", "time"]) == ","


def test_header_decides_when_the_sniffer_cannot(tmp_path):
    (tmp_path / "one.csv").write_text("user;item;time\n")  # one line: no consistency to sniff from
    assert sniff_separator(tmp_path / "one.csv", ["user", "item", "time"]) == ";"


def test_sep_overrides_and_a_wrong_sep_says_so(tmp_path):
    _log().to_csv(tmp_path / "log.txt", sep=";", index=False)
    ds = validate(_prepare(tmp_path / "log.txt", tmp_path / "ds", category_col="cat", sep=";"))
    assert len(ds.behaviors) == 48
    with pytest.raises(DatasetError, match=r"log.txt: missing column 'user' .*separator ','.*--sep"):
        _prepare(tmp_path / "log.txt", tmp_path / "ds2", sep=",")


def test_cli_tab_separator_and_category_sep(tmp_path):
    log = _log()
    log["cat"] = ["Books, Music", "Music"] * 24
    log.to_csv(tmp_path / "log.tsv", sep="\t", index=False)
    rc = main(["tabular", "--behaviors", str(tmp_path / "log.tsv"), "--user-col", "user", "--item-col", "item",
               "--time-col", "time", "--category-col", "cat", "--category-sep", ",", "--sep", "\\t",
               "--out", str(tmp_path / "ds")])
    assert rc == 0
    assert set(validate(tmp_path / "ds").items["category"]) == {"Books|Music", "Music"}


# ---------------------------------------------------------------------------------------
# Multi-valued categories
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell,sep,values", [
    ("Action|Comedy", "|", ["Action", "Comedy"]),
    ('["Action", "Comedy"]', "|", ["Action", "Comedy"]),
    ("['Action', 'Comedy', 'Action']", "|", ["Action", "Comedy"]),
    ("Action, Comedy", ",", ["Action", "Comedy"]),
    ("Sci|Fi, Kids", ",", ["Sci/Fi", "Kids"]),  # a '|' inside one value cannot split the contract's list
    ("Arts &amp; Crafts", "|", ["Arts & Crafts"]),
    (np.array(["Jazz", "Blues"], dtype=object), "|", ["Jazz", "Blues"]),
    (None, "|", []),
    ("  ", "|", []),
])
def test_category_values(cell, sep, values):
    assert category_values(cell, sep) == values


def test_multi_genre_items_table_gives_single_value_tasks(tmp_path):
    items = pd.DataFrame({"movie": ["m1", "m2", "m3", "m4"],
                          "title": ["Toy Story (1995)", "Heat (1995)", None, "Casino (1995)"],
                          "genres": ["Animation|Children's|Comedy", "Action|Crime|Thriller", "Action|Comedy",
                                     "Crime|Drama"]})
    items.to_csv(tmp_path / "movies.csv", index=False)
    rows = [("a", "m1", "2020-01-01"), ("a", "m2", "2020-02-01"), ("b", "m3", "2020-03-01"), ("b", "m4", "2020-04-01"),
            ("c", "m2", "2020-05-01"), ("a", "m3", "2020-12-20"), ("b", "m1", "2020-12-21"), ("c", "m4", "2020-12-22")]
    pd.DataFrame(rows, columns=["user", "movie", "time"]).to_csv(tmp_path / "ratings.csv", index=False)
    ds = validate(prepare(tmp_path / "ratings.csv", tmp_path / "ds", items=tmp_path / "movies.csv", user_col="user",
                          item_col="movie", time_col="time", title_col="title", category_col="genres"))
    assert ds.items["category"].tolist() == items["genres"].tolist()
    assert ds.items["title"].tolist()[2] == "item m3 Action Comedy"  # no title: the values are its text
    names = [t["name"] for t in ds.tasks]
    assert names == ["future_Action", "future_Comedy", "future_Crime"]  # by behaviours, ties by name
    assert not any("|" in name for name in names)
    users = pd.read_parquet(tmp_path / "ds" / "id_map_users.parquet").set_index("key")["user_id"]
    uid, y = task_labels(ds, ds.tasks[1])  # future_Comedy: a (m3 Action|Comedy) and b (m1 ...|Comedy)
    assert dict(zip(uid.tolist(), y.tolist())) == {users["a"]: 1, users["b"]: 1, users["c"]: 0}


def test_list_literal_and_parquet_list_categories(tmp_path):
    log = _log()
    log["cat"] = ['["Rock", "Pop"]', "['Pop']"] * 24
    log.to_csv(tmp_path / "log.csv", index=False)
    ds = validate(_prepare(tmp_path / "log.csv", tmp_path / "ds", category_col="cat"))
    assert set(ds.items["category"]) == {"Rock|Pop", "Pop"}
    table = pa.table({"user": log["user"], "item": log["item"], "time": log["time"],
                      "cat": pa.array([["Rock", "Pop"], ["Pop"]] * 24, pa.list_(pa.string()))})
    pq.write_table(table, tmp_path / "log.parquet")
    ds = validate(_prepare(tmp_path / "log.parquet", tmp_path / "ds2", category_col="cat"))
    assert set(ds.items["category"]) == {"Rock|Pop", "Pop"}
    assert {t["name"] for t in ds.tasks} == {"future_Pop", "future_Rock"}


# ---------------------------------------------------------------------------------------
# Duplicates, HTML, ids
# ---------------------------------------------------------------------------------------


def test_duplicates_dropped_and_counted_html_unescaped(tmp_path):
    log = _log()
    log = pd.concat([log, log.iloc[[3, 3, 10]]], ignore_index=True)  # three exact repeats
    log["title"] = "Tom &amp; Jerry &quot;Classic&quot;"
    log["cat"] = "Arts &amp; Crafts|Kids"
    log.to_csv(tmp_path / "log.csv", index=False)
    ds = validate(_prepare(tmp_path / "log.csv", tmp_path / "ds", title_col="title", category_col="cat"))
    report = ds.meta["prep_report"]
    assert report["duplicate_rows_dropped"] == 3 and len(ds.behaviors) == 48
    assert set(ds.items["title"]) == {'Tom & Jerry "Classic"'}
    assert set(ds.items["category"]) == {"Arts & Crafts|Kids"}
    assert {t["name"] for t in ds.tasks} == {"future_Arts & Crafts", "future_Kids"}


def test_non_canonical_integer_keys_stay_text(tmp_path):
    log = _log()
    log["user"] = ["7", "007", "8"] * 16
    log.to_csv(tmp_path / "log.csv", index=False)
    ds = validate(_prepare(tmp_path / "log.csv", tmp_path / "ds", category_col="cat"))
    keys = pd.read_parquet(tmp_path / "ds" / "id_map_users.parquet")["key"]
    assert keys.tolist() == ["7", "007", "8"] and len(ds.users) == 3
    log["user"] = ["7", "70", "8"] * 16  # canonical integers: int64 keys
    log.to_csv(tmp_path / "log.csv", index=False)
    _prepare(tmp_path / "log.csv", tmp_path / "ds", category_col="cat")
    keys = pd.read_parquet(tmp_path / "ds" / "id_map_users.parquet")["key"]
    assert keys.dtype == np.int64 and keys.tolist() == [7, 70, 8]


# ---------------------------------------------------------------------------------------
# Times
# ---------------------------------------------------------------------------------------

_SECONDS = [date_to_ts("2017-07-14"), date_to_ts("2017-07-15") + 3600, date_to_ts("2018-03-01") + 59]


@pytest.mark.parametrize("values,fmt,expected", [
    (_SECONDS, "unix seconds", _SECONDS),
    ([t * 1000 + 999 for t in _SECONDS], "unix milliseconds", _SECONDS),
    ([t * 10**6 for t in _SECONDS], "unix microseconds", _SECONDS),
    ([20170714, 20170715, 20180301], "yyyymmdd dates", [date_to_ts("2017-07-14"), date_to_ts("2017-07-15"),
                                                        date_to_ts("2018-03-01")]),
    (["2017-07-14", "2017-07-15T01:00:00Z", "2018-03-01 02:00:59+02:00"], "ISO 8601 text", _SECONDS),
])
def test_time_formats_in_csv(tmp_path, values, fmt, expected):
    log = pd.DataFrame({"user": ["a", "a", "b"], "item": ["x", "y", "x"], "time": values, "cat": ["A", "B", "A"]})
    log.to_csv(tmp_path / "log.csv", index=False)
    ds = validate(_prepare(tmp_path / "log.csv", tmp_path / "ds", category_col="cat", history_end="2018-01-01"))
    assert sorted(ds.behaviors["ts"].tolist()) == sorted(expected)
    assert ds.meta["prep_report"]["time_format"] == fmt


@pytest.mark.parametrize("arrow_type", [pa.timestamp("s"), pa.timestamp("ms"), pa.timestamp("us", tz="UTC"),
                                        pa.timestamp("ns", tz="Europe/Paris"), pa.date32()])
def test_parquet_timestamp_columns(tmp_path, arrow_type):
    times = pd.to_datetime(["2017-07-14", "2017-07-15", "2018-03-01"], utc=True)
    column = (pa.array([t.date() for t in times], arrow_type) if arrow_type == pa.date32()
              else pa.array(times.tz_localize(None) if arrow_type.tz is None else times, arrow_type))
    pq.write_table(pa.table({"user": ["a", "a", "b"], "item": ["x", "y", "x"], "time": column,
                             "cat": ["A", "B", "A"]}), tmp_path / "log.parquet")
    ds = validate(_prepare(tmp_path / "log.parquet", tmp_path / "ds", category_col="cat", history_end="2018-01-01"))
    assert sorted(ds.behaviors["ts"].tolist()) == [date_to_ts("2017-07-14"), date_to_ts("2017-07-15"),
                                                   date_to_ts("2018-03-01")]
    assert ds.meta["prep_report"]["time_format"] == "timestamp column"


def test_yyyymmdd_strings_are_not_seconds(tmp_path):
    (tmp_path / "log.csv").write_text("user,item,time,cat\na,x,20170714,A\na,y,20170801,B\nb,x,20180102,A\n")
    ds = validate(_prepare(tmp_path / "log.csv", tmp_path / "ds", category_col="cat"))
    assert ds.meta["summary"]["first_date"] == "2017-07-14"  # not 1970-08-23


def test_unparseable_time_row_is_counted_with_its_format(tmp_path):
    log = _log()
    log["time"] = log["time"].astype(str)
    log.loc[5, "time"] = "2017-13-45"
    log.to_csv(tmp_path / "log.csv", index=False)
    ds = validate(_prepare(tmp_path / "log.csv", tmp_path / "ds", category_col="cat"))
    report = ds.meta["prep_report"]
    assert report["malformed_rows"] == 1
    assert report["first_malformed"] == "data row 5: column 'time' value '2017-13-45' is not a time (unix seconds)"


# ---------------------------------------------------------------------------------------
# Outliers and windows
# ---------------------------------------------------------------------------------------


def test_outlier_times_reported_and_out_of_the_windows(tmp_path):
    log = _log()  # 48 rows, 2015-2018
    extra = pd.DataFrame({"user": ["u0", "u1"], "item": ["i0", "i1"],
                          "time": [date_to_ts("1960-05-01"), date_to_ts("2100-01-01")], "cat": ["Books", "Music"]})
    pd.concat([log, extra]).to_csv(tmp_path / "log.csv", index=False)
    ds = validate(_prepare(tmp_path / "log.csv", tmp_path / "ds", category_col="cat"))
    report = ds.meta["prep_report"]
    assert report["outlier_times_dropped"] == 2
    assert report["outlier_time_examples"] == ["1960-05-01", "2100-01-01"]
    assert len(ds.behaviors) == 48 and ds.meta["summary"]["first_date"] >= "2015-01-01"
    assert ds.meta["history_end"] < "2018-01-01" and ds.meta["label_end"] <= "2018-01-02"
    assert 0.8 * 48 <= ds.meta["summary"]["history_behaviors"] < 48  # not 1 of 48, not all of them


def test_outlier_mask_spares_growing_logs_and_second_periods():
    rng = np.random.default_rng(1)
    growing = (date_to_ts("2018-01-01") - (rng.exponential(1.5, 5000) * YEAR)).astype(np.int64)  # a thin tail back
    assert not outlier_mask(growing).any()
    two_periods = np.r_[date_to_ts("2010-01-01") + rng.integers(0, 30 * DAY, 200),
                        date_to_ts("2018-01-01") + rng.integers(0, 30 * DAY, 800)]
    assert not outlier_mask(two_periods).any()
    spiked = np.r_[two_periods, 0, 0]  # ts = 0: a missing time written as zero
    assert outlier_mask(spiked).sum() == 2
    tiny = np.r_[date_to_ts("2020-01-01") + np.arange(8) * 40 * DAY, date_to_ts("2100-01-01")]
    assert outlier_mask(tiny).tolist() == [False] * 8 + [True]  # one row is always few enough


@pytest.mark.parametrize("kwargs,words", [
    ({"history_end": "2010-01-01"}, ["--history-end 2010-01-01 leaves no history", "2015-", "default would be"]),
    ({"history_end": "2030-01-01"}, ["no behaviour in the label window 2030-01-01", "earlier --history-end"]),
    ({"history_end": "2017-01-01", "label_end": "2016-01-01"}, ["--label-end 2016-01-01 must be after"]),
    ({"history_end": "2017-1-1"}, ["--history-end must be a date YYYY-MM-DD", "'2017-1-1'"]),
])
def test_windows_that_leave_a_task_without_users_are_errors(tmp_path, kwargs, words):
    _log().to_csv(tmp_path / "log.csv", index=False)
    with pytest.raises(DatasetError) as info:
        _prepare(tmp_path / "log.csv", tmp_path / "ds", category_col="cat", **kwargs)
    for word in words:
        assert word in str(info.value)
    rc = main(["tabular", "--behaviors", str(tmp_path / "log.csv"), "--user-col", "user", "--item-col", "item",
               "--time-col", "time", "--category-col", "cat", "--out", str(tmp_path / "ds")]
              + [x for key, value in kwargs.items() for x in (f"--{key.replace('_', '-')}", value)])
    assert rc == 1 and not (tmp_path / "ds").exists()


def test_profile_task_without_users_is_an_error(tmp_path):
    _log().to_csv(tmp_path / "log.csv", index=False)
    pd.DataFrame({"user": ["u0", "u1", "zz1", "zz2"], "vip": [None, None, "yes", "no"]}).to_csv(
        tmp_path / "users.csv", index=False)
    with pytest.raises(DatasetError, match=r"users.csv: task 'vip' has no user"):
        _prepare(tmp_path / "log.csv", tmp_path / "ds", users=tmp_path / "users.csv")


# ---------------------------------------------------------------------------------------
# Empty and broken files
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("content,words", [
    ("", ["log.csv", "the file is empty"]),
    ("\n\n", ["log.csv", "the file is empty"]),
    ("user,item,time\n", ["log.csv", "header but no data rows"]),
])
def test_empty_and_header_only_csv(tmp_path, content, words):
    (tmp_path / "log.csv").write_text(content)
    with pytest.raises(DatasetError) as info:
        _prepare(tmp_path / "log.csv", tmp_path / "ds")
    for word in words:
        assert word in str(info.value)


def test_truncated_gzip_and_corrupt_parquet_name_the_file(tmp_path):
    data = gzip.compress(_log(n_rows=3000).to_csv(index=False).encode())
    (tmp_path / "log.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"log.csv.gz: cannot be read"):
        _prepare(tmp_path / "log.csv.gz", tmp_path / "ds", category_col="cat")
    (tmp_path / "log.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match=r"log.parquet: cannot be read as Parquet"):
        _prepare(tmp_path / "log.parquet", tmp_path / "ds")


def test_failed_prep_leaves_the_previous_dataset(tmp_path):
    _log().to_csv(tmp_path / "log.csv", index=False)
    _prepare(tmp_path / "log.csv", tmp_path / "ds", category_col="cat")
    before = {p.name: p.read_bytes() for p in (tmp_path / "ds").iterdir()}
    other = _log(n_users=3, seed=5)
    other["user"] = "x" + other["user"]
    other.to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(DatasetError):
        _prepare(tmp_path / "other.csv", tmp_path / "ds", category_col="cat", history_end="2000-01-01")
    assert {p.name: p.read_bytes() for p in (tmp_path / "ds").iterdir()} == before
    validate(tmp_path / "ds")


# ---------------------------------------------------------------------------------------
# Label-free logs and the accounting of rows
# ---------------------------------------------------------------------------------------


def test_ids_only_tab_log_gets_the_churn_task(tmp_path):
    """Needs the schema's ``activity`` rule kind (schema branch of issue 11)."""
    log = _log()[["user", "item", "time"]]
    log.to_csv(tmp_path / "log.csv", sep="\t", index=False)
    ds = validate(_prepare(tmp_path / "log.csv", tmp_path / "ds"))
    assert ds.tasks == [CHURN_TASK]
    assert ds.meta["summary"]["tasks"]["active_in_label_window"]["users"] > 0
    assert "active_in_label_window" in ds.meta["notes"]


def test_report_counts_add_up_to_the_input_rows(tmp_path):
    log = _log(n_rows=60)
    lines = log.to_csv(index=False).splitlines()
    lines += [lines[4], lines[9]]  # 2 duplicates
    lines += ["u1,i1,1500000000,Books,EXTRA"]  # a line with too many fields
    lines += ["u2,,1500000000,Books", ",i2,1500000000,Books", "u3,i3,,Books", "u3,i3,soon,Books"]  # empty / bad
    lines += [f"u4,i4,{date_to_ts('1900-01-01')},Books"]  # an outlier time
    (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
    ds = validate(_prepare(tmp_path / "log.csv", tmp_path / "ds", category_col="cat", chunk_size=16))
    report = ds.meta["prep_report"]
    assert report["rows"] == len(lines) - 1 == 60 + 2 + 1 + 4 + 1
    assert (report["malformed_rows"], report["duplicate_rows_dropped"], report["outlier_times_dropped"]) == (5, 2, 1)
    assert report["rows"] == (report["behaviors"] + report["malformed_rows"] + report["duplicate_rows_dropped"]
                              + report["outlier_times_dropped"])
    assert report["behaviors"] == len(ds.behaviors) == 60
    assert report["first_malformed"].startswith("line 64: expected 4 fields, saw 5")
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["prep_report"]["rows"] == 68


def test_non_utf8_file_is_named(tmp_path):
    (tmp_path / "log.csv").write_bytes("user,item,time,title\nu1,i1,1500000000,Caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"log.csv: cannot be read as CSV .*UTF-8"):
        _prepare(tmp_path / "log.csv", tmp_path / "ds", title_col="title")
