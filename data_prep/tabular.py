"""Bring-your-own behaviour log (CSV or Parquet) -> a contract folder.

Inputs: Parquet (a ``.parquet``/``.pq`` name or Parquet's magic bytes; pyarrow record
batches of ``chunk_size`` rows), anything else is CSV, plain or gzip (detected by its magic
bytes), read ``chunk_size`` rows at a time:

- the behaviour log, one row per behaviour, with the ``user_col``, ``item_col`` and
  ``time_col`` columns (and ``title_col`` / ``category_col`` when there is no items table);
- optional items table: ``item_col`` plus ``title_col`` / ``category_col``;
- optional users table: ``user_col`` plus profile columns. Each profile column with 2 to
  50 distinct values becomes a task (``binary`` for two values, else ``multiclass``).

CSV separator: ``sep`` when given, else sniffed (``csv.Sniffer`` over the first 64 KiB)
among comma, tab, semicolon and pipe; when the sniffed one does not split the header into
the required columns but another candidate does, that one is used. So a tab- or
semicolon-separated ``.csv`` reads as such.

Ids may be strings or integers; they are mapped to dense ints (items first from the items
table, then in order of appearance) and the maps are written beside the dataset as
``id_map_users.parquet`` / ``id_map_items.parquet`` (column ``key``: int64 when every key
of that map is a canonical integer, else text, so that ``7`` and ``007`` stay two users).

Times: the format of the time column is decided on its first chunk, by content:
a timestamp/date column (Parquet ``timestamp`` of any unit, with or without zone);
``yyyymmdd`` numbers or digit strings (``20170714``, when every value is a valid date of
that form); other numbers are unix times whose unit (s, ms, us, ns) comes from their
median magnitude (fractions of a second are floored); text is ISO 8601 (naive times are
UTC). ``prep_report["time_format"]`` says which.

Categories: a category cell may hold several values, split on ``category_sep`` (default
``|``, the MovieLens convention) or written as a JSON/Python list literal
(``["Action", "Comedy"]``; a Parquet list column works too). The item's contract
``category`` is its values joined by ``|``, the form the contract already matches value by
value (``schema._category_mask``); a ``|`` inside one value becomes ``/``. Titles and
category values are HTML-unescaped with whitespace collapsed. An item without a title gets
``"item <key> <category values>"`` as its text; a missing category is ``"unknown"``.

Nothing is dropped silently. ``prep_report`` counts the behaviour log's data rows and where
each went, ``rows = behaviors + malformed_rows + outlier_times_dropped +
duplicate_rows_dropped``:

- malformed rows (a CSV line with too many fields, an empty user/item/time, a time that
  does not parse in the column's format) are skipped and counted with the first example;
  when more than half of the rows are malformed the prep fails instead (a wrong column or
  format, not a few bad lines);
- outlier times: rows isolated from the bulk of the log by a gap wider than max(3 x the
  interquartile range, 1 year), on a side holding at most 5 % of the rows or a single row
  (one 1960 or 2100 row among 2015-2018 data), are dropped, with a count and examples;
- duplicate rows (same user, item and time) are dropped, as ``data_prep.amazon`` does.

Windows: ``history_end`` defaults to the UTC day that leaves the last 10 % of the (outlier
free) time span as label window, ``label_end`` to the day after the last behaviour; both
can be given as ``YYYY-MM-DD``. A ``history_end`` that leaves no history, an empty label
window, or a task with no user is an error, not an empty dataset.

Tasks: ``future_<value>`` for the 3 most frequent category values (by behaviours; an item
counts for each of its values), profile tasks from the users table, and, only when neither
gives a task, the label-free churn-style task ``active_in_label_window`` (rule
``{"activity": "label_window"}``: 1 when the user has a behaviour in the label window, over
users with history), so that an ids-only log still evaluates something.

Only compact arrays (int64 codes and times) and the id maps are held while reading;
errors are :class:`DatasetError` naming the file, the column and an example row (``data
row`` counts parsed rows from 0 after the header).
"""

from __future__ import annotations

