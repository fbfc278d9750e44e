"""Bring-your-own behaviour log (CSV or Parquet) -> a contract folder.

Inputs, by extension: ``.csv``/``.csv.gz``/``.tsv`` (pandas, read ``chunk_size`` rows at
a time) or ``.parquet`` (pyarrow record batches of ``chunk_size`` rows):

- the behaviour log, one row per behaviour, with the ``user_col``, ``item_col`` and
  ``time_col`` columns (and ``title_col`` / ``category_col`` when there is no items table);
- optional items table: ``item_col`` plus ``title_col`` / ``category_col``;
- optional users table: ``user_col`` plus profile columns. Each profile column with 2 to
  50 distinct values becomes a task (``binary`` for two values, else ``multiclass``).

Ids may be strings or integers; they are mapped to dense ints (items first from the items
table, then in order of appearance) and the maps are written beside the dataset as
``id_map_users.parquet`` / ``id_map_items.parquet`` (column ``key``, as text, or as int64
when every key is an integer). Times are integer unix seconds or ISO dates/datetimes
(parsed by pandas; naive times are UTC). An item without a title gets ``"item <key>
<category>"`` as its text; a missing category is ``"unknown"``.

Windows: ``history_end`` defaults to the UTC day that leaves the last 10 % of the time span
as label window, ``label_end`` to the day after the last behaviour; both can be given as
``YYYY-MM-DD``. ``future_<category>`` tasks for the 3 most frequent categories when a
category column exists.

Only compact arrays (int64 codes and times) and the id maps are held while reading;
errors name the file, the column and an example row (``data row`` counts from 0 after the
header).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from data_prep.schema import DAY_SECONDS, behavior_writer, date_to_ts, format_summary, ts_to_date, write_dataset
from lurm_lite.runs import atomic_path

MAX_PROFILE_CLASSES = 50
N_CATEGORY_TASKS = 3
LABEL_SHARE = 0.1
_INT_KEY = re.compile(r"^-?\d+$")


def _chunks(path: Path, columns: Sequence[str], chunk_size: int) -> Iterator[tuple[int, pd.DataFrame]]:
    """(first data row, frame) chunks of ``columns`` from a CSV or Parquet file.

    Missing columns raise a ValueError naming the file and the columns it has.
    """
    name = path.name.lower()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    if name.endswith((".parquet", ".pq")):
        pf = pq.ParquetFile(path)
        have = pf.schema_arrow.names
        _require(path, columns, have)
        offset = 0
        for batch in pf.iter_batches(batch_size=chunk_size, columns=list(columns)):
            yield offset, batch.to_pandas()
            offset += batch.num_rows
    elif name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz")):
        sep = "\t" if ".tsv" in name else ","
        have = list(pd.read_csv(path, sep=sep, nrows=0).columns)
        _require(path, columns, have)
        offset = 0
        for frame in pd.read_csv(path, sep=sep, usecols=list(columns), chunksize=chunk_size,
                                 dtype={c: str for c in columns}, keep_default_na=False, na_values=[""]):
            yield offset, frame
            offset += len(frame)
    else:
        raise ValueError(f"{path}: unknown file type; use .csv, .csv.gz, .tsv or .parquet")


def _require(path: Path, columns: Sequence[str], have: Sequence[str]) -> None:
    missing = [c for c in columns if c not in have]
    if missing:
        raise ValueError(f"{path.name}: missing column {missing[0]!r} (columns: {', '.join(map(str, have))})")


def _read_table(path: Path, id_col: str) -> pd.DataFrame:
    """A whole (small) CSV or Parquet table whose id column is checked to exist."""
    columns = list(pd.read_csv(path, sep="\t" if ".tsv" in path.name.lower() else ",", nrows=0).columns) \
        if not path.name.lower().endswith((".parquet", ".pq")) else pq.ParquetFile(path).schema_arrow.names
    _require(path, [id_col], columns)
    if path.name.lower().endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    return pd.read_csv(path, sep="\t" if ".tsv" in path.name.lower() else ",", dtype={id_col: str})


def _keys(frame: pd.DataFrame, col: str, path: Path, offset: int) -> np.ndarray:
    """Id column as text keys; an empty id names its row."""
    values = frame[col]
    null = values.isna().to_numpy()
    if null.any():
        i = int(np.argmax(null))
        raise ValueError(f"{path.name}: column {col!r} is empty at data row {offset + i}: {frame.iloc[i].to_dict()}")
    if pd.api.types.is_float_dtype(values.dtype) and (values % 1 == 0).all():
        values = values.astype(np.int64)
    return values.astype(str).to_numpy(dtype=object)


def parse_time(values: pd.Series, path: Path, col: str, offset: int) -> np.ndarray:
    """Unix seconds (int64) from integer seconds or ISO dates/datetimes; bad values name the row."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        numeric = values.astype(np.float64)
    else:
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.isna().any() and not numeric.isna().all():
            i = int(np.argmax(numeric.isna().to_numpy()))
            raise ValueError(f"{path.name}: column {col!r} mixes numbers and text; data row {offset + i}: {values.iloc[i]!r}")
    if not numeric.isna().all():
        bad = (numeric.isna() | (numeric % 1 != 0)).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{path.name}: column {col!r} must be integer unix seconds; "
                             f"data row {offset + i}: {values.iloc[i]!r}")
        if numeric.abs().max() > 1e11:
            i = int(np.argmax(numeric.abs().to_numpy() > 1e11))
            raise ValueError(f"{path.name}: column {col!r} looks like milliseconds, not unix seconds; "
                             f"data row {offset + i}: {values.iloc[i]!r}")
        return numeric.to_numpy().astype(np.int64)
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{path.name}: column {col!r} has an unparseable time at data row {offset + i}: {values.iloc[i]!r} "
                         "(expected unix seconds or an ISO date/datetime)")
    return ((parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy().astype(np.int64)


class _KeyMap:
    """Growing map text key -> dense int code, in order of first appearance (vectorised per chunk)."""

    def __init__(self) -> None:
        self.index = pd.Index([], dtype=object)

    def codes(self, keys: np.ndarray) -> np.ndarray:
        codes = self.index.get_indexer(keys)
        new = codes < 0
        if new.any():
            self.index = self.index.append(pd.Index(pd.unique(keys[new])))
            codes[new] = self.index.get_indexer(keys[new])
        return codes.astype(np.int64)

    def frame(self, id_col: str) -> pd.DataFrame:
        keys = pd.Series(self.index.to_numpy(dtype=object), dtype=object)
        if len(keys) and keys.str.match(_INT_KEY).all():
            keys = keys.astype(np.int64)
        return pd.DataFrame({id_col: np.arange(len(keys), dtype=np.int64), "key": keys})


def _text_columns(title_col: str | None, category_col: str | None) -> list[str]:
    return [c for c in (title_col, category_col) if c]


def prepare(behaviors: str | Path, out: str | Path, *, user_col: str, item_col: str, time_col: str,
            items: str | Path | None = None, users: str | Path | None = None, title_col: str | None = None,
            category_col: str | None = None, history_end: str | None = None, label_end: str | None = None,
            chunk_size: int = 1_000_000, quiet: bool = True) -> Path:
    """Prepare a CSV/Parquet behaviour log (plus optional items/users tables) in ``out``."""
    out = Path(out)
    log_path = Path(behaviors)
    item_map, user_map = _KeyMap(), _KeyMap()
    text_cols = _text_columns(title_col, category_col)
    item_text: list[pd.DataFrame] = []  # (code, title?, category?) of each item, first seen wins

    if items is not None:
        path = Path(items)
        for offset, frame in _chunks(path, [item_col] + text_cols, chunk_size):
            keys = _keys(frame, item_col, path, offset)
            before = len(item_map.index)
            codes = item_map.codes(keys)
            dup = codes < before
            dup |= pd.Series(codes).duplicated().to_numpy()
            if dup.any():
                i = int(np.argmax(dup))
                raise ValueError(f"{path.name}: column {item_col!r} must be unique; data row {offset + i}: {keys[i]!r} repeats")
            item_text.append(frame[text_cols].assign(code=codes))
    n_table_items = len(item_map.index)
    user_profile = None
    if users is not None:
        path = Path(users)
        user_profile = _read_table(path, user_col)
        codes = user_map.codes(_keys(user_profile, user_col, path, 0))
        dup = pd.Series(codes).duplicated().to_numpy()
        if dup.any():
            i = int(np.argmax(dup))
            raise ValueError(f"{path.name}: column {user_col!r} must be unique; "
                             f"data row {i}: {user_profile[user_col].iloc[i]!r} repeats")
        user_profile = user_profile.drop(columns=[user_col]).assign(user_id=codes)

    u_parts, i_parts, t_parts = [], [], []
    log_text_cols = text_cols if items is None else []
    for offset, frame in _chunks(log_path, [user_col, item_col, time_col] + log_text_cols, chunk_size):
        u_parts.append(user_map.codes(_keys(frame, user_col, log_path, offset)))
        before = len(item_map.index)
        codes = item_map.codes(_keys(frame, item_col, log_path, offset))
        i_parts.append(codes)
        t_parts.append(parse_time(frame[time_col], log_path, time_col, offset))
        if log_text_cols:
            first = (codes >= before) & ~pd.Series(codes).duplicated().to_numpy()
            item_text.append(frame.loc[first, log_text_cols].assign(code=codes[first]))
    user, item, ts = (np.concatenate(p) if p else np.zeros(0, np.int64) for p in (u_parts, i_parts, t_parts))
    if user.size == 0:
        raise ValueError(f"{log_path.name}: no behaviour rows")
    del u_parts, i_parts, t_parts

    order = np.lexsort((item, ts, user))
    user, item, ts = user[order], item[order], ts[order]

    item_keys = item_map.frame("item_id")
    text = pd.concat(item_text) if item_text else pd.DataFrame({"code": []})
    text = text.drop_duplicates("code").set_index("code").reindex(np.arange(len(item_keys)))
    category = text[category_col].fillna("unknown").astype(str) if category_col else pd.Series("unknown", index=text.index)
    category = category.str.strip().replace("", "unknown")
    fallback = "item " + item_keys["key"].astype(str).to_numpy() + np.where(category != "unknown", " " + category, "")
    raw_title = text[title_col] if title_col else pd.Series(None, index=text.index, dtype=object)
    missing_title = raw_title.isna().to_numpy().copy()
    title = raw_title.where(~missing_title, "").astype(str).str.strip().to_numpy(dtype=object)
    missing_title |= title == ""
    item_frame = pd.DataFrame({
        "item_id": np.arange(len(item_keys), dtype=np.int32),
        "title": pd.Series(np.where(missing_title, fallback, title), dtype="str"),
        "category": pd.Series(category.to_numpy(), dtype="str"),
    })

    user_keys = user_map.frame("user_id")
    user_frame = pd.DataFrame({"user_id": user_keys["user_id"]})
    profile_tasks = []
    if user_profile is not None:
        user_frame = user_frame.merge(user_profile, on="user_id", how="left")
        for col in user_profile.columns.drop("user_id"):
            n_classes = user_frame[col].nunique()
            if 2 <= n_classes <= MAX_PROFILE_CLASSES:
                profile_tasks.append({"name": str(col), "kind": "binary" if n_classes == 2 else "multiclass",
                                      "rule": {"profile": str(col)}})

    first_day = date_to_ts(ts_to_date(ts.min()))
    default_windows = history_end is None
    if history_end is None:
        history_end = ts_to_date(ts.min() + (1 - LABEL_SHARE) * (ts.max() - ts.min()))
        if date_to_ts(history_end) <= ts.min():
            history_end = ts_to_date(first_day + DAY_SECONDS)
    if label_end is None:
        label_end = ts_to_date(max(ts.max() + DAY_SECONDS, date_to_ts(history_end) + DAY_SECONDS))

    cat_counts = pd.Series(item_frame["category"].to_numpy()[item]).value_counts().sort_index()
    cat_counts = cat_counts.drop("unknown", errors="ignore").sort_values(ascending=False, kind="stable")
    future_tasks = [{"name": f"future_{c}", "kind": "binary", "rule": {"future_category": c}}
                    for c in cat_counts.index[:N_CATEGORY_TASKS]]

    with behavior_writer(out) as write:
        for lo in range(0, user.size, chunk_size):
            write(user[lo:lo + chunk_size], item[lo:lo + chunk_size], ts[lo:lo + chunk_size])
    for name, frame in (("id_map_users.parquet", user_keys), ("id_map_items.parquet", item_keys)):
        with atomic_path(out / name) as tmp:
            frame.to_parquet(tmp, index=False)
    meta = {
        "name": f"tabular-{log_path.name.split('.')[0]}",
        "source": "tabular",
        "history_start": None,
        "history_end": history_end,
        "label_end": label_end,
        "tasks": future_tasks + profile_tasks,
        "inputs": {"behaviors": str(log_path), "items": str(items) if items else None,
                   "users": str(users) if users else None},
        "prep_report": {"items_without_title": int(missing_title.sum()),
                        "items_not_in_items_table": int(len(item_keys) - n_table_items) if items is not None else 0},
        "notes": (f"Behaviour log {log_path.name}. history_end {history_end}"
                  f"{' (default: the last 10% of the time span is the label window)' if default_windows else ''}, "
                  f"label_end {label_end}. Items without title use 'item <key> <category>'."),
    }
    dataset = write_dataset(out, item_frame, None, user_frame, meta)
    if not quiet:
        print(format_summary(dataset.meta["summary"]))
    return out
