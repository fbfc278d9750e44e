"""SMEN's mechanics on a few hand-made users (§2.2, eq. 4-9): notebook 04's walk-through.

A toy user is a few months of behaviours on a few interests, written by hand:
``{"reader": {"2017-01": {0: 3, 2: 1}, ...}}`` (user -> month -> interest j -> behaviours).

- :func:`toy_boi`: their BoI sequences b_t (eq. 4), by ``boi.build_boi`` as notebook 03
  builds them (item j is interest j);
- :func:`toy_batch`: the ``ScaleBatch`` of every scale, by ``user_training.collate_views``
  as training builds a view and encoding a window: the whole life, on a fixed-interval
  timeline up to the window end;
- :func:`toy_smen`: a small, freshly seeded SMEN (not a trained one);
- :func:`timeline_grid`: the multi-anchor output r (n_rows, M, H) laid out per user and
  period, (B, N, M, H), as the GRU of §2.2.2 reads it (empty periods are 0);
- :func:`boi_table`, :func:`alpha_table`: b_t and alpha_ij (eq. 6) as tables with names.

And what the anchors of a trained SMEN do (notebook 07, Fig. 5): :func:`anchor_separation`
(how far the outputs r^i of different anchors separate) and :func:`top_interests_per_anchor`
(which interests each anchor takes, by alpha_ij).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from lurm_lite import analysis, periods
from lurm_lite.boi import BoISequences, build_boi
from lurm_lite.smen import SMEN, ScaleBatch
from lurm_lite.user_training import collate_views

ToyUsers = Mapping[str, Mapping[str, Mapping[int, int]]]  # user -> "YYYY-MM" -> interest j -> behaviours


def _month_ts(month: str) -> int:
    """Unix seconds of the first day of ``"YYYY-MM"``."""
    return int(periods.period_start_ts("month", np.array([periods.parse_month(month)]))[0])


def toy_boi(users: ToyUsers, n_interests: int, granularities: Sequence[str] = ("month", "year")
            ) -> dict[str, BoISequences]:
    """BoI sequences (eq. 4) of hand-made users: user k of ``users`` (in order) has user id k.

    Each behaviour is an item whose interest is given (item j belongs to interest j), at noon
    on the 2nd of its month; ``build_boi`` then counts them per period, b_j = log(1 + count).
    """
    user_ids, item_ids, ts = [], [], []
    for k, months in enumerate(users.values()):
        for month, counts in sorted(months.items()):
            for j, count in counts.items():
                if not 0 <= j < n_interests:
                    raise ValueError(f"interest {j} of month {month} is outside 0..{n_interests - 1}")
                user_ids += [k] * count
                item_ids += [j] * count
                ts += [_month_ts(month) + periods.DAY_SECONDS + periods.DAY_SECONDS // 2] * count
    return build_boi(np.array(user_ids, np.int64), np.array(item_ids, np.int32), np.array(ts, np.int64),
                     np.arange(n_interests), n_interests, granularities=tuple(granularities))


def toy_batch(boi: Mapping[str, BoISequences], scales: Sequence[str], end: str) -> dict[str, ScaleBatch]:
    """Every user's whole life as one ``{scale: ScaleBatch}``, the window ending at the start of month ``end``.

    Built by :func:`lurm_lite.user_training.collate_views` from the finest scale
    (``scales[0]``), as a training view: coarser rows are sums of the fine ones, and each
    timeline runs from the user's first non-empty period to the window end, empty periods
    included (steps without a row).
    """
    base = boi[scales[0]]
    rows = np.arange(base.matrix.shape[0], dtype=np.int64)  # (n_rows,) every row, user after user
    end_ts = np.full(base.n_users, _month_ts(end), dtype=np.int64)  # (B,)
    return collate_views(base, rows, np.diff(base.user_ptr), end_ts, tuple(scales))


def toy_smen(n_interests: int, hidden: int = 8, anchors: int = 4, scales: Sequence[str] = ("month", "year"),
             seed: int = 0) -> SMEN:
    """A freshly initialised SMEN (``torch.manual_seed(seed)`` first, as ``train_smen`` does), in eval
    mode and without gradients (its outputs are plain tensors a notebook can print or turn into numpy)."""
    torch.manual_seed(seed)
    return SMEN(n_interests, hidden=hidden, anchors=anchors, scales=tuple(scales)).eval().requires_grad_(False)


def timeline_grid(r: torch.Tensor, x: ScaleBatch) -> torch.Tensor:
    """r (n_rows, M, H) of the batch ``x`` -> (B, N, M, H), N = the longest timeline.

    Row k goes to (user ``x.row_user[k]``, step ``x.row_step[k]``); every other step, an
    empty period or past the user's timeline, holds 0 (ReLU(0), what the GRU reads there).
    """
    n_steps = int(x.lengths.max()) if x.n_users else 0
    grid = r.new_zeros(x.n_users, n_steps, *r.shape[1:])  # (B, N, M, H)
    grid[x.row_user, x.row_step] = r
    return grid


def _period_label(granularity: str, period: int) -> str:
    if granularity in ("month", "year"):
        return str(np.datetime64(int(period), "M" if granularity == "month" else "Y"))
    return f"{granularity} #{period}"


def boi_table(seqs: BoISequences, user_names: Sequence[str], interest_names: Sequence[str]) -> pd.DataFrame:
    """The rows b_t of ``seqs`` as a table: one row per (user, period), one column per interest used."""
    dense = seqs.matrix.toarray()  # (n_rows, D)
    used = np.flatnonzero(dense.any(axis=0))  # interests with at least one b_j > 0
    user = np.repeat(np.arange(seqs.n_users), np.diff(seqs.user_ptr))  # (n_rows,)
    index = pd.MultiIndex.from_arrays([[user_names[k] for k in user],
                                       [_period_label(seqs.granularity, p) for p in seqs.period]],
                                      names=["user", "period t"])
    return pd.DataFrame(dense[:, used].round(3), index=index, columns=[interest_names[j] for j in used])


def alpha_table(alpha: np.ndarray, interest_names: Sequence[str], interests: Sequence[int]) -> pd.DataFrame:
    """alpha_ij of eq. (6) of the given interests j over the M anchors i: rows interests, columns anchors."""
    alpha = np.asarray(alpha)  # (D, M)
    return pd.DataFrame(alpha[list(interests)].round(3), index=[interest_names[j] for j in interests],
                        columns=[f"anchor {i}" for i in range(alpha.shape[1])])


def anchor_separation(points: Mapping[str, np.ndarray], anchor: np.ndarray, seed: int, perplexity: float = 30.0,
                      k: int = 10) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """How far the multi-anchor outputs r^i (eq. 5) of different anchors separate, per model (Fig. 5).

    ``points``: model name -> (n*M, H) points, ``anchor`` (n*M,) the anchor of each
    (``analysis.anchor_points``). Returns ``(measures, tsne)``: ``measures[measure][name]`` for
    ``silhouette`` (cosine, in H dimensions), ``silhouette_tsne`` (euclidean, in the t-SNE
    plane) and ``knn_anchor_purity`` (share of the k nearest neighbours from the same
    anchor; chance 1/M); ``tsne[name]`` the (n*M, 2) t-SNE of the points.
    """
    tsne = {name: analysis.tsne_2d(p, seed=seed, perplexity=perplexity) for name, p in points.items()}
    measures = {
        "silhouette": {name: analysis.anchor_silhouette(p, anchor) for name, p in points.items()},
        "silhouette_tsne": {name: analysis.anchor_silhouette(t, anchor, metric="euclidean") for name, t in tsne.items()},
        "knn_anchor_purity": {name: analysis.anchor_knn_purity(p, anchor, k=k) for name, p in points.items()},
    }
    return measures, tsne


def top_interests_per_anchor(alpha: np.ndarray, interest_weight: np.ndarray, interest_names: Sequence[str],
                             top: int = 3) -> pd.DataFrame:
    """The ``top`` interests j of each anchor i by its mass alpha_ij * weight_j (eq. 6), named.

    ``alpha`` (D, M); ``interest_weight`` (D,) e.g. behaviours per interest in the history.
    The share is the interest's part of the anchor's whole mass sum_j alpha_ij weight_j.
    Returns one row per anchor: ``"top interests"``, ``"name (share%)"`` joined by "; ".
    """
    mass = np.asarray(alpha, dtype=np.float64) * np.asarray(interest_weight, dtype=np.float64)[:, None]  # (D, M)
    share = mass / np.maximum(mass.sum(axis=0, keepdims=True), 1e-300)  # (D, M) columns sum to 1
    rows = {f"anchor {i}": "; ".join(f"{interest_names[j]} ({share[j, i]:.0%})"
                                     for j in np.argsort(-share[:, i], kind="stable")[:top] if share[j, i] > 0)
            for i in range(mass.shape[1])}
    return pd.DataFrame({"top interests (share of the anchor's alpha-weighted behaviours)": rows})