import ast
import csv
import gzip
import html
import json
import re
import warnings
import zlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.schema import DatasetError, date_to_ts, format_summary, ts_to_date, write_dataset
from lurm_lite.periods import DAY_SECONDS

MAX_PROFILE_CLASSES = 50
N_CATEGORY_TASKS = 3
LABEL_SHARE = 0.1
SEPARATORS = (",", "\t", ";", "|")
SNIFF_BYTES = 64 * 1024
MAX_MALFORMED_SHARE = 0.5
OUTLIER_IQR_FACTOR = 3
MIN_OUTLIER_GAP = 365 * DAY_SECONDS
MAX_OUTLIER_SHARE = 0.05
N_EXAMPLES = 3
CHURN_TASK = {"name": "active_in_label_window", "kind": "binary", "rule": {"activity": "label_window"}}
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
_CANONICAL_INT = re.compile(r"^(0|-?[1-9]\d{0,17})$")  # 18 digits at most: always fits int64
_SPACES = re.compile(r"\s+")
_SKIPPED_LINE = re.compile(r"Skipping line (\d+): ([^\n]*)")
_TIME_FORMATS = {"datetime": "timestamp column", "yyyymmdd": "yyyymmdd dates", "iso": "ISO 8601 text",
                 "s": "unix seconds", "ms": "unix milliseconds", "us": "unix microseconds", "ns": "unix nanoseconds"}
_UNIT_SECONDS = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


# ---------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------


class _FileReport(dict):
    """Counts of one input file: data rows, malformed rows, the first malformed example."""

    def __init__(self) -> None:
        super().__init__(rows=0, malformed=0, first_malformed=None)

    def bad(self, count: int, example: str) -> None:
        self["malformed"] += count
        if count and self["first_malformed"] is None:
            self["first_malformed"] = example


def _is_parquet(path: Path) -> bool:
    """A ``.parquet``/``.pq`` name or Parquet's magic bytes ``PAR1``."""
    with open(path, "rb") as fh:
        return fh.read(4) == PARQUET_MAGIC or path.name.lower().endswith((".parquet", ".pq"))


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def _sample(path: Path) -> str:
    """The first whole lines (up to 64 KiB) of a plain or gzip text file."""
    try:
        with (gzip.open if _is_gzip(path) else open)(path, "rb") as fh:
            data = fh.read(SNIFF_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: cannot be read ({exc}); is it a complete CSV or .csv.gz file?") from None
    text = data.decode("utf-8", errors="replace")
    if len(data) == SNIFF_BYTES and "\n" in text:
        text = text[:text.rindex("\n")]  # drop the cut last line
    return text


def _header_fields(header: str, sep: str) -> list[str]:
    return next(csv.reader([header], delimiter=sep), [])


def sniff_separator(path: Path, columns: Sequence[str] = ()) -> str:
    """The CSV separator of ``path`` among comma, tab, semicolon and pipe.

    ``csv.Sniffer`` decides from the first lines; when its choice does not split the header
    into all ``columns`` but another candidate does, that candidate wins. An empty file is
    a :class:`DatasetError`.
    """
    sample = _sample(path)
    if not sample.strip():
        raise DatasetError(f"{path}: the file is empty; expected a header line such as 'user_id,item_id,time' "
                           "and one row per behaviour")
    header = sample.lstrip("\ufeff").splitlines()[0]
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters="".join(SEPARATORS)).delimiter
    except csv.Error:  # one column, or no separator repeats consistently
        sniffed = max(SEPARATORS, key=header.count)
    fitting = [s for s in (sniffed, *SEPARATORS) if set(columns) <= set(_header_fields(header, s))]
    return fitting[0] if fitting else sniffed


def _require(path: Path, columns: Sequence[str], have: Sequence[str], sep: str | None = None) -> None:
    missing = [c for c in columns if c not in have]
    if missing:
        how = f"; read with separator {sep!r}, give --sep to override" if sep else ""
        raise DatasetError(f"{path.name}: missing column {missing[0]!r} (columns: {', '.join(map(str, have))}{how})")


