"""Bring-your-own logs end to end: three public-style logs, prepared and run with no ``-p``.

    python benchmarks/own_logs.py --json benchmarks/results/own_logs.json [--work-dir runs/own_logs]
                                  [--scale default] [--prep-only]

The logs a new user most often brings, written from real MovieLens-100k (the PyPI copy of
``data_prep.movielens.fetch``) and from a generated Amazon-2018-style category:

- ``ids_tab``: the ratings as an ids-only log, tab separated although named ``.csv``, no
  items table (items get the item-id path of the item encoder; the only task is the
  label-free ``active_in_label_window``);
- ``genre_lists``: the ratings as a comma CSV with an items CSV whose genre cell holds
  ``Animation|Children's|Comedy`` lists (tasks ``future_<genre>``);
- ``amazon_150``: one Amazon 2018 category of 150 items and 900 users (gzipped reviews and
  meta, HTML entities in titles), so the default scale's D = 1000 must be capped to the data
  and the tasks come from the second level of the category path.

Each is prepared with ``python -m data_prep`` into ``WORK/<name>/dataset`` and the whole
notebook chain runs on it with ``python -m lurm_lite run --dataset ... --scale SCALE``, no
``-p``. The JSON holds per log the prep and chain return codes and seconds, the tasks
scored and skipped, LURM's and the best method's AUC per task, and the item-embedding and
clustering facts the issue asks for (distinct embedding rows, D, largest interest's share).
Run it alone: it is a timing as well as a check.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_prep import movielens  # noqa: E402
from lurm_lite.results import load_results  # noqa: E402

AMAZON_SUBCATEGORIES = ("Guitars", "Drums", "Keyboards", "Microphones", "Cables", "Amplifiers")


def write_logs(raw: Path, out: Path, seed: int = 0) -> dict[str, list[str]]:
    """Write the three raw logs into ``out``; returns the ``data_prep`` arguments of each."""
    out.mkdir(parents=True, exist_ok=True)
    ratings = movielens.read_atomic(raw / "ml-100k.inter")  # user_id, item_id, rating, timestamp
    ratings.columns = ["user", "movie", "rating", "ts"]
    movies = movielens.read_atomic(raw / "ml-100k.item")
    movies.columns = ["movie", "title", "year", "genres"]
    ratings.to_csv(out / "ids_only.csv", sep="\t", index=False)
    ratings[["user", "movie", "ts"]].to_csv(out / "ratings.csv", index=False)
    movies.assign(genres=movies.genres.fillna("").str.split().str.join("|"),
                  title=movies.title + " (" + movies.year.astype(str) + ")")[["movie", "title", "genres"]].to_csv(
        out / "movies.csv", index=False)
    rng = np.random.default_rng(seed)
    group = rng.integers(0, len(AMAZON_SUBCATEGORIES), 150)  # (items,) sub-category of each item
    with gzip.open(out / "meta_Musical_Instruments.json.gz", "wt") as meta:
        for i, g in enumerate(group):
            meta.write(json.dumps({"asin": f"B{i:09d}", "title": f"{AMAZON_SUBCATEGORIES[g]} model {i} &amp; case",
                                   "category": ["Musical Instruments", AMAZON_SUBCATEGORIES[g]]}) + "\n")
    start, end = (int(np.datetime64(d, "s").astype(np.int64)) for d in ("2013-01-01", "2018-10-15"))
    with gzip.open(out / "Musical_Instruments.json.gz", "wt") as reviews:
        for user in range(900):  # each user mostly buys from one favourite sub-category
            favourite = rng.integers(0, len(AMAZON_SUBCATEGORIES))
            for _ in range(rng.integers(3, 30)):
                g = favourite if rng.random() < 0.7 else rng.integers(0, len(AMAZON_SUBCATEGORIES))
                item = rng.choice(np.flatnonzero(group == g))
                reviews.write(json.dumps({"reviewerID": f"A{user:08d}", "asin": f"B{item:09d}",
                                          "unixReviewTime": int(rng.integers(start, end)), "overall": 5.0}) + "\n")
    return {
        "ids_tab": ["tabular", "--behaviors", str(out / "ids_only.csv"), "--user-col", "user", "--item-col", "movie",
                    "--time-col", "ts"],
        "genre_lists": ["tabular", "--behaviors", str(out / "ratings.csv"), "--items", str(out / "movies.csv"),
                        "--user-col", "user", "--item-col", "movie", "--time-col", "ts", "--title-col", "title",
                        "--category-col", "genres"],
        "amazon_150": ["amazon", "--reviews", str(out / "Musical_Instruments.json.gz"),
                       "--meta", str(out / "meta_Musical_Instruments.json.gz")],
    }


def timed(cmd: list[str], log: Path) -> tuple[int, float]:
    """Run ``cmd`` from the repo root with its output in ``log``: (return code, seconds)."""
    start = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    return rc, round(time.perf_counter() - start, 1)


def summarize_run(run_dir: Path) -> dict[str, Any]:
    """Tasks, LURM against the best method, and the item/interest facts of one finished run."""
    results = load_results(run_dir / "results.json")
    embeddings = np.load(run_dir / "item_embeddings.npy")  # (n_items, H)
    interest_sizes = np.bincount(np.load(run_dir / "item_interest.npy"))  # (D,)
    per_task = {}
    for task, methods in results["tasks"].items():
        best = max(methods, key=lambda m: methods[m]["auc"])
        per_task[task] = {"lurm_auc": round(100 * methods["LURM"]["auc"], 2), "best": best,
                          "best_auc": round(100 * methods[best]["auc"], 2)}
    return {"tasks": per_task, "skipped": results.get("skipped", {}),
            "items": int(len(embeddings)), "distinct_embedding_rows": int(len(np.unique(embeddings, axis=0))),
            "n_interests": int(len(interest_sizes)),
            "largest_interest_share": round(float(interest_sizes.max() / interest_sizes.sum()), 4)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="output JSON")
    parser.add_argument("--work-dir", default="runs/own_logs", help="raw logs, datasets and run folders")
    parser.add_argument("--scale", default="default")
    parser.add_argument("--prep-only", action="store_true", help="prepare the datasets, run no chain")
    args = parser.parse_args(argv)
    work = (ROOT / args.work_dir).resolve()
    preps = write_logs(movielens.fetch(), work / "raw")
    report: dict[str, Any] = {"scale": args.scale, "logs": {}}
    for name, prep_args in preps.items():
        dataset, run_dir = work / name / "dataset", work / name / "run"
        dataset.parent.mkdir(parents=True, exist_ok=True)
        entry: dict[str, Any] = {}
        entry["prep_rc"], entry["prep_seconds"] = timed(
            [sys.executable, "-m", "data_prep", *prep_args, "--out", str(dataset)], work / name / "prep.log")
        if entry["prep_rc"] == 0 and not args.prep_only:
            entry["chain_rc"], entry["chain_seconds"] = timed(
                [sys.executable, "-m", "lurm_lite", "run", "--dataset", str(dataset), "--scale", args.scale,
                 "--run-dir", str(run_dir)], work / name / "chain.log")
            if entry["chain_rc"] == 0:
                entry.update(summarize_run(run_dir))
        report["logs"][name] = entry
        print(name, json.dumps(entry), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print("wrote", args.json)


if __name__ == "__main__":
    main()
