"""Amazon review data 2018 (Ni, Li, McAuley, EMNLP 2019) raw files -> a contract folder.

Inputs are the files as distributed: review files ``<Category>.json.gz`` or
``<Category>_5.json(.gz)`` and metadata files ``meta_<Category>.json(.gz)``, one JSON
object per line (plain or gzip, detected by the magic bytes). Fields used:

- reviews: ``reviewerID``, ``asin``, ``unixReviewTime`` (int seconds). A review is a behaviour.
- meta: ``asin``, ``title`` (HTML-unescaped), ``category`` (list, e.g. ``["Books",
  "Literature & Fiction"]``): ``category`` = its first element (top level), or the meta
  file's name (``meta_Musical_Instruments`` -> ``Musical Instruments``) when the list is
  empty; ``category_path`` = ``" > ".join(list)``. An empty title falls back to the
  category path, so that every item has text.

Memory stays bounded by the number of reviews times 16 bytes: files are streamed line by
line, and only compact arrays (int32 user and item indices, int64 times, in
``array.array``) and the id maps are kept; metadata is kept only for reviewed items.
Behaviours are sorted once as arrays and written ``chunk_size`` rows at a time.

Nothing is dropped silently; ``dataset.json["prep_report"]`` (and the printed summary)
counts, per file, lines and malformed lines (bad JSON, missing or mistyped fields, with
the first bad line number), plus reviews of items without metadata (dropped), duplicate
reviews (same user, item and time: dropped), duplicate meta lines (first kept) and items
with an empty title. ``id_map_users.parquet`` (user_id, reviewerID) and
``id_map_items.parquet`` (item_id, asin) are written beside the contract files.

Windows default to the paper's split (§3.2): history up to 2017-12, labels 2018-01..10.
Tasks: ``future_<category>`` for ``target_categories`` (default: the 4 most frequent top-
level categories by number of behaviours); there are no profile labels in this source.
"""

from __future__ import annotations

import gzip
import html
import json
import re
from array import array
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from data_prep.schema import behavior_writer, date_to_ts, format_summary, write_dataset
from lurm_lite.runs import atomic_path

GZIP_MAGIC = b"\x1f\x8b"
_SPACES = re.compile(r"\s+")


def _lines(path: Path) -> Iterator[bytes]:
    """Raw lines of a plain or gzip file, streamed."""
    with open(path, "rb") as fh:
        gz = fh.read(2) == GZIP_MAGIC
    opener = gzip.open if gz else open
    with opener(path, "rb") as fh:
        yield from fh


def _clean(text: str) -> str:
    return _SPACES.sub(" ", html.unescape(text)).strip()


def _file_category(path: Path) -> str:
    """``meta_Musical_Instruments.json.gz`` -> ``Musical Instruments``."""
    stem = path.name.split(".")[0]
    return stem.removeprefix("meta_").replace("_", " ")


class _Report(dict):
    """Counts of one input file: lines, malformed, first_malformed_line."""

    def __init__(self) -> None:
        super().__init__(lines=0, malformed=0, first_malformed_line=None)

    def bad(self, line_no: int) -> None:
        self["malformed"] += 1
        if self["first_malformed_line"] is None:
            self["first_malformed_line"] = line_no