def _chunks(path: Path, columns: Sequence[str], chunk_size: int, report: _FileReport, sep: str | None = None,
            all_columns: bool = False, inferred: Sequence[str] = ()) -> Iterator[tuple[int, pd.DataFrame]]:
    """(first data row, frame) chunks of ``columns`` (or, with ``all_columns``, of every column).

    CSV cells of ``columns`` are read as text (but pandas infers the dtype of ``inferred``,
    so that a numeric time column parses fast), empty cells as missing; CSV lines with too
    many fields are skipped and counted in ``report``; every data row is counted in
    ``report["rows"]``. Missing columns, an empty or header-only file and unreadable files
    raise :class:`DatasetError` naming the file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    if _is_parquet(path):
        yield from _parquet_chunks(path, columns, chunk_size, report, all_columns)
    else:
        yield from _csv_chunks(path, columns, chunk_size, report, sep, all_columns, inferred)
    if report["rows"] == 0:
        raise DatasetError(f"{path}: the file has a header but no data rows")


def _parquet_chunks(path: Path, columns: Sequence[str], chunk_size: int, report: _FileReport, all_columns: bool
                    ) -> Iterator[tuple[int, pd.DataFrame]]:
    try:
        pf = pq.ParquetFile(path)
        _require(path, columns, pf.schema_arrow.names)
        for batch in pf.iter_batches(batch_size=chunk_size, columns=None if all_columns else list(columns)):
            frame = batch.to_pandas()
            offset = report["rows"]
            report["rows"] += len(frame)
            yield offset, frame
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{path}: cannot be read as Parquet ({_one_line(exc)})") from None


def _csv_chunks(path: Path, columns: Sequence[str], chunk_size: int, report: _FileReport, sep: str | None,
                all_columns: bool, inferred: Sequence[str]) -> Iterator[tuple[int, pd.DataFrame]]:
    sep = sep or sniff_separator(path, columns)
    report["separator"] = sep
    options = dict(sep=sep, compression="gzip" if _is_gzip(path) else None, encoding="utf-8-sig")
    try:
        header = list(pd.read_csv(path, nrows=0, **options).columns)
        _require(path, columns, header, sep)
        reader = pd.read_csv(path, chunksize=chunk_size, dtype={c: str for c in columns if c not in inferred},
                             keep_default_na=False, na_values=[""], on_bad_lines="warn", **options)
        while True:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                try:
                    frame = next(reader)
                except StopIteration:
                    break
            skipped = [m for w in caught for m in _SKIPPED_LINE.findall(str(w.message))]
            if skipped:
                line, why = skipped[0]
                report.bad(len(skipped), f"line {line}: {why}")
            report["rows"] += len(skipped)
            offset = report["rows"]
            report["rows"] += len(frame)
            yield offset, frame if all_columns else frame[list(columns)]
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: the file is empty; expected a header line and one row per behaviour") from None
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, zlib.error, OSError) as exc:
        raise DatasetError(f"{path}: cannot be read as CSV with separator {sep!r} ({_one_line(exc)}); "
                           "check that it is complete UTF-8 text, or give --sep") from None


def _one_line(exc: BaseException) -> str:
    return _SPACES.sub(" ", str(exc)).strip()


def _clean(text: str) -> str:
    """HTML-unescaped text with whitespace collapsed (``"Tom &amp; Jerry"`` -> ``"Tom & Jerry"``)."""
    return _SPACES.sub(" ", html.unescape(text)).strip()


def _keys(frame: pd.DataFrame, col: str) -> tuple[pd.Series, np.ndarray]:
    """``(keys, empty)``: the id column as stripped text keys (integral floats as ints) and its empty cells."""
    values = frame[col]
    if pd.api.types.is_float_dtype(values.dtype) and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")
    keys = values.astype("str").str.strip().reset_index(drop=True)
    empty = (keys.isna() | (keys == "")).to_numpy(dtype=bool)
    return keys, empty


# ---------------------------------------------------------------------------------------
# Times
# ---------------------------------------------------------------------------------------


class TimeParser:
    """Unix seconds from one time column, in one format decided on its first chunk.

    Formats (module docstring): ``datetime``, ``yyyymmdd``, ``s``/``ms``/``us``/``ns``
    (unix time by median magnitude: below 1e11 seconds, 1e14 ms, 1e17 us, else ns; 1e11 s is
    the year 5138 and 1e11 ms is 1973, so the cuts are unambiguous), ``iso``.
    """

    def __init__(self) -> None:
        self.format: str | None = None

    def __call__(self, values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """``(ts int64, ok bool)`` of one chunk; a value that does not parse in the format is not ok."""
        if self.format is None:
            self.format = _detect_time_format(values)
            if self.format is None:  # nothing but empty cells so far
                return np.zeros(len(values), np.int64), np.zeros(len(values), bool)
        if self.format == "datetime":
            parsed = pd.to_datetime(values, errors="coerce", utc=True)
        elif self.format == "iso":
            parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
        elif self.format == "yyyymmdd":
            number = pd.to_numeric(values, errors="coerce")
            whole = number.where(number % 1 == 0).astype("Int64").astype("string")
            parsed = pd.to_datetime(whole, errors="coerce", utc=True, format="%Y%m%d")
        else:
            return _unix_seconds(values, _UNIT_SECONDS[self.format])
        ok = parsed.notna().to_numpy()
        seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        return seconds.fillna(0).to_numpy().astype(np.int64), ok

    @property
    def description(self) -> str | None:
        return _TIME_FORMATS.get(self.format) if self.format else None


def _detect_time_format(values: pd.Series) -> str | None:
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return "datetime"
    present = values.dropna()
    if present.empty:
        return None
    if values.dtype == object and not isinstance(present.iloc[0], str):
        return "datetime"  # datetime.date / datetime objects (a Parquet date32 column)
    number = pd.to_numeric(present, errors="coerce").dropna()
    if len(number) * 2 < len(present):
        return "iso"
    whole = number[number % 1 == 0]
    if len(whole) == len(number) and ((whole >= 10000101) & (whole <= 99991231)).all():
        dates = pd.to_datetime(whole.astype(np.int64).astype(str), errors="coerce", format="%Y%m%d")
        if dates.notna().all():
            return "yyyymmdd"
    magnitude = float(number.abs().median())
    return "s" if magnitude < 1e11 else "ms" if magnitude < 1e14 else "us" if magnitude < 1e17 else "ns"


def _unix_seconds(values: pd.Series, per_second: int) -> tuple[np.ndarray, np.ndarray]:
    if pd.api.types.is_integer_dtype(values.dtype) and not values.isna().any():
        return values.to_numpy().astype(np.int64) // per_second, np.ones(len(values), bool)
    number = pd.to_numeric(values, errors="coerce").astype(np.float64).to_numpy()
    ok = np.isfinite(number) & (np.abs(number) / per_second < 2**62)
    return np.floor(np.where(ok, number, 0) / per_second).astype(np.int64), ok


def outlier_mask(ts: np.ndarray) -> np.ndarray:
    """True for times isolated from the bulk of the log (module docstring).

    A time is an outlier when a gap wider than max(3 x IQR, 1 year) separates it from the
    median time and its side of that gap holds at most 5 % of the rows (or one row): one
    1960 row among 2015-2018 data, never the sparse early years of a growing log (no wide
    gap) nor a second period of collection (too many rows).
    """
    if ts.size == 0:
        return np.zeros(0, bool)
    s = np.sort(ts)
    q25, q75 = np.percentile(s, [25, 75])
    gap_limit = max(OUTLIER_IQR_FACTOR * (q75 - q25), MIN_OUTLIER_GAP)
    wide = np.flatnonzero(np.diff(s) > gap_limit)  # gap k lies between s[k] and s[k + 1]
    limit = max(MAX_OUTLIER_SHARE * s.size, 1)
    mid = s.size // 2
    below = wide[(wide < mid) & (wide + 1 <= limit)]
    above = wide[(wide >= mid) & (s.size - wide - 1 <= limit)]
    lo = s[below.max() + 1] if below.size else s[0]
    hi = s[above.min()] if above.size else s[-1]
    return (ts < lo) | (ts > hi)


# ---------------------------------------------------------------------------------------
# Ids and categories
# ---------------------------------------------------------------------------------------


class _KeyMap:
    """Growing map text key -> dense int code, in order of first appearance (vectorised per chunk)."""

    def __init__(self) -> None:
        self.index = pd.Index([], dtype=object)

    def codes(self, keys: pd.Series) -> np.ndarray:
        """Codes of non-empty text keys; keys not seen before get the next codes."""
        local, uniques = pd.factorize(keys)  # hashes the chunk once; only its distinct keys are looked up
        codes = self.index.get_indexer(uniques)
        new = codes < 0
        if new.any():
            codes[new] = np.arange(len(self.index), len(self.index) + int(new.sum()))
            self.index = self.index.append(pd.Index(np.asarray(uniques[new], dtype=object), dtype=object))
        return codes[local].astype(np.int64)

    def frame(self, id_col: str) -> pd.DataFrame:
        """(id_col, key): keys as int64 when every key is a canonical integer, else as text."""
        keys = pd.Series(self.index.to_numpy(dtype=object), dtype=object)
        if len(keys) and keys.str.fullmatch(_CANONICAL_INT).all():
            keys = keys.astype(np.int64)
        else:
            keys = keys.astype("str")
        return pd.DataFrame({id_col: np.arange(len(keys), dtype=np.int64), "key": keys})


def category_values(cell: Any, sep: str = "|") -> list[str]:
    """The distinct values of one category cell, in order.

    ``"Action|Comedy"`` (split on ``sep``), ``'["Action", "Comedy"]'`` (JSON or Python list
    literal) and a list/array (a Parquet list column) all give ``["Action", "Comedy"]``.
    Values are HTML-unescaped, whitespace-collapsed, and a ``|`` inside a value becomes ``/``
    (the contract joins values with ``|``). A missing cell has no values.
    """
    if isinstance(cell, (list, tuple, np.ndarray)):
        raw = [str(v) for v in cell if v is not None]
    elif cell is None or (isinstance(cell, float) and np.isnan(cell)) or cell is pd.NA:
        raw = []
    else:
        text = str(cell).strip()
        raw = _list_literal(text)
        if raw is None:
            raw = text.split(sep)
    values = (_clean(v).replace("|", "/") for v in raw)
    return list(dict.fromkeys(v for v in values if v))


def _list_literal(text: str) -> list[str] | None:
    """``'["a", "b"]'`` or ``"['a', 'b']"`` -> ``["a", "b"]``; anything else -> None."""
    if not (text.startswith("[") and text.endswith("]")):
        return None
    for parse in (json.loads, ast.literal_eval):
        try:
            parsed = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(parsed, (list, tuple)):
            return [str(v) for v in parsed if v is not None]
    return None


def _text_columns(title_col: str | None, category_col: str | None) -> list[str]:
    return [c for c in (title_col, category_col) if c]


def _item_frame(item_keys: pd.DataFrame, text: pd.DataFrame, title_col: str | None, category_col: str | None,
                category_sep: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The contract's items table and the mask of items without a title."""
    n = len(item_keys)
    values = (text[category_col].map(lambda cell: category_values(cell, category_sep)) if category_col
              else pd.Series([[]] * n, index=text.index))
    category = values.map(lambda v: "|".join(v) if v else "unknown")
    spoken = values.map(lambda v: "".join(" " + c for c in v))
    fallback = "item " + item_keys["key"].astype(str).to_numpy() + spoken.to_numpy(dtype=object)
    raw_title = text[title_col] if title_col else pd.Series(None, index=text.index, dtype=object)
    title = raw_title.map(lambda t: "" if not isinstance(t, str) and pd.isna(t) else _clean(str(t)))
    title = title.to_numpy(dtype=object)
    missing_title = title == ""
    frame = pd.DataFrame({
        "item_id": np.arange(n, dtype=np.int32),
        "title": pd.Series(np.where(missing_title, fallback, title), dtype="str"),
        "category": pd.Series(category.to_numpy(dtype=object), dtype="str"),
    })
    return frame, missing_title


