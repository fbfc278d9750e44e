"""Amazon review data (McAuley lab; releases 2014, 2018, 2023) raw files -> a contract folder.

Inputs are the files as distributed: review files (``<Category>.json.gz``,
``reviews_<Category>_5.json.gz``, ``<Category>.jsonl.gz``, ...) and metadata files
(``meta_<Category>.json(l)(.gz)``), one record per line, plain or gzip (detected by the
magic bytes, not the name). The release is detected per file from the keys of its first
readable record; one reader handles all three:

===========  ==========================================  ==================================
release      reviews (a review is a behaviour)            meta (one item per line)
===========  ==========================================  ==================================
2014         ``reviewerID``, ``asin``, ``unixReviewTime``  Python dict literals (read with
             (int seconds); JSON lines                   ``ast.literal_eval``): ``asin``,
                                                         ``title``, ``categories`` (a list of
                                                         category paths; the first is used)
2018         as 2014                                     JSON: ``asin``, ``title``,
                                                         ``category`` (one path)
2023         ``user_id``, ``parent_asin``, ``timestamp``  JSON: ``parent_asin``, ``title``,
             (int milliseconds, floored to seconds)       ``main_category``, ``categories``
===========  ==========================================  ==================================

A meta record is 2023 when it has ``parent_asin`` or ``main_category``, 2014 when it has
``categories`` (or is a Python literal), 2018 otherwise; a review record is 2023 when it
has ``user_id`` or ``parent_asin``. Items are keyed by ``asin`` (2014, 2018) or
``parent_asin`` (2023, which groups the variants of a product), so reviews and meta must
come from the same side of that line: mixing 2023 files with older ones is an error.

Item text: ``title`` is HTML-unescaped, whitespace collapsed. ``category`` (top level) is
the path's first element for 2014/2018 and ``main_category`` for 2023 (the path's first
element when it is missing), or else the meta file's name (``meta_Musical_Instruments``
-> ``Musical Instruments``); ``category_path`` = ``" > ".join(path)``, or the category when
there is no path. An empty title falls back to the category path, so every item has text.
When the kept items share one top-level category (one category's files, the usual
download) and no ``target_categories`` are given, ``category`` is the path's second level
instead (``Guitars``, ``Drums``): with one top level every ``future_<category>`` task would
only ask whether the user buys anything again.

Memory stays bounded by the number of reviews times 16 bytes: files are streamed line by
line, and only compact arrays (int32 user and item indices, int64 times, in
``array.array``) and the id maps are kept; metadata is kept only for reviewed items.
Behaviours are sorted once as arrays and written ``chunk_size`` rows at a time.

Nothing is dropped silently: ``dataset.json["prep_report"]`` (and the printed summary)
accounts for every input line. Per file: ``release``, ``lines`` (every line, as ``wc -l``
counts, plus a last line without newline), ``blank_lines``, ``malformed`` (bad JSON or
literal, missing or mistyped fields) and the first malformed line number. Totals, each
adding up to its ``lines``::

    reviews: lines = blank + malformed + without_meta_dropped + duplicates_dropped + behaviors
    meta:    lines = blank + malformed + duplicate_lines + not_reviewed + items

(a duplicate review has the same user, item and time; of duplicate meta lines the first
is kept), plus ``items_with_empty_title``. ``id_map_users.parquet`` (user_id,
reviewerID) and ``id_map_items.parquet`` (item_id, asin) are written with the dataset;
for 2023 files they hold ``user_id`` and ``parent_asin``.

A gzip file that ends early (an interrupted download) is an error naming the file and the
last line read, not a shorter dataset: a cut file usually means a download to redo, and a
silently smaller log would change every result. To use what it holds, decompress it
(``gzip -dc FILE.gz > FILE``) and pass the plain file; its cut last line is then counted
as malformed.

Windows: ``history_end`` and ``label_end`` default to the last 10 whole calendar months of
the reviews as label window (``label_end`` = the first day of the month after the last
review). For the 2018 release, whose reviews end in October 2018, that is the paper's
split (§3.2): history up to 2017-12, labels 2018-01..10. Tasks: ``future_<category>`` for
``target_categories`` (default: the 4 most frequent top-level categories by number of
behaviours); there are no profile labels in this source.
"""

from __future__ import annotations

