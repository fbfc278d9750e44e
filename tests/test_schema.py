"""The dataset contract validator: each broken folder is rejected with file, column and row."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_prep.schema import DatasetError, date_to_ts, load_dataset, task_labels, ts_to_date, validate, write_dataset


def _tiny_frames():
    items = pd.DataFrame({"item_id": [0, 1, 2], "title": ["red ball", "blue book", "green pen"],
                          "category": ["Toys", "Books", "Office|Books"]})
    behaviors = pd.DataFrame({
        "user_id": [1, 1, 1, 2, 2],
        "item_id": [0, 1, 2, 1, 0],
        "ts": [date_to_ts("2017-01-05"), date_to_ts("2017-06-01"), date_to_ts("2018-02-01"),
               date_to_ts("2017-03-01"), date_to_ts("2017-04-01")],
    })
    users = pd.DataFrame({"user_id": [1, 2, 3], "gender": ["F", "M", None]})
    meta = {"name": "toy", "source": "test", "history_start": None, "history_end": "2018-01-01",
            "label_end": "2018-11-01",
            "tasks": [{"name": "future_Books", "kind": "binary", "rule": {"future_category": "Books"}},
                      {"name": "gender", "kind": "binary", "rule": {"profile": "gender"}}]}
    return items, behaviors, users, meta


@pytest.fixture()
def toy(tmp_path) -> Path:
    out = tmp_path / "toy"
    write_dataset(out, *_tiny_frames())
    return out


def _edit(folder: Path, file: str, fn) -> None:
    """Apply ``fn`` to one parquet frame (or the meta dict) of a dataset folder, in place."""
    if file == "dataset.json":
        meta = json.loads((folder / file).read_text())
        fn(meta)
        (folder / file).write_text(json.dumps(meta))
    else:
        frame = pd.read_parquet(folder / file)
        frame = fn(frame)
        frame.to_parquet(folder / file, index=False)


def test_dates_round_trip():
    assert date_to_ts("2018-01-01") == 1514764800
    assert ts_to_date(1514764800 + 3600) == "2018-01-01"
    assert date_to_ts(None) is None
    with pytest.raises(ValueError):
        date_to_ts("2018/01/01")


def test_write_casts_and_loads(toy):
    ds = load_dataset(toy)
    assert ds.items["item_id"].dtype == np.int32
    assert ds.behaviors["user_id"].dtype == np.int64 and ds.behaviors["ts"].dtype == np.int64
    assert ds.behaviors["item_id"].dtype == np.int32
    assert len(ds.history()) == 4 and len(ds.label_window()) == 1
    assert ds.label_window()["item_id"].tolist() == [2]
    summary = ds.meta["summary"]
    assert summary["behaviors"] == 5 and summary["history_behaviors"] == 4 and summary["categories"] == 3
    assert summary["tasks"]["future_Books"] == {"users": 2, "positive_rate": 0.5}  # Office|Books counts
    uid, y = task_labels(ds, ds.tasks[1])
    assert uid.tolist() == [1, 2] and y.tolist() == ["F", "M"]  # user 3: no history, null label


BROKEN = [
    # (file edited, edit, words the message must contain)
    ("behaviors.parquet",
     lambda df: df.assign(ts=df["ts"].to_numpy()[[0, 2, 1, 3, 4]]),
     ["behaviors.parquet", "'ts'", "sorted within user_id", "row 2", "user_id=1"]),
    ("behaviors.parquet",
     lambda df: df.iloc[[3, 4, 0, 1, 2]],
     ["behaviors.parquet", "'user_id'", "sorted", "row 2", "user_id=1"]),
    ("items.parquet",
     lambda df: df.assign(item_id=np.array([0, 1, 3], dtype=np.int32)),
     ["items.parquet", "'item_id'", "dense", "row 2", "item_id=3"]),
    ("behaviors.parquet",
     lambda df: df.assign(item_id=np.array([0, 1, 7, 1, 0], dtype=np.int32)),
     ["behaviors.parquet", "'item_id'", "absent from items.parquet", "row 2", "item_id=7"]),
    ("behaviors.parquet",
     lambda df: df.drop(columns=["ts"]),
     ["behaviors.parquet", "missing required column 'ts'", "row 0", "user_id=1"]),
    ("behaviors.parquet",
     lambda df: df.assign(ts=df["ts"].astype(float)),
     ["behaviors.parquet", "'ts'", "integer dtype", "float64", "row 0"]),
    ("behaviors.parquet",
     lambda df: df.assign(ts=df["ts"].astype(float).where(df.index != 3)),
     ["behaviors.parquet", "'ts'", "null/NaN", "row 3", "user_id=2"]),
    ("users.parquet",
     lambda df: df[df["user_id"] != 2],
     ["behaviors.parquet", "'user_id'", "absent from users.parquet", "row 3", "user_id=2"]),
    ("users.parquet",
     lambda df: pd.concat([df, df.iloc[[0]]]),
     ["users.parquet", "'user_id'", "unique", "row 3", "user_id=1"]),
    ("items.parquet",
     lambda df: df.assign(title=pd.Series(["a", None, "c"], dtype=object)),
     ["items.parquet", "'title'", "non-null", "row 1", "item_id=1"]),
    ("dataset.json",
     lambda m: m.update(history_end="2018-13-01"),
     ["dataset.json", "'history_end'", "ISO date", "2018-13-01"]),
    ("dataset.json",
     lambda m: m.update(label_end="2017-06-01"),
     ["dataset.json", "'history_end' < 'label_end'", "2017-06-01"]),
    ("dataset.json",
     lambda m: m["tasks"].append({"name": "future_Cars", "kind": "binary", "rule": {"future_category": "Cars"}}),
     ["dataset.json", "tasks[2]", "unknown category 'Cars'", "Books"]),
    ("dataset.json",
     lambda m: m["tasks"].append({"name": "age", "kind": "multiclass", "rule": {"profile": "age_group"}}),
     ["dataset.json", "tasks[2]", "unknown users.parquet column 'age_group'", "gender"]),
    ("dataset.json",
     lambda m: m["tasks"].append({"name": "x", "kind": "regression", "rule": {"profile": "gender"}}),
     ["dataset.json", "tasks[2]", "'kind'"]),
    ("dataset.json",
     lambda m: m.pop("label_end"),
     ["dataset.json", "missing required key 'label_end'"]),
    ("dataset.json",
     lambda m: m["tasks"].append({"name": "churn", "kind": "multiclass", "rule": {"activity": "label_window"}}),
     ["dataset.json", "tasks[2]", "activity rule makes a binary task"]),
    ("dataset.json",
     lambda m: m["tasks"].append({"name": "churn", "kind": "binary", "rule": {"activity": "history"}}),
     ["dataset.json", "tasks[2]", "rule activity must be one of 'label_window'"]),
    ("dataset.json",
     lambda m: m["tasks"].append({"name": "churn", "kind": "binary",
                                  "rule": {"activity": "label_window", "population": "all"}}),
     ["dataset.json", "tasks[2]", "unknown rule keys ['population']"]),
    ("dataset.json",
     lambda m: m["tasks"].append({"name": "x", "kind": "binary",
                                  "rule": {"activity": "label_window", "profile": "gender"}}),
     ["dataset.json", "tasks[2]", "exactly one of 'future_category', 'profile' or 'activity'"]),
    ("behaviors.parquet",
     lambda df: df.assign(ts=pd.to_datetime(df["ts"], unit="s").astype("datetime64[ms]")),
     ["behaviors.parquet", "'ts'", "holds datetimes (dtype datetime64[ms])", "unix seconds", "pd.Timedelta"]),
]


@pytest.mark.parametrize("file,edit,words", BROKEN, ids=[f"{b[0]}:{'/'.join(b[2][1:3])}" for b in BROKEN])
def test_validator_rejects_broken_folder(toy, file, edit, words):
    _edit(toy, file, edit)
    with pytest.raises(DatasetError) as info:
        validate(toy)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_missing_file(toy):
    (toy / "users.parquet").unlink()
    with pytest.raises(DatasetError, match="users.parquet: file not found"):
        validate(toy)


def test_write_dataset_checks_before_writing(tmp_path):
    items, behaviors, users, meta = _tiny_frames()
    with pytest.raises(DatasetError, match="'ts' must be sorted"):
        write_dataset(tmp_path / "bad", items, behaviors.iloc[[1, 0, 2, 3, 4]], users, meta)
    assert not (tmp_path / "bad" / "dataset.json").exists()


def test_activity_task_labels_by_hand(tmp_path):
    """Label 1 = any label-window behaviour; only users with history are labelled."""
    items, behaviors, users, meta = _tiny_frames()
    # user 4 acts only in the label window (no history: not labelled); user 3 never acts
    behaviors = pd.concat([behaviors, pd.DataFrame({"user_id": [4], "item_id": [0], "ts": [date_to_ts("2018-03-01")]})],
                          ignore_index=True)
    users = pd.concat([users, pd.DataFrame({"user_id": [4], "gender": ["F"]})], ignore_index=True)
    meta["tasks"] = [{"name": "active_in_label_window", "kind": "binary", "rule": {"activity": "label_window"}}]
    ds = write_dataset(tmp_path / "churn", items, behaviors, users, meta)
    uid, y = task_labels(ds, ds.tasks[0])
    assert uid.tolist() == [1, 2] and y.tolist() == [1, 0]  # user 1 acts on 2018-02-01, user 2 not after 2017-04
    assert y.dtype == np.int64
    assert validate(tmp_path / "churn").meta["summary"]["tasks"]["active_in_label_window"] == {
        "users": 2, "positive_rate": 0.5}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_failed_write_leaves_the_previous_dataset_intact(toy, tmp_path):
    """A prep that streams new behaviours and then fails the contract check changes nothing in ``out``."""
    from data_prep.schema import behavior_writer

    before = _files(toy)
    items, behaviors, users, meta = _tiny_frames()
    with behavior_writer(toy) as write:  # a different, longer log
        write(np.array([1, 1, 2]), np.array([0, 0, 1]), np.array([10, 20, 30]))
    meta["tasks"].append({"name": "future_Cars", "kind": "binary", "rule": {"future_category": "Cars"}})
    with pytest.raises(DatasetError, match="unknown category 'Cars'"):
        write_dataset(toy, items, None, users, meta, extras={"id_map_items.parquet": items[["item_id"]]})
    assert _files(toy) == before
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())  # the staging folder is removed
    assert len(validate(toy).behaviors) == 5

    with pytest.raises(DatasetError, match="'ts' must be sorted"):  # in-memory behaviours, same guarantee
        write_dataset(toy, items, behaviors.iloc[[1, 0, 2, 3, 4]], users, meta)
    assert _files(toy) == before


def test_write_replaces_a_dataset_and_writes_extras(toy, tmp_path):
    items, behaviors, users, meta = _tiny_frames()
    stale = tmp_path / ".toy.partial"  # left by a prep that was killed
    stale.mkdir()
    (stale / "behaviors.parquet").write_bytes(b"half a file")
    id_map = pd.DataFrame({"item_id": [0, 1, 2], "key": ["a", "b", "c"]})
    write_dataset(toy, items, behaviors.iloc[:3], users, meta, extras={"id_map_items.parquet": id_map})
    assert len(validate(toy).behaviors) == 3
    assert pd.read_parquet(toy / "id_map_items.parquet").equals(id_map)
    assert not stale.exists()
    with pytest.raises(ValueError, match="contract files"):
        write_dataset(toy, items, behaviors, users, meta, extras={"items.parquet": items})
    with pytest.raises(DatasetError, match="needs `with behavior_writer"):
        write_dataset(tmp_path / "never_streamed", items, None, users, meta)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(DatasetError, match="a_file: exists and is not a folder"):
        write_dataset(tmp_path / "a_file", items, behaviors, users, meta)


def test_cli_validate(toy, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "data_prep", "validate", str(toy)], capture_output=True, text=True)
    assert ok.returncode == 0 and "behaviors: 5" in ok.stdout
    broken = tmp_path / "broken"
    shutil.copytree(toy, broken)
    _edit(broken, "items.parquet", lambda df: df.assign(item_id=np.array([0, 2, 1], dtype=np.int32)))
    bad = subprocess.run([sys.executable, "-m", "data_prep", "validate", str(broken)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "items.parquet: column 'item_id'" in bad.stderr and "Traceback" not in bad.stderr
