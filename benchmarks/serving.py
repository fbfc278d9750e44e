"""Speed of the monthly incremental update (lurm_lite.serving) against a whole-life re-encode.

    python benchmarks/serving.py --json benchmarks/results/serving.json [--quick] [--users N] [--device auto]

Synthetic 10-year lives: 1,000 users (``--users``) x 120 calendar months (2008-07 .. 2018-06), every user
active from the first month on, each month with probability 0.6, an active month holding
20 distinct interests of D = 1,000 with counts 1..5 (b_t = log(1 + count), eq. 4). An
untrained SMEN(D, H = 128, M = 10, scales month + year) encodes them (speed does not depend
on the weights). The state is built at the end of 2018-05 (``init_state``), then:

- ``update_users_per_s``: users per second of ``serving.update`` with 2018-06's BoI (one
  multi-anchor pass and one GRU step per scale), median of 5 runs (3 with ``--quick``) after a warm-up;
- ``full_users_per_s``: users per second of ``encode_users`` over the same users' whole
  lives to the end of 2018-06 (120 GRU steps at the month scale, 11 at the year scale),
  one run (minutes on 2 CPU cores: run the script 3 times and take the median);
- ``speedup``: their ratio (target >= 20); ``max_abs_diff``: the largest difference
  between the two R^ (target <= 1e-5); ``state_bytes_per_user``: the state's arrays per
  user (2 x M x H float32 GRU states plus the open year's sparse counts);
- ``init_users_per_s``: ``init_state`` (the one whole-life pass a state costs).

``--quick``: 200 users. Speeds are per user; the default size keeps one run near 5 minutes on
2 shared CPU cores (init and re-encode are whole-life passes).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lurm_lite import io, serving  # noqa: E402
from lurm_lite.boi import BoISequences  # noqa: E402
from lurm_lite.periods import month_name, period_start_ts  # noqa: E402
from lurm_lite.smen import SMEN  # noqa: E402
from lurm_lite.user_training import encode_users  # noqa: E402

D, M, H = 1_000, 10, 128
FIRST_MONTH, MONTHS = "2008-07", 120
ACTIVE, INTERESTS_PER_MONTH, MAX_COUNT = 0.6, 20, 5


def synthetic_lives(n_users: int, seed: int) -> BoISequences:
    """Month BoI of ``n_users`` 10-year lives (see the module docstring), built vectorised."""
    rng = np.random.default_rng(seed)
    first = int(np.datetime64(FIRST_MONTH, "M").astype(np.int64))
    active = rng.random((n_users, MONTHS)) < ACTIVE  # (n_users, MONTHS)
    active[:, 0] = True  # every life starts in the first month
    user, step = np.nonzero(active)  # (n_rows,) each, user after user, months ascending
    n_rows = len(user)
    # 20 distinct interests per row: start + stride * (0..19) mod D, the stride coprime with D
    start = rng.integers(0, D, n_rows)[:, None]  # (n_rows, 1)
    stride = rng.choice(np.array([1, 3, 7, 9, 11, 13]), n_rows)[:, None]  # coprime with D: distinct columns
    cols = np.sort((start + stride * np.arange(INTERESTS_PER_MONTH)) % D, axis=1)  # (n_rows, 20)
    counts = rng.integers(1, MAX_COUNT + 1, (n_rows, INTERESTS_PER_MONTH))  # (n_rows, 20)
    indptr = np.arange(n_rows + 1, dtype=np.int64) * INTERESTS_PER_MONTH
    matrix = sp.csr_matrix((np.log1p(counts).astype(np.float32).ravel(), cols.ravel(), indptr), shape=(n_rows, D))
    user_ptr = np.r_[0, np.cumsum(np.bincount(user, minlength=n_users))].astype(np.int64)
    return BoISequences(matrix, np.arange(n_users, dtype=np.int64), user_ptr, first + step.astype(np.int64), "month")


def one_month(seqs: BoISequences, month: int) -> BoISequences:
    """The rows of ``month`` only: the BoI an update takes."""
    keep = seqs.period == month  # (n_rows,)
    row_user = np.repeat(np.arange(seqs.n_users), np.diff(seqs.user_ptr))[keep]
    users, per_user = np.unique(row_user, return_counts=True)
    return BoISequences(seqs.matrix[keep], seqs.user_ids[users], np.r_[0, np.cumsum(per_user)].astype(np.int64),
                        seqs.period[keep], "month")


def timed(fn, reps: int, warm_up: bool) -> tuple[float, object]:
    """(median seconds of ``reps`` calls of fn, its last result), after one untimed call if ``warm_up``."""
    if warm_up:
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--quick", action="store_true", help="200 users, 3 update runs instead of 5")
    parser.add_argument("--users", type=int, default=1_000, help="users of 10-year lives (rates are per user)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    dev = io.device(args.device)
    n_users, update_reps = (200, 3) if args.quick else (args.users, 5)
    t0 = time.perf_counter()
    seqs = synthetic_lives(n_users, seed=0)
    boi = {"month": seqs}
    last = int(seqs.period.max())  # 2018-06, the month of the update
    end = int(period_start_ts("month", np.array([last + 1]))[0])
    torch.manual_seed(0)
    model = SMEN(D, H, M, ("month", "year")).to(dev).eval()

    init_s, state = timed(lambda: serving.init_state(model, boi, seqs.user_ids, dev,
                                                     history_end_ts=int(period_start_ts("month", np.array([last]))[0])),
                          reps=1, warm_up=False)
    month_boi = one_month(seqs, last)
    update_s, (new_state, update_out) = timed(lambda: serving.update(model, state, month_boi, last, dev),
                                              reps=update_reps, warm_up=True)
    full_s, full_out = timed(lambda: encode_users(model, boi, new_state.user_ids, dev, history_end_ts=end),
                             reps=1, warm_up=False)
    results = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "data": {"users": n_users, "months": MONTHS, "update_month": month_name(last),
                 "rows": int(seqs.matrix.shape[0]), "nonzeros_per_row": INTERESTS_PER_MONTH, "D": D, "M": M, "H": H},
        "update_users_per_s": n_users / update_s,
        "full_users_per_s": n_users / full_s,
        "speedup": full_s / update_s,
        "max_abs_diff": float(np.abs(update_out - full_out).max()),
        "state_bytes_per_user": new_state.nbytes() / n_users,
        "init_users_per_s": n_users / init_s,
        "update_s": update_s,
        "full_s": full_s,
        "quick": args.quick,
        "wall_s": time.perf_counter() - t0,
    }
    io.save_json(args.json, results)
    print(f"update {results['update_users_per_s']:.0f} users/s, whole-life re-encode "
          f"{results['full_users_per_s']:.0f} users/s: speedup {results['speedup']:.1f}x (target >= 20), "
          f"max_abs_diff {results['max_abs_diff']:.1e} (target <= 1e-5), "
          f"{results['state_bytes_per_user']:.0f} state bytes/user; wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
