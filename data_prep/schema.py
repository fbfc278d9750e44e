"""The dataset folder contract (docs/architecture.md, section 1) and its validator.

A dataset is a folder with ``items.parquet``, ``behaviors.parquet``, ``users.parquet`` and
``dataset.json``. Every source in ``data_prep`` ends with :func:`write_dataset`, which
casts the dtypes, checks the contract in memory and computes :func:`summarize`. Every
consumer starts with :func:`load_dataset`.

Writes are staged: :func:`behavior_writer` and :func:`write_dataset` write into a hidden
folder beside ``out`` (``.<name>.partial``), and only after the contract check passes are
its files moved into ``out``, ``dataset.json`` removed first and written last. A prep that
fails (bad data, a full disk) leaves the previous dataset in ``out`` as it was, and never a
mix of new and old files that loads: a folder without ``dataset.json`` does not load. One
prep per output folder at a time; a stale ``.partial`` folder left by a killed prep is
removed by the next prep into the same folder.

Task rules (``dataset.json["tasks"][k]["rule"]``, exactly one of these keys; labels by
:func:`task_labels`, always over users with at least one history behaviour):

- ``{"future_category": C}`` (binary; optional ``"population": "active_in_label_window"``):
  1 when the user has a label-window behaviour on an item whose ``category`` (split on
  ``|``) contains C. Category preference identification (paper, section 3.2).
- ``{"profile": COLUMN}`` (binary or multiclass): the ``users.parquet`` column, users with a
  null label left out. User profiling prediction (paper, section 3.2).
- ``{"activity": "label_window"}`` (binary): 1 when the user has at least one behaviour in
  the label window, 0 when they have none (churn). Label-free: it needs neither categories
  nor profile columns, so every log can evaluate at least this task, e.g.
  ``{"name": "active_in_label_window", "kind": "binary", "rule": {"activity": "label_window"}}``.

The checks are vectorised numpy over whole columns (a default dataset has 1e6 behaviours,
the paper's Amazon split 4e7). A broken folder raises :class:`DatasetError`, whose message
names the file, the column (or ``dataset.json`` key) and one offending example row, e.g.::

    behaviors.parquet: column 'ts' must be sorted within user_id; row 1042
    (user_id=17, item_id=3, ts=1500000000) comes after ts=1500003600
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lurm_lite.io import load_json, save_json

ITEMS_FILE = "items.parquet"
BEHAVIORS_FILE = "behaviors.parquet"
USERS_FILE = "users.parquet"
META_FILE = "dataset.json"

TASK_KINDS = ("binary", "multiclass")
POPULATIONS = ("all", "active_in_label_window")
RULE_KEYS = ("future_category", "profile", "activity")
ACTIVITY_WINDOWS = ("label_window",)  # the windows an activity rule may name
REQUIRED_META_KEYS = ("name", "source", "history_start", "history_end", "label_end", "tasks")

# Column dtypes that write_dataset casts to (the validator accepts any integer kind).
ITEM_DTYPES = {"item_id": np.int32}
BEHAVIOR_DTYPES = {"user_id": np.int64, "item_id": np.int32, "ts": np.int64}
USER_DTYPES = {"user_id": np.int64}
BEHAVIORS_SCHEMA = pa.schema([("user_id", pa.int64()), ("item_id", pa.int32()), ("ts", pa.int64())])

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class DatasetError(ValueError):
    """A dataset folder breaks the contract; the message names file, column and example row."""


# ---------------------------------------------------------------------------------------
# Dates
# ---------------------------------------------------------------------------------------


def date_to_ts(date: str | None) -> int | None:
    """ISO ``YYYY-MM-DD`` -> unix seconds at UTC midnight (``None`` stays ``None``).

    >>> date_to_ts("2018-01-01")
    1514764800
    """
    if date is None:
        return None
    if not isinstance(date, str) or not _ISO_DATE.match(date):
        raise ValueError(f"expected an ISO date YYYY-MM-DD, got {date!r}")
    day = dt.date.fromisoformat(date)
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp())


def ts_to_date(ts: int) -> str:
    """Unix seconds -> ISO ``YYYY-MM-DD`` of that UTC day."""
    return dt.datetime.fromtimestamp(int(ts), tz=dt.timezone.utc).date().isoformat()


# ---------------------------------------------------------------------------------------
# The Dataset object
# ---------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """A loaded dataset folder (docs/architecture.md, section 1).

    ``behaviors`` holds history and label-window behaviours, sorted by (user_id, ts);
    :meth:`history` and :meth:`label_window` cut it by the windows of ``meta``.
    """

    items: pd.DataFrame
    behaviors: pd.DataFrame
    users: pd.DataFrame
    meta: dict[str, Any]
    path: Path | None = field(default=None)

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def tasks(self) -> list[dict[str, Any]]:
        return self.meta["tasks"]

    @property
    def history_start_ts(self) -> int | None:
        """Start of the history window in unix seconds (``None``: since the first behaviour)."""
        return date_to_ts(self.meta.get("history_start"))

    @property
    def history_end_ts(self) -> int:
        """End of the history window = start of the label window, unix seconds."""
        return date_to_ts(self.meta["history_end"])

    @property
    def label_end_ts(self) -> int:
        """End (exclusive) of the label window, unix seconds."""
        return date_to_ts(self.meta["label_end"])

    def history_mask(self) -> np.ndarray:
        """Boolean mask of behaviours with ``history_start <= ts < history_end``."""
        ts = self.behaviors["ts"].to_numpy()
        mask = ts < self.history_end_ts
        if self.history_start_ts is not None:
            mask &= ts >= self.history_start_ts
        return mask

    def label_mask(self) -> np.ndarray:
        """Boolean mask of behaviours with ``history_end <= ts < label_end``."""
        ts = self.behaviors["ts"].to_numpy()
        return (ts >= self.history_end_ts) & (ts < self.label_end_ts)

    def history(self) -> pd.DataFrame:
        """History-window behaviours, still sorted by (user_id, ts), index reset."""
        return self.behaviors[self.history_mask()].reset_index(drop=True)

    def label_window(self) -> pd.DataFrame:
        """Label-window behaviours, still sorted by (user_id, ts), index reset."""
        return self.behaviors[self.label_mask()].reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# Checks (vectorised; each raises DatasetError naming file, column and example row)
# ---------------------------------------------------------------------------------------


def _row(df: pd.DataFrame, i: int, columns: tuple[str, ...] | None = None) -> str:
    """``row 12 (user_id=3, ts=1500000000)`` for error messages."""
    cols = [c for c in (columns or tuple(df.columns)) if c in df.columns]
    values = ", ".join(f"{c}={_show(df[c].iloc[i])}" for c in cols)
    return f"row {i} ({values})"


def _show(value: Any) -> str:
    """A cell value for a message: strings quoted, numpy scalars as plain numbers."""
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    return str(value.item() if isinstance(value, np.generic) else value)


def _check_columns(df: pd.DataFrame, file: str, required: tuple[str, ...]) -> None:
    for col in required:
        if col not in df.columns:
            example = _row(df, 0) if len(df) else "the table is empty"
            raise DatasetError(
                f"{file}: missing required column {col!r} (columns: {', '.join(map(str, df.columns)) or 'none'}); "
                f"example {example}"
            )


def _check_not_empty(df: pd.DataFrame, file: str) -> None:
    if len(df) == 0:
        raise DatasetError(f"{file}: the table has no rows (columns: {', '.join(map(str, df.columns))})")


def _check_integer(df: pd.DataFrame, file: str, col: str) -> np.ndarray:
    """The column as a numpy integer array; nulls and non-integer dtypes are errors."""
    series = df[col]
    null = series.isna().to_numpy()
    if null.any():
        i = int(np.argmax(null))
        raise DatasetError(f"{file}: column {col!r} has null/NaN values; first at {_row(df, i)}")
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        raise DatasetError(
            f"{file}: column {col!r} holds datetimes (dtype {series.dtype}), the contract wants unix seconds "
            f"as int64; convert with (df[{col!r}] - pd.Timestamp(0, tz=df[{col!r}].dt.tz)) // pd.Timedelta(seconds=1); "
            f"example {_row(df, 0)}"
        )
    if not pd.api.types.is_integer_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        raise DatasetError(
            f"{file}: column {col!r} must have an integer dtype, got {series.dtype}; example {_row(df, 0)}"
        )
    return series.to_numpy()


def _check_string(df: pd.DataFrame, file: str, col: str) -> None:
    series = df[col]
    null = series.isna().to_numpy()
    if null.any():
        i = int(np.argmax(null))
        raise DatasetError(f"{file}: column {col!r} must be non-null text; first null at {_row(df, i)}")
    if not (pd.api.types.is_string_dtype(series.dtype) and pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty")):
        kind = pd.api.types.infer_dtype(series, skipna=True)
        raise DatasetError(
            f"{file}: column {col!r} must hold strings, got dtype {series.dtype} ({kind}); example {_row(df, 0)}"
        )


def _check_items(items: pd.DataFrame) -> None:
    f = ITEMS_FILE
    _check_columns(items, f, ("item_id", "title", "category"))
    _check_not_empty(items, f)
    item_id = _check_integer(items, f, "item_id")
    wrong = np.flatnonzero(item_id != np.arange(len(item_id)))
    if wrong.size:
        i = int(wrong[0])
        raise DatasetError(
            f"{f}: column 'item_id' must be dense 0..n_items-1 in order; {_row(items, i, ('item_id', 'title'))} "
            f"should have item_id={i}"
        )
    for col in ("title", "category") + (("category_path",) if "category_path" in items.columns else ()):
        _check_string(items, f, col)
    empty_cat = np.flatnonzero(items["category"].str.len().to_numpy() == 0)
    if empty_cat.size:
        raise DatasetError(f"{f}: column 'category' must not be empty; {_row(items, int(empty_cat[0]))}")


def _check_users(users: pd.DataFrame) -> np.ndarray:
    """Checks users.parquet; returns its user ids sorted ascending."""
    f = USERS_FILE
    _check_columns(users, f, ("user_id",))
    _check_not_empty(users, f)
    uid = _check_integer(users, f, "user_id")
    order = np.argsort(uid, kind="stable")
    sorted_uid = uid[order]
    dup = np.flatnonzero(sorted_uid[1:] == sorted_uid[:-1])
    if dup.size:
        i = int(order[dup[0] + 1])
        raise DatasetError(f"{f}: column 'user_id' must be unique; {_row(users, i, ('user_id',))} appears twice")
    return sorted_uid


def _check_behaviors(behaviors: pd.DataFrame, n_items: int, user_ids: np.ndarray) -> None:
    f = BEHAVIORS_FILE
    cols = ("user_id", "item_id", "ts")
    _check_columns(behaviors, f, cols)
    _check_not_empty(behaviors, f)
    user = _check_integer(behaviors, f, "user_id")
    item = _check_integer(behaviors, f, "item_id")
    ts = _check_integer(behaviors, f, "ts")

    bad = np.flatnonzero((item < 0) | (item >= n_items))
    if bad.size:
        raise DatasetError(
            f"{f}: column 'item_id' refers to an item absent from {ITEMS_FILE} (item_id 0..{n_items - 1}); "
            f"{_row(behaviors, int(bad[0]), cols)}"
        )

    user_down = user[1:] < user[:-1]
    if user_down.any():
        i = int(np.argmax(user_down)) + 1
        raise DatasetError(
            f"{f}: column 'user_id' must be sorted ascending (rows sorted by user_id, ts); "
            f"{_row(behaviors, i, cols)} comes after user_id={user[i - 1]}"
        )
    ts_down = (user[1:] == user[:-1]) & (ts[1:] < ts[:-1])
    if ts_down.any():
        i = int(np.argmax(ts_down)) + 1
        raise DatasetError(
            f"{f}: column 'ts' must be sorted within user_id; {_row(behaviors, i, cols)} comes after ts={ts[i - 1]}"
        )

    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    pos = np.searchsorted(user_ids, user[starts])
    known = (pos < len(user_ids)) & (user_ids[np.minimum(pos, len(user_ids) - 1)] == user[starts])
    if not known.all():
        i = int(starts[np.argmin(known)])
        raise DatasetError(
            f"{f}: column 'user_id' refers to a user absent from {USERS_FILE}; {_row(behaviors, i, cols)}"
        )


def _check_date(meta: dict[str, Any], key: str, allow_null: bool = False) -> int | None:
    value = meta.get(key)
    if value is None and allow_null:
        return None
    try:
        if value is None:
            raise ValueError(key)
        return date_to_ts(value)
    except ValueError:
        raise DatasetError(f"{META_FILE}: key {key!r} must be an ISO date YYYY-MM-DD, got {value!r}") from None


def _categories(items: pd.DataFrame) -> set[str]:
    """Distinct top-level categories (a ``|``-joined category counts for each part)."""
    return set(items["category"].drop_duplicates().str.split("|").explode())


def _check_meta(meta: dict[str, Any], items: pd.DataFrame, users: pd.DataFrame) -> None:
    f = META_FILE
    if not isinstance(meta, dict):
        raise DatasetError(f"{f}: must hold a JSON object, got {type(meta).__name__}")
    for key in REQUIRED_META_KEYS:
        if key not in meta:
            raise DatasetError(f"{f}: missing required key {key!r} (keys: {', '.join(meta)})")
    for key in ("name", "source"):
        if not isinstance(meta[key], str) or not meta[key]:
            raise DatasetError(f"{f}: key {key!r} must be a non-empty string, got {meta[key]!r}")
    start = _check_date(meta, "history_start", allow_null=True)
    end = _check_date(meta, "history_end")
    label_end = _check_date(meta, "label_end")
    if start is not None and not start < end:
        raise DatasetError(
            f"{f}: keys 'history_start' < 'history_end' required, got history_start={meta['history_start']!r}, "
            f"history_end={meta['history_end']!r}"
        )
    if not end < label_end:
        raise DatasetError(
            f"{f}: keys 'history_end' < 'label_end' required, got history_end={meta['history_end']!r}, "
            f"label_end={meta['label_end']!r}"
        )
    tasks = meta["tasks"]
    if not isinstance(tasks, list):
        raise DatasetError(f"{f}: key 'tasks' must be a list, got {tasks!r}")
    categories = _categories(items)
    names: set[str] = set()
    for k, task in enumerate(tasks):
        where = f"{f}: key 'tasks[{k}]' {task!r}"
        if not isinstance(task, dict) or not {"name", "kind", "rule"} <= set(task):
            raise DatasetError(f"{where} must be an object with 'name', 'kind' and 'rule'")
        if not isinstance(task["name"], str) or not task["name"] or task["name"] in names:
            raise DatasetError(f"{where}: 'name' must be a non-empty string, unique among tasks")
        names.add(task["name"])
        if task["kind"] not in TASK_KINDS:
            raise DatasetError(f"{where}: 'kind' must be one of {', '.join(TASK_KINDS)}")
        rule = task["rule"]
        if not isinstance(rule, dict) or len(set(RULE_KEYS) & set(rule)) != 1:
            raise DatasetError(f"{where}: 'rule' must hold exactly one of 'future_category', 'profile' or 'activity'")
        if "activity" in rule:
            if task["kind"] != "binary":
                raise DatasetError(f"{where}: an activity rule makes a binary task")
            if rule["activity"] not in ACTIVITY_WINDOWS:
                raise DatasetError(f"{where}: rule activity must be one of {', '.join(map(repr, ACTIVITY_WINDOWS))}, "
                                   f'e.g. {{"activity": "label_window"}}')
            extra = set(rule) - {"activity"}
        elif "future_category" in rule:
            if task["kind"] != "binary":
                raise DatasetError(f"{where}: a future_category rule makes a binary task")
            if rule["future_category"] not in categories:
                raise DatasetError(
                    f"{where}: rule future_category names unknown category {rule['future_category']!r}; "
                    f"{ITEMS_FILE} column 'category' has: {', '.join(sorted(categories)[:20])}"
                )
            if rule.get("population", "all") not in POPULATIONS:
                raise DatasetError(f"{where}: 'population' must be one of {', '.join(POPULATIONS)}")
            extra = set(rule) - {"future_category", "population"}
        else:
            column = rule["profile"]
            if column == "user_id" or column not in users.columns:
                raise DatasetError(
                    f"{where}: rule profile names unknown {USERS_FILE} column {column!r}; "
                    f"profile columns: {', '.join(c for c in users.columns if c != 'user_id') or 'none'}"
                )
            extra = set(rule) - {"profile"}
        if extra:
            raise DatasetError(f"{where}: unknown rule keys {sorted(extra)}")


def check(items: pd.DataFrame, behaviors: pd.DataFrame, users: pd.DataFrame, meta: dict[str, Any],
          path: Path | None = None) -> Dataset:
    """Check in-memory frames and metadata against the contract; returns the ``Dataset``."""
    _check_items(items)
    user_ids = _check_users(users)
    _check_behaviors(behaviors, len(items), user_ids)
    _check_meta(meta, items, users)
    return Dataset(items=items, behaviors=behaviors, users=users, meta=meta, path=path)


# ---------------------------------------------------------------------------------------
# Loading, validating, writing
# ---------------------------------------------------------------------------------------


def _read_parquet(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(f"{path.name}: file not found in {path.parent}")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DatasetError(f"{path.name}: cannot be read as Parquet ({exc})") from None


def load_dataset(path: str | Path, check_contract: bool = True) -> Dataset:
    """Load a dataset folder; with ``check_contract`` (default) validate it first.

    Raises :class:`DatasetError` for a folder that breaks the contract.
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: not a dataset folder (no such directory)")
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise DatasetError(f"{META_FILE}: file not found in {path}")
    try:
        meta = load_json(meta_path)
    except ValueError as exc:
        raise DatasetError(f"{META_FILE}: not valid JSON ({exc})") from None
    items = _read_parquet(path / ITEMS_FILE)
    behaviors = _read_parquet(path / BEHAVIORS_FILE)
    users = _read_parquet(path / USERS_FILE)
    if check_contract:
        return check(items, behaviors, users, meta, path=path)
    return Dataset(items=items, behaviors=behaviors, users=users, meta=meta, path=path)