def category_tasks(categories: np.ndarray, item: np.ndarray) -> list[dict[str, Any]]:
    """``future_<value>`` tasks for the most frequent category values, by behaviours.

    ``categories`` holds each item's ``|``-joined values; an item counts for each of its
    values; ties go by name; ``unknown`` is no task.
    """
    per_item = pd.DataFrame({"value": pd.Series(categories, dtype=object).str.split("|"),
                             "n": np.bincount(item, minlength=len(categories))})
    counts = (per_item[per_item["n"] > 0].explode("value").groupby("value")["n"].sum()
              .drop("unknown", errors="ignore").sort_index().sort_values(ascending=False, kind="stable"))
    return [{"name": f"future_{c}", "kind": "binary", "rule": {"future_category": c}}
            for c in counts.index[:N_CATEGORY_TASKS]]


# ---------------------------------------------------------------------------------------
# The whole preparation
# ---------------------------------------------------------------------------------------


def prepare(behaviors: str | Path, out: str | Path, *, user_col: str, item_col: str, time_col: str,
            items: str | Path | None = None, users: str | Path | None = None, title_col: str | None = None,
            category_col: str | None = None, history_end: str | None = None, label_end: str | None = None,
            sep: str | None = None, category_sep: str = "|", chunk_size: int = 1_000_000,
            quiet: bool = True) -> Path:
    """Prepare a CSV/Parquet behaviour log (plus optional items/users tables) in ``out``.

    ``sep`` overrides the sniffed CSV separator of every input; ``category_sep`` splits a
    multi-valued category cell. Returns ``out``; raises :class:`DatasetError` (nothing
    written) for data that cannot make a valid dataset.
    """
    out = Path(out)
    log_path = Path(behaviors)
    for flag, date in (("--history-end", history_end), ("--label-end", label_end)):
        _check_date_flag(flag, date)
    if not category_sep:
        raise DatasetError("--category-sep must not be empty; the default is '|' (as in 'Action|Comedy')")
    item_map, user_map = _KeyMap(), _KeyMap()
    text_cols = _text_columns(title_col, category_col)
    item_text: list[pd.DataFrame] = []  # (code, title?, category?) of each item, first seen wins
    files: dict[str, _FileReport] = {}

    if items is not None:
        path = Path(items)
        table_report = files.setdefault(str(path), _FileReport())
        for offset, frame in _chunks(path, [item_col] + text_cols, chunk_size, table_report, sep):
            keys, empty = _keys(frame, item_col)
            _no_empty_ids(path, frame, item_col, offset, empty)
            before = len(item_map.index)
            codes = item_map.codes(keys)
            dup = (codes < before) | pd.Series(codes).duplicated().to_numpy()
            if dup.any():
                i = int(np.argmax(dup))
                raise DatasetError(f"{path.name}: column {item_col!r} must be unique; data row {offset + i}: "
                                   f"{keys.iloc[i]!r} repeats")
            item_text.append(frame[text_cols].assign(code=codes))
    n_table_items = len(item_map.index)
    user_profile = None if users is None else _read_users(Path(users), user_col, user_map, chunk_size, sep,
                                                          files.setdefault(str(Path(users)), _FileReport()))

    report = files.setdefault(str(log_path), _FileReport())
    parse_time = TimeParser()
    u_parts, i_parts, t_parts = [], [], []
    text_in_log = items is None and bool(text_cols)  # else titles and categories come from the items table
    log_cols = [user_col, item_col, time_col] + (text_cols if text_in_log else [])
    for offset, frame in _chunks(log_path, log_cols, chunk_size, report, sep, inferred=[time_col]):
        user_keys, user_empty = _keys(frame, user_col)
        item_keys, item_empty = _keys(frame, item_col)
        ts, ts_ok = parse_time(frame[time_col])
        bad = user_empty | item_empty | ~ts_ok
        if bad.any():
            i = int(np.argmax(bad))
            why = (f"column {user_col!r} is empty" if user_empty[i]
                   else f"column {item_col!r} is empty" if item_empty[i]
                   else f"column {time_col!r} is empty" if pd.isna(frame[time_col].iloc[i])
                   else f"column {time_col!r} value {frame[time_col].iloc[i]!r} is not a time "
                        f"({parse_time.description or 'no format detected yet'})")
            report.bad(int(bad.sum()), f"data row {offset + i}: {why}")
        good = np.flatnonzero(~bad)
        u_parts.append(user_map.codes(user_keys.iloc[good]))
        before = len(item_map.index)
        codes = item_map.codes(item_keys.iloc[good])
        i_parts.append(codes)
        t_parts.append(ts[good])
        if text_in_log:
            first = (codes >= before) & ~pd.Series(codes).duplicated().to_numpy()
            item_text.append(frame.iloc[good[first]][text_cols].assign(code=codes[first]))
    if report["malformed"] > MAX_MALFORMED_SHARE * report["rows"]:
        separator = f", the separator ({report['separator']!r}, --sep)" if "separator" in report else ""
        raise DatasetError(
            f"{log_path.name}: {report['malformed']} of {report['rows']} data rows are malformed, first at "
            f"{report['first_malformed']}; check --user-col/--item-col/--time-col{separator} and the time format "
            "(unix s/ms, yyyymmdd, ISO dates)")
    user, item, ts = (np.concatenate(p) for p in (u_parts, i_parts, t_parts))
    del u_parts, i_parts, t_parts

    outlier = outlier_mask(ts)
    outlier_examples = [_time_text(t) for t in np.unique(ts[outlier])[:N_EXAMPLES]]
    user, item, ts = user[~outlier], item[~outlier], ts[~outlier]
    order = np.lexsort((item, ts, user))
    user, item, ts = user[order], item[order], ts[order]
    dup = np.r_[False, (user[1:] == user[:-1]) & (item[1:] == item[:-1]) & (ts[1:] == ts[:-1])]
    user, item, ts = user[~dup], item[~dup], ts[~dup]

    item_keys = item_map.frame("item_id")
    text = pd.concat(item_text) if item_text else pd.DataFrame({"code": []})
    text = text.drop_duplicates("code").set_index("code").reindex(np.arange(len(item_keys)))
    item_frame, missing_title = _item_frame(item_keys, text, title_col, category_col, category_sep)

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

    first, last = int(ts.min()), int(ts.max())
    default_history_end = ts_to_date(first + (1 - LABEL_SHARE) * (last - first))
    if date_to_ts(default_history_end) <= first:
        default_history_end = ts_to_date(date_to_ts(ts_to_date(first)) + DAY_SECONDS)
    default_windows = history_end is None
    history_end = history_end or default_history_end
    label_end = label_end or ts_to_date(max(last + DAY_SECONDS, date_to_ts(history_end) + DAY_SECONDS))
    tasks = category_tasks(item_frame["category"].to_numpy(), item) + profile_tasks
    if not tasks:
        tasks = [{**CHURN_TASK, "rule": dict(CHURN_TASK["rule"])}]
    _check_windows(tasks, user, ts, user_frame, history_end, label_end, default_history_end, users)

    prep_report = {
        "rows": int(report["rows"]),
        "behaviors": int(user.size),
        "malformed_rows": int(report["malformed"]),
        "first_malformed": report["first_malformed"],
        "outlier_times_dropped": int(outlier.sum()),
        "outlier_time_examples": outlier_examples,
        "duplicate_rows_dropped": int(dup.sum()),
        "time_format": parse_time.description,
        "items_without_title": int(missing_title.sum()),
        "items_not_in_items_table": int(len(item_keys) - n_table_items) if items is not None else 0,
        "files": {name: dict(rep) for name, rep in files.items()},
    }
    meta = {
        "name": f"tabular-{log_path.name.split('.')[0]}",
        "source": "tabular",
        "history_start": None,
        "history_end": history_end,
        "label_end": label_end,
        "tasks": tasks,
        "inputs": {"behaviors": str(log_path), "items": str(items) if items else None,
                   "users": str(users) if users else None},
        "prep_report": prep_report,
        "notes": (f"Behaviour log {log_path.name} ({prep_report['time_format']}). history_end {history_end}"
                  f"{' (default: the last 10% of the time span is the label window)' if default_windows else ''}, "
                  f"label_end {label_end}. Of {prep_report['rows']} data rows, dropped: "
                  f"{prep_report['malformed_rows']} malformed, {prep_report['outlier_times_dropped']} with outlier "
                  f"times {outlier_examples}, {prep_report['duplicate_rows_dropped']} duplicates (same user, item, "
                  f"time). Items without title use 'item <key> <category values>'."
                  + (" No categories and no profile columns: the task is active_in_label_window (any behaviour "
                     "in the label window)." if tasks[0]["name"] == CHURN_TASK["name"] else "")),
    }
    behaviors_frame = pd.DataFrame({"user_id": user, "item_id": item, "ts": ts})
    dataset = write_dataset(out, item_frame, behaviors_frame, user_frame, meta,
                            extras={"id_map_users.parquet": user_keys, "id_map_items.parquet": item_keys})
    if not quiet:
        print(format_summary(dataset.meta["summary"]))
    return out


