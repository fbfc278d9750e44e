"""Bag-of-Interests features, eq. (4) of the paper (§2.1.2).

For a user and a time period t with behaviours S_t = {x_1..x_|S_t|}, the BoI feature is

    b_t = [log(1 + sum_i I(x_i in c_1)), ..., log(1 + sum_i I(x_i in c_D))]   in R^D

where c_1..c_D are the D interests (k-means clusters of item embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from lurm_lite.runs import save_npz


@dataclass
class BoISequences:
    """The BoI sequences B = {b_t1..b_tN} of many users at one granularity.

    Rows of ``matrix`` are b_t for the non-empty periods of each user, user after user,
    periods ascending, so one user's sequence is the contiguous slice
    ``matrix[user_ptr[k]:user_ptr[k + 1]]``.
    """

    matrix: sp.csr_matrix  # (n_rows, D) float32, b_t = log(1 + count)
    user_ids: np.ndarray  # (n_users,) int64, ascending
    user_ptr: np.ndarray  # (n_users + 1,) int64 row offsets per user
    period: np.ndarray  # (n_rows,) int64 period index, ascending within a user
    granularity: str  # "month" | "year" | "<N>d"

    @property
    def n_interests(self) -> int:
        """D, the width of every b_t."""
        return self.matrix.shape[1]

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def user_rows(self, k: int) -> sp.csr_matrix:
        """B of the k-th user: (N_k, D)."""
        return self.matrix[self.user_ptr[k] : self.user_ptr[k + 1]]


def save_boi(path: str | Path, seqs: BoISequences) -> Path:
    """Write ``seqs`` atomically as one uncompressed ``.npz``."""
    m = seqs.matrix.tocsr()
    return save_npz(
        path,
        data=m.data.astype(np.float32),
        indices=m.indices,
        indptr=m.indptr,
        shape=np.asarray(m.shape, dtype=np.int64),
        user_ids=seqs.user_ids,
        user_ptr=seqs.user_ptr,
        period=seqs.period,
        granularity=np.asarray(seqs.granularity),
    )


def load_boi(path: str | Path) -> BoISequences:
    with np.load(path, allow_pickle=False) as f:
        matrix = sp.csr_matrix((f["data"], f["indices"], f["indptr"]), shape=tuple(f["shape"]))
        return BoISequences(
            matrix=matrix,
            user_ids=f["user_ids"],
            user_ptr=f["user_ptr"],
            period=f["period"],
            granularity=str(f["granularity"]),
        )