def validate(path: str | Path) -> Dataset:
    """Validate a dataset folder against the contract and return it loaded."""
    return load_dataset(path, check_contract=True)


def _cast(df: pd.DataFrame, dtypes: dict[str, Any], file: str) -> pd.DataFrame:
    """Cast integer columns to the contract dtypes (after the checks accepted them)."""
    df = df.reset_index(drop=True)
    for col, dtype in dtypes.items():
        if col in df.columns and df[col].dtype != dtype:
            values = df[col].to_numpy()
            cast = values.astype(dtype)
            if not np.array_equal(cast, values):
                i = int(np.argmax(cast != values))
                raise DatasetError(f"{file}: column {col!r} overflows {np.dtype(dtype).name}; {_row(df, i, (col,))}")
            df[col] = cast
    return df


def _staging_dir(out: Path) -> Path:
    """The hidden folder beside ``out`` where a prep's files wait for the contract check."""
    out = out.resolve()
    return out.parent / f".{out.name}.partial"


def _fresh_staging_dir(out: Path) -> Path:
    """An empty staging folder for ``out`` (a stale one from a killed prep is removed)."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder; give the output a folder path, e.g. {out}_dataset")
    staging = _staging_dir(out)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _publish(staging: Path, out: Path) -> None:
    """Move the staged files into ``out``: ``dataset.json`` removed first and written last.

    Between the two steps the folder has no ``dataset.json`` and does not load, so a crash
    there never leaves new files beside an old ``dataset.json``. Files of ``out`` that the
    new dataset does not write (e.g. a ``ground_truth/`` folder) are left as they are.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)
    for path in sorted(staging.iterdir()):
        if path.name != META_FILE:
            os.replace(path, out / path.name)
    os.replace(staging / META_FILE, out / META_FILE)
    staging.rmdir()