def _check_date_flag(flag: str, date: str | None) -> None:
    try:
        date_to_ts(date)
    except ValueError:
        raise DatasetError(f"{flag} must be a date YYYY-MM-DD, e.g. 2018-01-01; got {date!r}") from None


def _no_empty_ids(path: Path, frame: pd.DataFrame, col: str, offset: int, empty: np.ndarray) -> None:
    """An id column of an items or users table must have no empty cell."""
    if empty.any():
        i = int(np.argmax(empty))
        raise DatasetError(f"{path.name}: column {col!r} is empty at data row {offset + i}: {frame.iloc[i].to_dict()}")


def _read_users(path: Path, user_col: str, user_map: _KeyMap, chunk_size: int, sep: str | None,
                report: _FileReport) -> pd.DataFrame:
    """The users table: ``user_id`` codes (registered in ``user_map``) plus its profile columns."""
    parts = []
    for offset, frame in _chunks(path, [user_col], chunk_size, report, sep, all_columns=True):
        keys, empty = _keys(frame, user_col)
        _no_empty_ids(path, frame, user_col, offset, empty)
        parts.append(frame.drop(columns=[user_col]).assign(user_id=user_map.codes(keys)))
    profile = pd.concat(parts, ignore_index=True)
    dup = profile["user_id"].duplicated().to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        raise DatasetError(f"{path.name}: column {user_col!r} must be unique; "
                           f"data row {i}: {user_map.index[profile['user_id'].iloc[i]]!r} repeats")
    return profile


