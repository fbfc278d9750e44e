"""MovieLens-100k (real ratings, 943 users, 1682 movies, 100,000 ratings) as a contract folder.

The GroupLens site is not always reachable, but PyPI is: the wheel ``recbole==1.2.1``
ships the dataset in RecBole's atomic format (tab separated, ``field:type`` headers) as
``recbole/dataset_example/ml-100k/ml-100k.{inter,item,user}``. :func:`fetch` downloads
that wheel with ``pip download --no-deps`` (recbole is never installed), checks its
sha256 against :data:`WHEEL_SHA256` and extracts the three files into the cache
(``$LURM_LITE_CACHE`` or ``~/.cache/lurm_lite``); when they are there already nothing is
downloaded.

Mapping to the contract (docs/architecture.md, section 1):

- items: ``item_id`` = MovieLens id - 1 order (dense, ``source_item_id`` keeps the original),
  ``title`` = "Toy Story (1995)", ``category`` = genres joined by ``|``.
- behaviours: every rating (whatever its value) at its timestamp; ``user_id`` = MovieLens id.
- users: ``age_group`` in the ML-1M bins (Under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+),
  ``gender`` (M/F), ``occupation``.

Windows. Ratings span 1997-09-20 .. 1998-04-22 and most users rate in one burst, so few
users have behaviour on both sides of any date. ``history_end = 1998-01-01`` maximises
that overlap among month boundaries (138 users; 530 have history, 551 label-window
behaviour); ``label_end = 1998-04-23`` is the day after the last rating. Tasks:

- ``age`` and ``gender`` (profile): the 530 users with history behaviour.
- ``future_<genre>`` for the three genres whose positive rate among users active in both
  windows is closest to 50 % (Musical, Animation, Horror on the real data), with
  ``population: active_in_label_window``: the 138 users who rate both before and after
  history_end; label 1 when they rate a movie of that genre after it.

The exact counts are written to ``dataset.json["notes"]`` and ``["summary"]["tasks"]``.
"""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.schema import Dataset, format_summary, task_labels, write_dataset
from lurm_lite.io import atomic_path

WHEEL_REQUIREMENT = "recbole==1.2.1"
WHEEL_FILE = "recbole-1.2.1-py3-none-any.whl"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
MEMBER_DIR = "recbole/dataset_example/ml-100k"
RAW_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")

HISTORY_END = "1998-01-01"
LABEL_END = "1998-04-23"
N_GENRE_TASKS = 3
AGE_BINS = (0, 18, 25, 35, 45, 50, 56, 200)  # ML-1M bins, [lo, hi)
AGE_LABELS = ("Under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")


class DownloadError(ConnectionError):
    """``pip download`` of the wheel failed (no network to PyPI, or pip refused)."""


def default_cache() -> Path:
    """``$LURM_LITE_CACHE`` or ``~/.cache/lurm_lite``."""
    return Path(os.environ.get("LURM_LITE_CACHE") or Path.home() / ".cache" / "lurm_lite")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(dest: Path) -> Path:
    """``python -m pip download --no-deps recbole==1.2.1 -d dest``; returns the wheel path."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           WHEEL_REQUIREMENT, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / WHEEL_FILE
    if proc.returncode != 0 or not wheel.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DownloadError(f"`{' '.join(cmd[1:])}` failed (exit {proc.returncode}): {' | '.join(tail)}")
    return wheel


def extract(wheel: Path, dest: Path, sha256: str = WHEEL_SHA256) -> Path:
    """Check the wheel's sha256, then extract only the three ml-100k files into ``dest``."""
    actual = sha256_of(wheel)
    if actual != sha256:
        raise ValueError(f"{wheel}: sha256 {actual} does not match the pinned {sha256}")
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in RAW_FILES:
            member = f"{MEMBER_DIR}/{name}"
            try:
                data = zf.read(member)
            except KeyError:
                raise ValueError(f"{wheel}: member {member} not found") from None
            with atomic_path(dest / name) as tmp:
                tmp.write_bytes(data)
    return dest


def fetch(cache: str | Path | None = None) -> Path:
    """The folder holding ml-100k.{inter,item,user}, downloading the wheel only when needed."""
    cache = Path(cache) if cache else default_cache()
    raw = cache / "ml-100k"
    if all((raw / name).is_file() for name in RAW_FILES):
        return raw
    wheel = download_wheel(cache)
    extract(wheel, raw)
    wheel.unlink()
    return raw


def read_atomic(path: Path) -> pd.DataFrame:
    """Read a RecBole atomic file: tab separated, header ``field:type``; columns named ``field``."""
    frame = pd.read_csv(path, sep="\t", dtype=str, quoting=csv.QUOTE_NONE, keep_default_na=False)
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    return frame


def _require(frame: pd.DataFrame, path: Path, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path.name}: missing column(s) {missing}; header has {list(frame.columns)}")


def _to_int(series: pd.Series, path: Path, column: str) -> np.ndarray:
    """Integers from text (``881250949`` or ``881250949.0``); bad values name the row."""
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{path.name}: column {column!r} is not numeric at data row {i}: {series.iloc[i]!r}")
    return values.to_numpy().astype(np.int64)