@contextlib.contextmanager
def behavior_writer(out: str | Path) -> Iterator[Any]:
    """Write ``behaviors.parquet`` chunk by chunk, for sources too large to hold as a frame.

    Yields ``write(user_id, item_id, ts)``; call it with chunks whose concatenation is
    sorted by (user_id, ts). The file is written into the staging folder of ``out`` (see
    the module docstring), not into ``out``; then call :func:`write_dataset` with
    ``behaviors=None``, which checks it and moves it into ``out`` with the other files.
    An exception inside the block removes the staging folder.
    """
    staging = _fresh_staging_dir(Path(out))
    try:
        with pq.ParquetWriter(staging / BEHAVIORS_FILE, BEHAVIORS_SCHEMA) as writer:

            def write(user_id: np.ndarray, item_id: np.ndarray, ts: np.ndarray) -> None:
                writer.write_table(
                    pa.table(
                        {
                            "user_id": np.asarray(user_id, dtype=np.int64),
                            "item_id": np.asarray(item_id, dtype=np.int32),
                            "ts": np.asarray(ts, dtype=np.int64),
                        },
                        schema=BEHAVIORS_SCHEMA,
                    )
                )

            yield write
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_dataset(out: str | Path, items: pd.DataFrame, behaviors: pd.DataFrame | None,
                  users: pd.DataFrame, meta: dict[str, Any],
                  extras: dict[str, pd.DataFrame] | None = None) -> Dataset:
    """Check, cast and write a dataset folder; returns the written ``Dataset``.

    ``behaviors=None`` means ``behaviors.parquet`` was already streamed with
    :func:`behavior_writer(out) <behavior_writer>`. ``extras`` are further tables of the
    dataset written beside the contract files, by file name (e.g. the id maps
    ``{"id_map_users.parquet": frame}``), so that they too appear only with a valid dataset.
    The contract is checked in memory before anything is written; dtypes are cast to item_id
    int32, user_id int64, ts int64; ``meta["summary"]`` is set to :func:`summarize`.
    Everything is written into the staging folder and moved into ``out`` only when complete
    (module docstring): on any error ``out`` keeps its previous dataset.
    """
    out = Path(out)
    clash = sorted(set(extras or {}) & {ITEMS_FILE, BEHAVIORS_FILE, USERS_FILE, META_FILE})
    if clash:
        raise ValueError(f"extras must not replace the contract files {clash}; give them other names")
    streamed = behaviors is None
    staging = _staging_dir(out) if streamed else _fresh_staging_dir(out)
    if streamed and not (staging / BEHAVIORS_FILE).is_file():
        raise DatasetError(f"{BEHAVIORS_FILE}: not found in the staging folder {staging}; "
                           f"write_dataset(out, items, None, ...) needs `with behavior_writer(out)` first")
    try:
        if streamed:
            behaviors = _read_parquet(staging / BEHAVIORS_FILE)
        check(items, behaviors, users, meta)
        items = _cast(items, ITEM_DTYPES, ITEMS_FILE)
        behaviors = _cast(behaviors, BEHAVIOR_DTYPES, BEHAVIORS_FILE)
        users = _cast(users, USER_DTYPES, USERS_FILE)
        meta = {k: v for k, v in meta.items() if k != "summary"}
        dataset = Dataset(items=items, behaviors=behaviors, users=users, meta=meta, path=out)
        meta["summary"] = summarize(dataset)
        frames = [(ITEMS_FILE, items), (USERS_FILE, users)] + ([] if streamed else [(BEHAVIORS_FILE, behaviors)])
        for name, frame in frames + list((extras or {}).items()):
            frame.to_parquet(staging / name, index=False)
        save_json(staging / META_FILE, meta)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _publish(staging, out)
    return dataset


