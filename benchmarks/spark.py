"""The Spark path against the in-memory one: equality, behaviours/s, users/s, driver memory.

    python benchmarks/spark.py --json benchmarks/results/spark.json      # 1e7 behaviours
    python benchmarks/spark.py --json /tmp/spark_quick.json --quick      # 1e6, for development

In one process, on ``local[2]`` (both Spark and numpy get the same machine):

- ``boi_equal``: :func:`lurm_lite.spark.boi_frame` on the synthetic default dataset (its true
  item topics as a hard assignment, month and year) equals :func:`lurm_lite.boi.build_boi`
  in every row, period and value. This job also warms the JVM up (code generation), which the
  timed jobs below do not pay.
- ``encode_max_abs_diff``: R^ of :func:`lurm_lite.spark.encode_frame` against
  :func:`lurm_lite.user_training.encode_users` on those users, a SMEN of the default scale
  at its initial weights (the equality does not depend on training);
  ``spark_encode_users_per_s`` / ``numpy_encode_users_per_s``: that job and the in-process
  call.
- ``spark_boi_behaviors_per_s``: month + year BoI of the synthetic log of benchmarks/boi.py
  (D = 1e5, 1e6 items) read from 8 Parquet files and written as BoI Parquet, against
  ``numpy_boi_behaviors_per_s``, build_boi on the same arrays in memory.
- ``driver_peak_rss_mb``: peak resident memory of the driver, this Python process plus its
  JVM (sampled every 0.1 s; in ``local`` mode that JVM runs the executors too), and
  ``python_driver_peak_rss_mb`` of this process alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from boi import N_INTERESTS, N_ITEMS, peak_rss_mb, synthetic_log  # noqa: E402  (benchmarks/boi.py)
from data_prep import synthetic  # noqa: E402
from lurm_lite import spark as lurm_spark  # noqa: E402
from lurm_lite.boi import build_boi, load_boi_parquet  # noqa: E402
from lurm_lite.config import for_scale  # noqa: E402
from lurm_lite.io import save_json  # noqa: E402
from lurm_lite.smen import SMEN  # noqa: E402
from lurm_lite.user_training import encode_users  # noqa: E402

GRANULARITIES = ("month", "year")


class PeakRSS:
    """Peak RSS (MB) of this process and its child processes (the JVM), sampled in a thread."""

    def __init__(self, every_s: float = 0.1):
        self.every_s, self.peak_mb, self._stop = every_s, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=False)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:  # a child that just ended
                    pass
            self.peak_mb = max(self.peak_mb, total / 2**20)
            self._stop.wait(self.every_s)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def same_boi(a, b) -> bool:
    return (np.array_equal(a.user_ids, b.user_ids) and np.array_equal(a.user_ptr, b.user_ptr)
            and np.array_equal(a.period, b.period) and a.matrix.shape == b.matrix.shape
            and all(np.array_equal(getattr(a.matrix, k), getattr(b.matrix, k)) for k in ("indptr", "indices", "data")))


def bench_synthetic_default(spark, work: Path) -> dict:
    """Equality of BoI and R^ on the synthetic default dataset, and the encoding rates."""
    root = synthetic.generate(work / "synthetic", scale="default", seed=0)
    topic = np.load(root / "ground_truth" / "item_topic.npy")
    D = int(topic.max()) + 1
    behaviors = pd.read_parquet(root / "behaviors.parquet")
    want = build_boi(behaviors.user_id.to_numpy(), behaviors.item_id.to_numpy(), behaviors.ts.to_numpy(),
                     topic, D, GRANULARITIES)
    start = time.perf_counter()
    lurm_spark.write_boi(lurm_spark.boi_frame(spark, root / "behaviors.parquet", topic, D, GRANULARITIES),
                         work / "boi_default")
    first_job_seconds = time.perf_counter() - start
    got = {g: load_boi_parquet(work / "boi_default", g, D) for g in GRANULARITIES}
    torch.manual_seed(0)
    config = for_scale("default").smen
    model = SMEN(D, hidden=config.hidden, anchors=config.anchors, scales=config.scales).eval()
    user_ids = want["month"].user_ids
    start = time.perf_counter()
    reps = encode_users(model, want, user_ids, "cpu")
    numpy_seconds = time.perf_counter() - start
    start = time.perf_counter()
    lurm_spark.write_user_reps(lurm_spark.encode_frame(spark, work / "boi_default", model), work / "reps")
    spark_seconds = time.perf_counter() - start
    spark_ids, spark_reps = lurm_spark.load_user_reps_parquet(work / "reps")
    assert np.array_equal(spark_ids, user_ids), "Spark encoded other users than encode_users"
    return {
        "default_behaviors": len(behaviors),
        "default_users": len(user_ids),
        "boi_equal": all(same_boi(got[g], want[g]) for g in GRANULARITIES),
        "spark_boi_first_job_seconds": first_job_seconds,
        "encode_max_abs_diff": float(np.abs(spark_reps - reps).max()),
        "representation_size": int(reps.shape[1]),
        "spark_encode_seconds": spark_seconds,
        "spark_encode_users_per_s": len(user_ids) / spark_seconds,
        "numpy_encode_users_per_s": len(user_ids) / numpy_seconds,
    }


def bench_boi_rate(spark, work: Path, n_behaviors: int, seed: int = 0) -> dict:
    """Behaviours/s of the Spark BoI (Parquet in, Parquet out) and of build_boi in memory."""
    user_ids, item_ids, ts = (np.concatenate(a) for a in zip(*synthetic_log(n_behaviors, seed)))
    assignment = np.random.default_rng(seed + 1).integers(0, N_INTERESTS, N_ITEMS)
    folder = work / "log"
    folder.mkdir()
    for k, part in enumerate(np.array_split(np.arange(n_behaviors), 8)):
        pd.DataFrame({"user_id": user_ids[part], "item_id": item_ids[part], "ts": ts[part]}).to_parquet(
            folder / f"part-{k}.parquet", index=False)
    start = time.perf_counter()
    want = build_boi(user_ids, item_ids, ts, assignment, N_INTERESTS, GRANULARITIES)
    numpy_seconds = time.perf_counter() - start
    start = time.perf_counter()
    lurm_spark.write_boi(lurm_spark.boi_frame(spark, folder, assignment, N_INTERESTS, GRANULARITIES), work / "boi")
    spark_seconds = time.perf_counter() - start
    return {
        "n_behaviors": n_behaviors,
        "n_users": int(want["month"].n_users),
        "n_interests": N_INTERESTS,
        "boi_rows_month": int(want["month"].matrix.shape[0]),
        "spark_boi_seconds": spark_seconds,
        "spark_boi_behaviors_per_s": n_behaviors / spark_seconds,
        "numpy_boi_seconds": numpy_seconds,
        "numpy_boi_behaviors_per_s": n_behaviors / numpy_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--quick", action="store_true", help="1e6 behaviours instead of 1e7")
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    args = parser.parse_args()
    n_behaviors = 1_000_000 if args.quick else 10_000_000
    with PeakRSS() as rss, tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        spark = lurm_spark.session(args.master, conf={"spark.driver.memory": "2g"})
        results = {"master": args.master, "spark_version": spark.version,
                   "session_start_seconds": time.perf_counter() - start,
                   "cpu_cores": psutil.cpu_count(), "granularities": list(GRANULARITIES)}
        results.update(bench_synthetic_default(spark, Path(tmp)))
        results.update(bench_boi_rate(spark, Path(tmp), n_behaviors))
        spark.stop()
    results.update({"driver_peak_rss_mb": rss.peak_mb, "python_driver_peak_rss_mb": peak_rss_mb()})
    save_json(args.json, results)
    print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in results.items()})


if __name__ == "__main__":
    main()