def _records(paths: Sequence[str | Path], report: dict, fields) -> Iterator[tuple[Path, tuple]]:
    """Well-formed records of JSON-lines files as ``(path, fields(record))``.

    A line that is not JSON, or for which ``fields`` raises KeyError/TypeError/ValueError (a
    missing or mistyped field), is counted as malformed in ``report[path]``, never fatal.
    """
    for path in map(Path, paths):
        rep = report.setdefault(str(path), _Report())
        for line_no, line in enumerate(_lines(path), start=1):
            if not line.strip():
                continue
            rep["lines"] += 1
            try:
                values = fields(json.loads(line))
            except (ValueError, KeyError, TypeError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                rep.bad(line_no)
                continue
            yield path, values


def _review_fields(rec: dict) -> tuple[str, str, int]:
    reviewer, asin, ts = rec["reviewerID"], rec["asin"], rec["unixReviewTime"]
    if not (isinstance(reviewer, str) and isinstance(asin, str) and isinstance(ts, int)) or isinstance(ts, bool):
        raise TypeError
    return reviewer, asin, ts


def _meta_fields(rec: dict) -> tuple[str, str, list]:
    asin, title, cats = rec["asin"], rec.get("title", ""), rec.get("category", [])
    if not (isinstance(asin, str) and isinstance(title, str) and isinstance(cats, list)):
        raise TypeError
    return asin, title, cats


def read_reviews(paths: Sequence[str | Path], report: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    """Stream review files into compact arrays.

    Returns ``(user_idx int64, item_idx int64, ts int64, reviewer_ids, asins)``, where the
    indices count distinct reviewerIDs / asins in order of first appearance.
    """
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    u_arr, i_arr, t_arr = array("i"), array("i"), array("q")
    for _, (reviewer, asin, ts) in _records(paths, report, _review_fields):
        u_arr.append(users.setdefault(reviewer, len(users)))
        i_arr.append(items.setdefault(asin, len(items)))
        t_arr.append(ts)
    return (np.asarray(u_arr, dtype=np.int64), np.asarray(i_arr, dtype=np.int64), np.asarray(t_arr, dtype=np.int64),
            list(users), list(items))


def read_meta(paths: Sequence[str | Path], asins: list[str], report: dict) -> tuple[np.ndarray, dict[str, int]]:
    """Stream meta files, keeping title and categories of the reviewed ``asins`` only.

    Returns ``(text, counts)``: ``text`` (len(asins), 3) object array of title, category,
    category_path (None where an asin has no metadata); counts of duplicate meta lines and
    empty titles.
    """
    index = {a: k for k, a in enumerate(asins)}
    text = np.full((len(asins), 3), None, dtype=object)
    counts = {"duplicate_meta_lines": 0, "items_with_empty_title": 0}
    for path, (asin, title, cats) in _records(paths, report, _meta_fields):
        k = index.get(asin)
        if k is None:
            continue
        if text[k, 0] is not None:
            counts["duplicate_meta_lines"] += 1
            continue
        fallback = _file_category(path)
        cats = [c for c in (_clean(str(c)) for c in cats) if c]
        path_text = " > ".join(cats) if cats else fallback
        title = _clean(title)
        if not title:
            counts["items_with_empty_title"] += 1
            title = path_text
        text[k] = (title, cats[0] if cats else fallback, path_text)
    return text, counts


def prepare(reviews: Sequence[str | Path], meta: Sequence[str | Path], out: str | Path,
            history_end: str = "2018-01-01", label_end: str = "2018-11-01",
            target_categories: Sequence[str] | None = None, chunk_size: int = 1_000_000,
            quiet: bool = True) -> Path:
    """Prepare Amazon 2018 review + meta files as a contract folder in ``out``; returns ``out``.

    ``chunk_size`` rows of behaviours are written at a time.
    """
    out = Path(out)
    for date in (history_end, label_end):
        date_to_ts(date)  # fail early on a malformed date
    files: dict = {}
    user, item, ts, reviewer_ids, asins = read_reviews(reviews, files)
    text, meta_counts = read_meta(meta, asins, files)

    has_meta = np.array([t is not None for t in text[:, 0]], dtype=bool)
    keep = has_meta[item]
    without_meta = int((~keep).sum())
    user, item, ts = user[keep], item[keep], ts[keep]
    order = np.lexsort((item, ts, user))
    user, item, ts = user[order], item[order], ts[order]
    dup = np.r_[False, (user[1:] == user[:-1]) & (item[1:] == item[:-1]) & (ts[1:] == ts[:-1])]
    user, item, ts = user[~dup], item[~dup], ts[~dup]
    if user.size == 0:
        raise ValueError(f"no usable reviews: {len(asins)} reviewed items, none with metadata in {list(map(str, meta))}")

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
    for name, frame in (("id_map_users.parquet", pd.DataFrame({"user_id": users["user_id"],
                                                               "reviewerID": np.array(reviewer_ids, dtype=object)[kept_users]})),
                        ("id_map_items.parquet", pd.DataFrame({"item_id": items["item_id"],
                                                               "asin": np.array(asins, dtype=object)[kept_items]}))):
        with atomic_path(out / name) as tmp:
            frame.to_parquet(tmp, index=False)

    counts = pd.Series(items["category"].to_numpy()[item_id]).value_counts().sort_index()
    counts = counts.sort_values(ascending=False, kind="stable")  # ties by name
    if target_categories is None:
        target_categories = list(counts.index[:4])
    unknown = [c for c in target_categories if c not in counts.index]
    if unknown:
        raise ValueError(f"--target-category {unknown} not among the categories: {', '.join(counts.index[:30])}")

    with behavior_writer(out) as write:
        for lo in range(0, user_id.size, chunk_size):
            write(user_id[lo:lo + chunk_size], item_id[lo:lo + chunk_size], ts[lo:lo + chunk_size])
    report = {
        "files": files,
        "malformed_lines": int(sum(f["malformed"] for f in files.values())),
        "reviews_without_meta_dropped": without_meta,
        "duplicate_reviews_dropped": int(dup.sum()),
        **meta_counts,
    }
    meta_json = {
        "name": "amazon-2018",
        "source": "amazon",
        "history_start": None,
        "history_end": history_end,
        "label_end": label_end,
        "tasks": [{"name": f"future_{c}", "kind": "binary", "rule": {"future_category": c}} for c in target_categories],
        "inputs": {"reviews": [str(p) for p in reviews], "meta": [str(p) for p in meta]},
        "prep_report": report,
        "notes": (
            f"Amazon review data 2018; a review is a behaviour. History: every review before {history_end} "
            f"(the paper: up to 2017-12); label window {history_end}..{label_end} (exclusive). "
            f"Dropped: {without_meta} reviews of items without metadata, {int(dup.sum())} duplicate reviews; "
            f"{report['malformed_lines']} malformed lines skipped (per file in prep_report)."
        ),
    }
    dataset = write_dataset(out, items, None, users, meta_json)
    if not quiet:
        print(format_summary(dataset.meta["summary"]))
    return out