def _time_text(ts: int) -> str:
    """A unix time as its UTC date, or as seconds when it is beyond the calendar."""
    try:
        return ts_to_date(ts)
    except (OverflowError, ValueError, OSError):
        return f"{ts} s"


def _check_windows(tasks: list[dict[str, Any]], user: np.ndarray, ts: np.ndarray, user_frame: pd.DataFrame,
                   history_end: str, label_end: str, default_history_end: str, users: str | Path | None) -> None:
    """Windows that leave every task users (and a label window for label-window tasks), else DatasetError."""
    h, l = date_to_ts(history_end), date_to_ts(label_end)
    span = f"the behaviours run from {ts_to_date(ts.min())} to {ts_to_date(ts.max())}"
    if h <= ts.min():
        raise DatasetError(f"--history-end {history_end} leaves no history: {span}; give a later date "
                           f"(the default would be {default_history_end})")
    if l <= h:
        raise DatasetError(f"--label-end {label_end} must be after --history-end {history_end}")
    window_tasks = [t["name"] for t in tasks if "profile" not in t["rule"]]
    if window_tasks and not ((ts >= h) & (ts < l)).any():
        raise DatasetError(f"no behaviour in the label window {history_end}..{label_end} ({span}); tasks "
                           f"{', '.join(window_tasks)} label users by it: give an earlier --history-end (the default "
                           f"would be {default_history_end}) or a later --label-end")
    with_history = user_frame["user_id"].isin(np.unique(user[ts < h]))
    for task in tasks:
        column = task["rule"].get("profile")
        if column is not None and not (with_history & user_frame[column].notna()).any():
            raise DatasetError(f"{Path(users).name}: task {task['name']!r} has no user: no user with a {column!r} "
                               f"value has behaviour before --history-end {history_end}; drop the column or give "
                               f"a later --history-end")