import ast
import datetime as dt
import gzip
import html
import json
import re
import zlib
from array import array
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from data_prep.schema import DatasetError, behavior_writer, date_to_ts, format_summary, ts_to_date, write_dataset

GZIP_MAGIC = b"\x1f\x8b"
LABEL_MONTHS = 10  # default label window: the last 10 calendar months, as the paper's 2018 split
_SPACES = re.compile(r"\s+")

REVIEW_KEYS = {"2014/2018": ("reviewerID", "asin", "unixReviewTime"), "2023": ("user_id", "parent_asin", "timestamp")}
META_KEYS = {"2014": ("asin", "title", "categories"), "2018": ("asin", "title", "category"),
             "2023": ("parent_asin", "title", "main_category", "categories")}


def _lines(path: Path) -> Iterator[bytes]:
    """Raw lines of a plain or gzip file, streamed; a cut or corrupt gzip stream is a DatasetError."""
    with open(path, "rb") as fh:
        gz = fh.read(2) == GZIP_MAGIC
    if not gz:
        with open(path, "rb") as fh:
            yield from fh
        return
    line_no = 0
    try:
        with gzip.open(path, "rb") as fh:
            for line_no, line in enumerate(fh, start=1):  # line_no names the last good line on an error
                yield line
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetError(
            f"{path}: the gzip stream is cut off or corrupt after line {line_no} ({exc}); download the file again, "
            f"or decompress what it holds (gzip -dc {path.name} > {path.name.removesuffix('.gz')}) and pass that file"
        ) from None


def _parse(line: bytes) -> tuple[Any, bool]:
    """``(record, is_python_literal)``: JSON, else a Python literal (2014 meta lines).

    Raises ValueError (also for a line that is neither) so the caller counts it as malformed.
    """
    try:
        return json.loads(line), False
    except ValueError:
        if not line.lstrip().startswith(b"{"):
            raise
    try:
        return ast.literal_eval(line.decode("utf-8")), True
    except (SyntaxError, TypeError, RecursionError) as exc:  # literal_eval raises ValueError itself too
        raise ValueError(f"not JSON nor a Python literal: {exc}") from None


def _clean(text: str) -> str:
    return _SPACES.sub(" ", html.unescape(text)).strip()


def _file_category(path: Path) -> str:
    """``meta_Musical_Instruments.json.gz`` -> ``Musical Instruments``."""
    stem = path.name.split(".")[0]
    return stem.removeprefix("meta_").replace("_", " ")


def _review_release(rec: dict, python_literal: bool) -> str | None:
    if "user_id" in rec or "parent_asin" in rec:
        return "2023"
    if "reviewerID" in rec or "unixReviewTime" in rec:
        return "2014/2018"
    return None


def _meta_release(rec: dict, python_literal: bool) -> str | None:
    if "parent_asin" in rec or "main_category" in rec:
        return "2023"
    if "categories" in rec or (python_literal and "asin" in rec):
        return "2014"
    if "asin" in rec:
        return "2018"
    return None


def _review_fields(release: str, rec: dict) -> tuple[str, str, int]:
    """``(user key, item key, unix seconds)`` of one review record."""
    user, item, when = (rec[k] for k in REVIEW_KEYS[release])
    if not (isinstance(user, str) and isinstance(item, str) and isinstance(when, int)) or isinstance(when, bool):
        raise TypeError
    return user, item, when // 1000 if release == "2023" else when


def _meta_fields(release: str, rec: dict) -> tuple[str, str, list, str | None]:
    """``(item key, title, category path, top-level category or None)`` of one meta record."""
    if release == "2023":
        item, title, top = rec["parent_asin"], rec.get("title") or "", rec.get("main_category")
        path = rec.get("categories") or []
        if top is not None and not isinstance(top, str):
            raise TypeError
    else:
        item, title, top = rec["asin"], rec.get("title") or "", None
        if release == "2014":
            paths = rec.get("categories") or [[]]
            if not isinstance(paths, list) or not isinstance(paths[0], list):
                raise TypeError
            path = paths[0]
        else:
            path = rec.get("category") or []
    if not (isinstance(item, str) and isinstance(title, str) and isinstance(path, list)):
        raise TypeError
    return item, title, path, top