def build(raw: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Contract frames and metadata (without summary) from the three raw files in ``raw``."""
    inter_path, item_path, user_path = (raw / name for name in RAW_FILES)
    inter, item, user = read_atomic(inter_path), read_atomic(item_path), read_atomic(user_path)
    _require(inter, inter_path, ("user_id", "item_id", "timestamp"))
    _require(item, item_path, ("item_id", "movie_title", "release_year", "class"))
    _require(user, user_path, ("user_id", "age", "gender", "occupation"))

    source_item = _to_int(item["item_id"], item_path, "item_id")
    order = np.argsort(source_item, kind="stable")
    item = item.iloc[order].reset_index(drop=True)
    source_item = source_item[order]
    year = item["release_year"].str.strip()
    title = item["movie_title"].str.strip() + np.where(year != "", " (" + year + ")", "")
    items = pd.DataFrame({
        "item_id": np.arange(len(item), dtype=np.int32),
        "title": title,
        "category": item["class"].str.split().str.join("|").replace("", "unknown"),
        "source_item_id": source_item,
    })

    inter_item = _to_int(inter["item_id"], inter_path, "item_id")
    pos = np.clip(np.searchsorted(source_item, inter_item), 0, len(source_item) - 1)
    unknown = source_item[pos] != inter_item
    if unknown.any():
        i = int(np.argmax(unknown))
        raise ValueError(f"{inter_path.name}: column 'item_id' at data row {i} ({inter_item[i]}) is not in {item_path.name}")
    behaviors = pd.DataFrame({
        "user_id": _to_int(inter["user_id"], inter_path, "user_id"),
        "item_id": pos.astype(np.int32),
        "ts": _to_int(inter["timestamp"], inter_path, "timestamp"),
    }).sort_values(["user_id", "ts", "item_id"], kind="stable").reset_index(drop=True)

    age = _to_int(user["age"], user_path, "age")
    users = pd.DataFrame({
        "user_id": _to_int(user["user_id"], user_path, "user_id"),
        "age_group": np.array(AGE_LABELS)[np.searchsorted(AGE_BINS, age, side="right") - 1],
        "gender": user["gender"].str.strip(),
        "occupation": user["occupation"].str.strip(),
    })

    meta = {
        "name": "movielens-100k",
        "source": "movielens",
        "history_start": None,
        "history_end": HISTORY_END,
        "label_end": LABEL_END,
        "tasks": [
            {"name": "age", "kind": "multiclass", "rule": {"profile": "age_group"}},
            {"name": "gender", "kind": "binary", "rule": {"profile": "gender"}},
        ],
        "origin": f"PyPI wheel {WHEEL_REQUIREMENT} (sha256 {WHEEL_SHA256}), {MEMBER_DIR}",
    }
    dataset = Dataset(items=items, behaviors=behaviors, users=users, meta=meta)
    genre_tasks, rates = _genre_tasks(dataset)
    meta["tasks"] = genre_tasks + meta["tasks"]
    n_profile = task_labels(dataset, meta["tasks"][-1])[0].size
    n_future = task_labels(dataset, genre_tasks[0])[0].size if genre_tasks else 0
    meta["notes"] = (
        f"Real MovieLens-100k ratings (every rating is a behaviour). history_end {HISTORY_END} is the month "
        f"boundary with the most users rating on both sides; label_end {LABEL_END} is the day after the last "
        f"rating. Profile tasks keep the {n_profile} users with history behaviour. future_<genre> tasks use "
        f"population active_in_label_window: the {n_future} users who rate on both sides of history_end; "
        f"genres chosen as the {N_GENRE_TASKS} with positive rate closest to 50% among them "
        f"({', '.join(f'{g} {r:.0%}' for g, r in rates)})."
    )
    return items, behaviors, users, meta


def _genre_tasks(dataset: Dataset) -> tuple[list[dict], list[tuple[str, float]]]:
    """The N_GENRE_TASKS future-genre tasks whose positive rate is closest to 0.5."""
    genres = sorted(set(dataset.items["category"].str.split("|").explode()) - {"unknown"})
    candidates = []
    for genre in genres:
        task = {"name": f"future_{genre}", "kind": "binary",
                "rule": {"future_category": genre, "population": "active_in_label_window"}}
        _, y = task_labels(dataset, task)
        if y.size:
            candidates.append((abs(y.mean() - 0.5), genre, float(y.mean()), task))
    chosen = sorted(candidates)[:N_GENRE_TASKS]
    return [c[3] for c in chosen], [(c[1], c[2]) for c in chosen]


def prepare(out: str | Path, cache: str | Path | None = None, raw_dir: str | Path | None = None,
            quiet: bool = True) -> Path:
    """Write MovieLens-100k as a contract folder to ``out``; returns ``out``.

    ``raw_dir`` points at a folder with the three raw files (skips :func:`fetch`).
    """
    raw = Path(raw_dir) if raw_dir else fetch(cache)
    items, behaviors, users, meta = build(raw)
    dataset = write_dataset(out, items, behaviors, users, meta)
    if not quiet:
        print(format_summary(dataset.meta["summary"]))
    return Path(out)