# ---------------------------------------------------------------------------------------
# Task labels and summary
# ---------------------------------------------------------------------------------------


def task_labels(dataset: Dataset, task: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Labels of one task by the rules of docs/architecture.md, section 1.

    Returns ``(user_ids, y)``, user_ids ascending int64. ``future_category``: y int64 0/1,
    over users with >= 1 history behaviour (population ``all``) or with >= 1 label-window
    behaviour (``active_in_label_window``). ``activity``: y int64, 1 for the users with
    >= 1 history behaviour who also have >= 1 label-window behaviour, 0 for the others.
    ``profile``: y holds the raw column values of users with a non-null label and >= 1
    history behaviour.
    """
    rule = task["rule"]
    hist_users = np.unique(dataset.behaviors["user_id"].to_numpy()[dataset.history_mask()])
    if "profile" in rule:
        users = dataset.users[dataset.users[rule["profile"]].notna()]
        users = users[np.isin(users["user_id"].to_numpy(), hist_users)].sort_values("user_id")
        return users["user_id"].to_numpy(np.int64), users[rule["profile"]].to_numpy()
    label_mask = dataset.label_mask()
    label_users = dataset.behaviors["user_id"].to_numpy()[label_mask]
    if "activity" in rule:
        return hist_users.astype(np.int64), np.isin(hist_users, label_users).astype(np.int64)
    in_cat = _category_mask(dataset.items, rule["future_category"])
    positive = np.unique(label_users[in_cat[dataset.behaviors["item_id"].to_numpy()[label_mask]]])
    population = hist_users
    if rule.get("population", "all") == "active_in_label_window":
        population = np.intersect1d(hist_users, np.unique(label_users))
    return population.astype(np.int64), np.isin(population, positive).astype(np.int64)


def _category_mask(items: pd.DataFrame, category: str) -> np.ndarray:
    """(n_items,) bool: the item's ``|``-split category list contains ``category``."""
    cats = items["category"].astype(str)
    uniq, inverse = np.unique(cats.to_numpy(), return_inverse=True)
    hit = np.array([category in c.split("|") for c in uniq], dtype=bool)
    return hit[inverse]


def summarize(dataset: Dataset) -> dict[str, Any]:
    """Table-1 style statistics of a dataset, stored in ``dataset.json["summary"]``."""
    b = dataset.behaviors
    user = b["user_id"].to_numpy()
    ts = b["ts"].to_numpy()
    hist = dataset.history_mask()
    label = dataset.label_mask()
    _, per_user = np.unique(user, return_counts=True)
    q = np.percentile(per_user, [50, 90, 99]) if per_user.size else np.zeros(3)
    summary: dict[str, Any] = {
        "users": int(len(dataset.users)),
        "items": int(len(dataset.items)),
        "behaviors": int(len(b)),
        "history_behaviors": int(hist.sum()),
        "label_behaviors": int(label.sum()),
        "users_with_history": int(np.unique(user[hist]).size),
        "users_active_in_label_window": int(np.unique(user[label]).size),
        "first_date": ts_to_date(ts.min()) if len(ts) else None,
        "last_date": ts_to_date(ts.max()) if len(ts) else None,
        "behaviors_per_user": {
            "min": int(per_user.min()) if per_user.size else 0,
            "p50": round(float(q[0]), 1),
            "p90": round(float(q[1]), 1),
            "p99": round(float(q[2]), 1),
            "max": int(per_user.max()) if per_user.size else 0,
            "mean": round(float(per_user.mean()), 2) if per_user.size else 0.0,
        },
        "categories": len(_categories(dataset.items)),
        "title_words": _title_word_stats(dataset.items["title"]),
        "tasks": {},
    }
    for task in dataset.tasks:
        uid, y = task_labels(dataset, task)
        stats: dict[str, Any] = {"users": int(uid.size)}
        if "profile" not in task["rule"]:
            stats["positive_rate"] = round(float(y.mean()), 4) if y.size else None
        else:
            values, counts = np.unique(y.astype(str), return_counts=True)
            stats["classes"] = {str(v): int(c) for v, c in zip(values, counts, strict=True)}
        summary["tasks"][task["name"]] = stats
    if "prep_report" in dataset.meta:  # counts of what a raw source dropped or skipped
        summary["prep_report"] = dataset.meta["prep_report"]
    return summary


def _title_word_stats(titles: pd.Series) -> dict[str, float]:
    """Whitespace word counts of titles: mean, p95 (what Tr truncation will pick), max."""
    words = titles.str.split().str.len().fillna(0).to_numpy()
    return {"mean": round(float(words.mean()), 2), "p95": round(float(np.percentile(words, 95)), 1), "max": int(words.max())}


def format_summary(summary: dict[str, Any], indent: str = "") -> str:
    """Readable multi-line rendering of :func:`summarize`'s dict (nested dicts indented)."""
    lines = []
    for key, value in summary.items():
        if isinstance(value, dict) and any(isinstance(v, dict) for v in value.values()):
            lines.append(f"{indent}{key}:")
            lines.append(format_summary(value, indent + "  "))
        elif isinstance(value, dict):
            lines.append(f"{indent}{key}: " + ", ".join(f"{k}={v}" for k, v in value.items()))
        else:
            lines.append(f"{indent}{key}: {value}")
    return "\n".join(lines)