class _FileReport(dict):
    """Counts of one input file: kind, release, lines, blank_lines, malformed, first_malformed_line."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind=kind, release=None, lines=0, blank_lines=0, malformed=0, first_malformed_line=None)

    def bad(self, line_no: int) -> None:
        self["malformed"] += 1
        if self["first_malformed_line"] is None:
            self["first_malformed_line"] = line_no


def _records(paths: Sequence[str | Path], kind: str, report: dict,
             release_of: Callable[[dict, bool], str | None], fields: Callable[[str, dict], tuple]
             ) -> Iterator[tuple[Path, str, tuple]]:
    """Well-formed records of line files as ``(path, release, fields(release, record))``.

    A file's release is that of its first record that ``release_of`` recognises; later
    lines are read as that release. A line that does not parse, or for which ``fields``
    raises KeyError/TypeError/ValueError/IndexError (a missing or mistyped field), is counted
    as malformed in ``report[path]``, never fatal. A file whose readable records are none of
    the releases' is an error (most likely a meta file given as reviews, or the other way round).
    """
    for path in map(Path, paths):
        rep = report.setdefault(str(path), _FileReport(kind))
        release, first_keys = None, None
        for line_no, line in enumerate(_lines(path), start=1):
            rep["lines"] += 1
            if not line.strip():
                rep["blank_lines"] += 1
                continue
            try:
                rec, python_literal = _parse(line)
                if not isinstance(rec, dict):
                    raise TypeError
                if release is None:
                    first_keys = first_keys or sorted(rec)
                    release = rep["release"] = release_of(rec, python_literal)
                    if release is None:
                        raise KeyError
                values = fields(release, rec)
            except (ValueError, KeyError, TypeError, IndexError):  # JSONDecodeError, UnicodeDecodeError: ValueErrors
                rep.bad(line_no)
                continue
            yield path, release, values
        if release is None and first_keys is not None:
            expected = REVIEW_KEYS if kind == "reviews" else META_KEYS
            raise DatasetError(
                f"{path}: no line is an Amazon {kind} record (first record's keys: {first_keys}); "
                f"expected the keys of one release: "
                + "; ".join(f"{r}: {', '.join(k)}" for r, k in expected.items())
                + f". Is it a {'meta' if kind == 'reviews' else 'review'} file?"
            )


def read_reviews(paths: Sequence[str | Path], report: dict
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """Stream review files into compact arrays.

    Returns ``(user_idx int64, item_idx int64, ts int64, user_keys, item_keys)``, where the
    indices count distinct user / item keys in order of first appearance.
    """
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    u_arr, i_arr, t_arr = array("i"), array("i"), array("q")
    for _, _, (user, item, ts) in _records(paths, "reviews", report, _review_release, _review_fields):
        u_arr.append(users.setdefault(user, len(users)))
        i_arr.append(items.setdefault(item, len(items)))
        t_arr.append(ts)
    return (np.asarray(u_arr, dtype=np.int64), np.asarray(i_arr, dtype=np.int64), np.asarray(t_arr, dtype=np.int64),
            list(users), list(items))


def read_meta(paths: Sequence[str | Path], item_keys: list[str], report: dict) -> tuple[np.ndarray, dict[str, int]]:
    """Stream meta files, keeping title and categories of the reviewed ``item_keys`` only.

    Returns ``(text, counts)``: ``text`` (len(item_keys), 3) object array of title, category,
    category_path (None where an item has no metadata); counts of duplicate meta lines,
    meta lines of items nobody reviewed, and empty titles.
    """
    index = {a: k for k, a in enumerate(item_keys)}
    text = np.full((len(item_keys), 3), None, dtype=object)
    counts = {"duplicate_lines": 0, "not_reviewed": 0, "items_with_empty_title": 0}
    for path, _, (item, title, cats, top) in _records(paths, "meta", report, _meta_release, _meta_fields):
        k = index.get(item)
        if k is None:
            counts["not_reviewed"] += 1
            continue
        if text[k, 0] is not None:
            counts["duplicate_lines"] += 1
            continue
        cats = [c for c in (_clean(str(c)) for c in cats) if c]
        top = _clean(top) if top else ""
        category = top or (cats[0] if cats else _file_category(path))
        path_text = " > ".join(cats) if cats else category
        title = _clean(title)
        if not title:
            counts["items_with_empty_title"] += 1
            title = path_text
        text[k] = (title, category, path_text)
    return text, counts


def _check_releases(files: dict) -> str:
    """The release name of the dataset; 2023 files (keyed by parent_asin) mixed with older ones is an error."""
    review = {f["release"] for f in files.values() if f["kind"] == "reviews" and f["release"]}
    meta = {f["release"] for f in files.values() if f["kind"] == "meta" and f["release"]}
    if len({r == "2023" for r in review | meta}) > 1:
        listing = "; ".join(f"{Path(p).name}: {f['release']}" for p, f in files.items() if f["release"])
        raise DatasetError(f"reviews and meta mix the 2023 release (items keyed by parent_asin) with older ones "
                           f"(keyed by asin), so their items cannot be matched ({listing}); "
                           f"pass review and meta files of one release")
    return "+".join(sorted(meta)) or "+".join(sorted(review))


def default_windows(ts: np.ndarray, history_end: str | None, label_end: str | None) -> tuple[str, str]:
    """Fill the windows left ``None``: the last ``LABEL_MONTHS`` calendar months of ``ts`` are the label window.

    ``label_end`` = the first day of the month after the last review; ``history_end`` =
    ``LABEL_MONTHS`` months before ``label_end`` (2018 release: 2018-01-01 and 2018-11-01).
    """
    def month_start(year: int, month: int) -> str:  # month may be out of 1..12
        year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
        return dt.date(year, month, 1).isoformat()

    if label_end is None:
        last = dt.date.fromisoformat(ts_to_date(int(ts.max())))
        label_end = month_start(last.year, last.month + 1)
    if history_end is None:
        end = dt.date.fromisoformat(label_end)
        history_end = month_start(end.year, end.month - LABEL_MONTHS)
    return history_end, label_end


def prepare(reviews: Sequence[str | Path], meta: Sequence[str | Path], out: str | Path,
            history_end: str | None = None, label_end: str | None = None,
            target_categories: Sequence[str] | None = None, chunk_size: int = 1_000_000,
            quiet: bool = True) -> Path:
    """Prepare Amazon review + meta files (2014, 2018 or 2023) as a contract folder in ``out``; returns ``out``.

    ``history_end`` / ``label_end`` (``YYYY-MM-DD``, exclusive) default to the last 10
    months of the reviews as label window (module docstring). ``chunk_size`` rows of
    behaviours are written at a time. ``out`` keeps its previous dataset when this fails.
    """
    out = Path(out)
    for date in (history_end, label_end):
        date_to_ts(date)  # fail early on a malformed date
    files: dict = {}
    user, item, ts, user_keys, item_keys = read_reviews(reviews, files)
    text, meta_counts = read_meta(meta, item_keys, files)
    release = _check_releases(files)
    review_files = [f for f in files.values() if f["kind"] == "reviews"]
    if user.size == 0:
        first_bad = {Path(p).name: f["first_malformed_line"] for p, f in files.items() if f["kind"] == "reviews"}
        raise DatasetError(f"no readable review in {', '.join(map(str, reviews))}: "
                           f"{sum(f['lines'] for f in review_files)} lines, "
                           f"{sum(f['malformed'] for f in review_files)} malformed (first malformed line: {first_bad})")

    has_meta = np.array([t is not None for t in text[:, 0]], dtype=bool)
    if not has_meta.any():
        raise DatasetError(
            f"no review matches a meta line: {len(item_keys)} reviewed items (e.g. {item_keys[0]!r}), none of them "
            f"in {', '.join(map(str, meta))} ({meta_counts['not_reviewed']} readable meta lines, all of unreviewed "
            f"items); pass the meta file of the same category and release as the reviews (e.g. Books.json.gz "
            f"with meta_Books.json.gz)"
        )
    keep = has_meta[item]
    without_meta = int((~keep).sum())
    user, item, ts = user[keep], item[keep], ts[keep]
    order = np.lexsort((item, ts, user))
    user, item, ts = user[order], item[order], ts[order]
    dup = np.r_[False, (user[1:] == user[:-1]) & (item[1:] == item[:-1]) & (ts[1:] == ts[:-1])]
    user, item, ts = user[~dup], item[~dup], ts[~dup]

    history_end, label_end = default_windows(ts, history_end, label_end)
    in_history = ts < date_to_ts(history_end)
    in_label = ~in_history & (ts < date_to_ts(label_end))
    if not in_history.any() or not in_label.any():
        empty = (f"no review before history_end {history_end}" if not in_history.any()
                 else f"no review in the label window {history_end}..{label_end}")
        example = default_windows(ts, None, None)
        raise DatasetError(
            f"{empty}; the reviews span {ts_to_date(ts.min())}..{ts_to_date(ts.max())}: pass --history-end and "
            f"--label-end inside that span, e.g. --history-end {example[0]} --label-end {example[1]} "
            f"(the last {LABEL_MONTHS} months as label window)"
        )

    # dense ids over what is kept; users keep their sorted order, so behaviours stay sorted
    kept_users, user_id = np.unique(user, return_inverse=True)
    kept_items, item_id = np.unique(item, return_inverse=True)
    item_text = text[kept_items]
    items = pd.DataFrame({
        "item_id": np.arange(kept_items.size, dtype=np.int32),
        "title": pd.Series(item_text[:, 0], dtype="str"),
        "category": pd.Series(item_text[:, 1], dtype="str"),
        "category_path": pd.Series(item_text[:, 2], dtype="str"),
    })
    users = pd.DataFrame({"user_id": np.arange(kept_users.size, dtype=np.int64)})
    id_maps = {
        "id_map_users.parquet": pd.DataFrame({"user_id": users["user_id"],
                                              "reviewerID": np.array(user_keys, dtype=object)[kept_users]}),
        "id_map_items.parquet": pd.DataFrame({"item_id": items["item_id"],
                                              "asin": np.array(item_keys, dtype=object)[kept_items]}),
    }

    def behaviours_per(category: pd.Series) -> pd.Series:  # most behaviours first, ties by name
        counts = pd.Series(category.to_numpy()[item_id]).value_counts().sort_index()
        return counts.sort_values(ascending=False, kind="stable")

    counts = behaviours_per(items["category"])
    one_top_level = target_categories is None and counts.size == 1
    if one_top_level:  # one category file: its own top level would make every task "any purchase"
        second = items["category_path"].str.split(" > ").str[1].fillna(items["category"])
        if second.nunique() > 1:
            items["category"] = second
            counts = behaviours_per(second)
        else:
            one_top_level = False
    if target_categories is None:
        target_categories = list(counts.index[:4])
    unknown = [c for c in target_categories if c not in counts.index]
    if unknown:
        raise ValueError(f"--target-category {unknown} not among the categories: {', '.join(counts.index[:30])}")

    def total(kind: str, key: str) -> int:
        return int(sum(f[key] for f in files.values() if f["kind"] == kind))

    report = {
        "files": files,
        "reviews": {"lines": total("reviews", "lines"), "blank": total("reviews", "blank_lines"),
                    "malformed": total("reviews", "malformed"), "without_meta_dropped": without_meta,
                    "duplicates_dropped": int(dup.sum()), "behaviors": int(user_id.size)},
        "meta": {"lines": total("meta", "lines"), "blank": total("meta", "blank_lines"),
                 "malformed": total("meta", "malformed"), "duplicate_lines": meta_counts["duplicate_lines"],
                 "not_reviewed": meta_counts["not_reviewed"], "items": int(kept_items.size)},
        "items_with_empty_title": meta_counts["items_with_empty_title"],
    }
    with behavior_writer(out) as write:
        for lo in range(0, user_id.size, chunk_size):
            write(user_id[lo:lo + chunk_size], item_id[lo:lo + chunk_size], ts[lo:lo + chunk_size])
    meta_json = {
        "name": f"amazon-{release}",
        "source": "amazon",
        "history_start": None,
        "history_end": history_end,
        "label_end": label_end,
        "tasks": [{"name": f"future_{c}", "kind": "binary", "rule": {"future_category": c}} for c in target_categories],
        "inputs": {"reviews": [str(p) for p in reviews], "meta": [str(p) for p in meta]},
        "prep_report": report,
        "notes": (
            f"Amazon review data ({release} release); a review is a behaviour. History: every review before "
            f"{history_end}; label window {history_end}..{label_end} (exclusive). "
            f"Dropped: {without_meta} reviews of items without metadata, {int(dup.sum())} duplicate reviews; "
            f"{report['reviews']['malformed'] + report['meta']['malformed']} malformed lines skipped "
            f"(per file in prep_report)."
            + (" All items share one top-level category, so category (and the tasks) is the second level of "
               "the category path." if one_top_level else "")
        ),
    }
    dataset = write_dataset(out, items, None, users, meta_json, extras=id_maps)
    if not quiet:
        print(format_summary(dataset.meta["summary"]))
    return out
