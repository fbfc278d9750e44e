"""Reference implementations and synthetic inputs shared by tests/ and benchmarks/.

Neither folder is a package, so what both need lives here, in the package:

- :func:`dense_multi_anchor`: §2.2.1 eq. (5)-(6) written densely over all D interests, the
  reference that ``lurm_lite.smen.MultiAnchor`` (non-zeros only) must equal;
- :func:`random_boi`: random BoI sequences (eq. 4) with uniform or Zipf-distributed interests;
- :func:`timed` and :func:`mm_gflops`: the benchmarks' median timer and the machine's plain
  matrix-product rate, the denominator of their ``*_flops_fraction`` ratios.

Nothing in the training or encoding chain calls these.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from lurm_lite.boi import BoISequences


def dense_multi_anchor(b: torch.Tensor, W_e: torch.Tensor, W_a: torch.Tensor, W_p: torch.Tensor) -> torch.Tensor:
    """Reference eq. (5)-(6) over all D interests, dense: b (n_rows, D) -> r (n_rows, M, H).

    alpha_ij for every j in 1..D, then r^i = ReLU(sum_{j=1..D} alpha_ij b_j W^e_j) as one
    (n_rows, D) x (D, M*H) product: O(n_rows D M H) time and O(D M H) memory.
    """
    D, H = W_e.shape
    M = W_a.shape[0]
    k = F.relu(W_e) @ W_p.T  # (D, H) k_j = W^p ReLU(W^e_j)
    alpha = torch.softmax(k @ W_a.T, dim=1)  # (D, M) eq. (6)
    V = (alpha[:, :, None] * W_e[:, None, :]).reshape(D, M * H)  # (D, M*H) alpha_ij W^e_j
    return F.relu(b @ V).reshape(-1, M, H)  # (n_rows, M, H) eq. (5)


def random_boi(n_users: int, D: int, max_periods: int, nnz: int, seed: int, granularity: str = "month",
               fixed: dict[int, int] | None = None, zipf: float | None = None) -> BoISequences:
    """Random BoI sequences: 1..max_periods rows per user (``fixed``: user -> rows), <= nnz b_j > 0 a row.

    Each row draws ``nnz`` behaviours; their interests are uniform over 0..D-1 (the most
    distinct interests U a batch can hold), or with ``zipf = s`` Zipf-distributed,
    P(j) ~ 1 / (rank_j + 1)^s over a random ranking of the D interests (a few popular
    interests, a long tail, as in real logs). b_j = log(1 + count), eq. (4).
    """
    rng = np.random.default_rng(seed)
    n_rows = rng.integers(1, max_periods + 1, n_users)
    for user, n in (fixed or {}).items():
        n_rows[user] = n
    total = int(n_rows.sum())
    if zipf is None:
        behaviours = rng.integers(0, D, (total, nnz))  # (total, nnz) interests, uniform
    else:
        p = 1.0 / np.arange(1, D + 1) ** zipf  # (D,) by popularity rank
        behaviours = rng.permutation(D)[rng.choice(D, (total, nnz), p=p / p.sum())]  # (total, nnz)
    matrix = sp.csr_matrix((np.ones(total * nnz, np.float32), (np.repeat(np.arange(total), nnz), behaviours.ravel())),
                           shape=(total, D))
    matrix.sum_duplicates()
    matrix.data = np.log1p(matrix.data)  # b_j = log(1 + count), eq. (4)
    period = np.concatenate([np.sort(rng.choice(200, n, replace=False)) for n in n_rows]).astype(np.int64)
    return BoISequences(matrix, np.arange(n_users, dtype=np.int64) * 10,
                        np.concatenate([[0], np.cumsum(n_rows)]).astype(np.int64), period, granularity)


def timed(fn: Callable[[], object], dev: torch.device, reps: int, budget_s: float = 20.0) -> tuple[float, int]:
    """Median wall time (ms) of ``fn()`` after one warm-up call, and the number of timed calls.

    CUDA work is synchronised around each call; timing stops early once ``budget_s`` seconds
    of calls have run (at least one call is timed).
    """
    fn()
    times = []
    for _ in range(reps):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - start)
        if sum(times) > budget_s:
            break
    return 1000 * statistics.median(times), len(times)


def mm_gflops(dev: torch.device, reps: int = 5) -> float:
    """GFLOP/s of a plain float32 ``torch.mm`` (4096 x 1024) @ (1024 x 1024) on ``dev``."""
    a, b = torch.randn(4096, 1024, device=dev), torch.randn(1024, 1024, device=dev)  # (4096, 1024), (1024, 1024)
    ms, _ = timed(lambda: a @ b, dev, max(reps, 5))
    return 2 * 4096 * 1024 * 1024 / (ms / 1000) / 1e9
