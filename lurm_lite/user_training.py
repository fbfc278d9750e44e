"""Self-supervised training of SMEN and encoding of users, §2.2.4 of the paper.

Positive pairs (§2.2.4: "two behavior sequences drawn from the same user ... continuous
sub-sequences randomly sampled from the whole life time T"). For each user of a batch:

- two disjoint spans of periods of the finest scale (``smen_config.scales[0]``, months by
  default), one on each side of a cut drawn between two consecutive non-empty periods:
  x ends just after a behaviour, y starts at the next one (``PairSampler.spans``). Each
  length L is uniform in [min_subseq_periods, max_subseq_fraction x life span] (capped at
  ``max_periods`` when set; by default not, so training views are as long as the
  whole-life timelines encoded later) and clipped by the room on its side of the cut; the
  life runs from the user's first non-empty period to the data's last period, quiet tail
  included, so y may run into it. A view is never empty.
  Why disjoint (the paper is silent on overlap; our choice, measured): two views drawn
  independently overlap by a large part of their months, and then hold the very same
  month rows, which the loss can match instead of learning what stays true of the user
  (the shortcut DESIGN.md's quality principles rule out): with them the loss falls to 1.7
  in 3 epochs, with disjoint views to 4.7 (chance: log 511 = 6.2), yet the representation
  keeps as much. Measured on synthetic default (seed 0, 3 epochs, linear probe on R^ as
  ``diagnostics.linear_probe_auc``), age / baby_age / future_Books_active AUC: independent
  views 84.5 / 75.6 / 73.9, disjoint 85.0 / 76.7 / 72.1; an epoch takes ~37 s instead of
  ~77 s on 2 cores, because the two views of a user together span at most its life.
  ``benchmarks/quality.py`` has the MLP-probe numbers over seeds.
- each finest-scale period of a view is dropped with probability ``period_dropout`` (one
  is always kept);
- every scale of the view is then built from its kept finest rows only
  (:func:`collate_views`): the year rows are sums of the view's own months, never the
  precomputed whole-year rows, so no row of a view depends on a behaviour outside it (a
  shared year row would let the loss match rows instead of users); and the timeline runs
  at a fixed interval from the view's first behaviour to its end, empty periods included.
  Encoding (:func:`encode_users`) builds a window by the same rule.

A user with a single non-empty period gets two views that start there and differ by their
length (the quiet months after it) and nothing else, still a valid positive with in-batch
negatives.

The other users of the batch are the negatives; the loss is eq. (3)
(``lurm_lite.contrastive.info_nce``) on the projection head outputs h(R^).

The user representation is R^ (B, M, H) flattened to M*H, *not* the head output: as in
SimCLR and the paper (§2.2.3: "The output of this module R^ ... is served as the final user
representation"), the head exists for the loss only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from lurm_lite import io
from lurm_lite.boi import BoISequences
from lurm_lite.config import SMENConfig, UserTrainingConfig
from lurm_lite.contrastive import adam_optimizers, info_nce, optimizer_step
from lurm_lite.periods import period_index, period_start_ts, window_start_ts
from lurm_lite.runs import MissingPrerequisite, file_sha256
from lurm_lite.smen import SMEN, ScaleBatch, collate_matrix, collate_rows, row_ranges, save_smen

# ---------------------------------------------------------------------------------------
# Windows of rows
# ---------------------------------------------------------------------------------------


_TS_BITS = 35  # a (user, time) pair packed into one sortable int64: user << 35 | (t + 2^34)
_TS_HALF = 1 << (_TS_BITS - 1)


def _pack(user_index: np.ndarray, t: np.ndarray) -> np.ndarray:
    t = np.clip(np.asarray(t, dtype=np.int64), -_TS_HALF, _TS_HALF - 1)  # +-544 years of seconds
    return (np.asarray(user_index, dtype=np.int64) << _TS_BITS) + (t + _TS_HALF)


class Timeline:
    """The rows of one granularity with their time bounds, for window queries.

    ``rows_in(k, A, B)`` gives, for each user index k, the contiguous rows [lo, hi) whose
    period overlaps [A, B) (or lies inside it): one vectorised ``searchsorted`` on keys that
    pack (user, time) into one int64, sorted because users are contiguous and periods
    ascend within a user.
    """

    def __init__(self, seqs: BoISequences):
        self.seqs = seqs
        row_user = np.repeat(np.arange(seqs.n_users, dtype=np.int64), np.diff(seqs.user_ptr))  # (n_rows,)
        self.start_ts = period_start_ts(seqs.granularity, seqs.period)  # (n_rows,)
        self.end_ts = period_start_ts(seqs.granularity, seqs.period + 1)  # (n_rows,)
        self.key_start = _pack(row_user, self.start_ts)
        self.key_end = _pack(row_user, self.end_ts)

    def user_index(self, user_ids: np.ndarray) -> np.ndarray:
        """Position of each user id in ``seqs.user_ids``, -1 when absent."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        if self.seqs.n_users == 0:
            return np.full(len(user_ids), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.seqs.user_ids, user_ids), self.seqs.n_users - 1)
        return np.where(self.seqs.user_ids[pos] == user_ids, pos, -1)

    def whole_life(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows [lo, hi) of every period of users k (empty where k = -1)."""
        present = k >= 0
        lo, hi = np.zeros(len(k), np.int64), np.zeros(len(k), np.int64)
        lo[present], hi[present] = self.seqs.user_ptr[k[present]], self.seqs.user_ptr[k[present] + 1]
        return lo, hi

    def rows_in(self, k: np.ndarray, A: np.ndarray, B: np.ndarray, inside: bool = False):
        """Rows [lo, hi) of users k whose period overlaps [A, B) (``inside``: lies within it)."""
        k_safe = np.maximum(k, 0)
        if inside:  # start >= A and end <= B
            lo = np.searchsorted(self.key_start, _pack(k_safe, A), side="left")
            hi = np.searchsorted(self.key_end, _pack(k_safe, B), side="right")
        else:  # end > A and start < B
            lo = np.searchsorted(self.key_end, _pack(k_safe, A), side="right")
            hi = np.searchsorted(self.key_start, _pack(k_safe, B), side="left")
        hi = np.maximum(hi, lo)
        return np.where(k >= 0, lo, 0), np.where(k >= 0, hi, 0)


# ---------------------------------------------------------------------------------------
# Positive pairs of sub-sequences
# ---------------------------------------------------------------------------------------


def _drop_periods(rows: np.ndarray, lengths: np.ndarray, p: float, rng: np.random.Generator):
    """Drop each row with probability p, keeping one random row of every non-empty view."""
    if p <= 0 or len(rows) == 0:
        return rows, lengths
    keep = rng.random(len(rows)) >= p  # (n_rows,)
    starts = np.cumsum(lengths) - lengths
    nonempty = lengths > 0
    forced = starts[nonempty] + (rng.random(int(nonempty.sum())) * lengths[nonempty]).astype(np.int64)
    keep[forced] = True
    owner = np.repeat(np.arange(len(lengths)), lengths)  # (n_rows,) view of each row
    return rows[keep], np.bincount(owner[keep], minlength=len(lengths)).astype(np.int64)


def coarse_periods(fine: str, period: np.ndarray, coarse: str) -> np.ndarray:
    """The ``coarse`` period holding each ``fine`` period (e.g. month -> year): (n,) int64.

    Raises when a fine period straddles two coarse ones (7-day periods inside months):
    the coarse rows of a view are sums of its fine rows (``collate_views``), which needs
    every fine period to lie inside one coarse period.
    """
    start = period_start_ts(fine, period)  # (n,)
    first, last = period_index(start, coarse), period_index(period_start_ts(fine, period + 1) - 1, coarse)
    if (first != last).any():
        raise ValueError(f"a {fine!r} period straddles two {coarse!r} periods; SMEN's scales must nest "
                         "(e.g. ('month', 'year') or ('7d', '28d'))")
    return first


def collate_views(base: BoISequences, rows: np.ndarray, rows_per_view: np.ndarray, end_ts: np.ndarray,
                  scales: tuple[str, ...]) -> dict[str, ScaleBatch]:
    """The fixed-interval timelines of V views at every scale, all from the finest rows (§2.2).

    A view is the rows ``rows`` of ``base`` (the finest scale, ``scales[0]``) that fall in a
    window ending at ``end_ts`` (unix s, exclusive, one per view); ``rows_per_view`` (V,) says
    how many rows each view owns.

    - **Every scale from the behaviours inside the view** (§2.2.4, DESIGN.md quality
      principles): a coarse row b'_t of a view is eq. (4) over the view's own fine periods
      in t, log(1 + sum of their counts) with counts = exp(b_j) - 1, never the precomputed
      coarse row, which would count behaviours outside the window (and let two views of
      one user share rows: a shortcut for the contrastive loss).
    - **Time in the timeline** (§2.2: "T is divided into N parts at a fixed time
      interval"): at each scale the timeline runs from the view's first non-empty period
      to the period holding ``end_ts - 1``, empty periods included (they have no row; the
      GRU reads r = ReLU(0) = 0 there). So the same behaviours further back before the
      window end give a longer quiet tail and another representation. Steps before the
      first behaviour are left out: with no input yet they would only count the months
      since the window start, at the GRU's cost.

    Returns ``{scale: ScaleBatch}`` with the same V users (views) at every scale.
    """
    rows_per_view = np.asarray(rows_per_view, dtype=np.int64)
    end_ts = np.asarray(end_ts, dtype=np.int64)
    n_views = len(rows_per_view)
    fine = base.matrix[np.asarray(rows, dtype=np.int64)]  # (n_rows, D) CSR
    fine_period = base.period[np.asarray(rows, dtype=np.int64)]  # (n_rows,)
    view = np.repeat(np.arange(n_views, dtype=np.int64), rows_per_view)  # (n_rows,)
    batch = {}
    for scale in scales:
        if scale == base.granularity:
            sub, period, row_view = fine, fine_period, view
        else:  # sum the fine counts of each (view, coarse period): one sparse product
            coarse = coarse_periods(base.granularity, fine_period, scale)  # (n_rows,)
            new_row = np.r_[True, (view[1:] != view[:-1]) | (coarse[1:] != coarse[:-1])]  # (n_rows,)
            group = np.cumsum(new_row) - 1  # (n_rows,) coarse row of each fine row
            counts = fine.copy()
            counts.data = np.expm1(counts.data.astype(np.float64))  # b_j -> count of interest j
            G = sp.csr_matrix((np.ones(len(group)), (group, np.arange(len(group)))),
                              shape=(int(group[-1]) + 1 if len(group) else 0, len(group)))
            sub = (G @ counts).tocsr()  # (n_coarse_rows, D) counts
            sub.data = np.log1p(sub.data).astype(np.float32)  # eq. (4)
            period, row_view = coarse[new_row], view[new_row]
        n_rows = np.bincount(row_view, minlength=n_views)  # (V,)
        first_row = np.cumsum(n_rows) - n_rows  # (V,)
        has_rows = n_rows > 0
        first = np.zeros(n_views, dtype=np.int64)  # (V,) the view's first non-empty period
        first[has_rows] = period[first_row[has_rows]]
        last = period_index(end_ts - 1, scale)  # (V,) period holding the window's last second
        lengths = np.where(has_rows, last - first + 1, 0)  # (V,) N: first behaviour .. window end
        batch[scale] = collate_matrix(sub, n_rows, row_step=period - first[row_view], lengths=lengths)
    return batch


class PairSampler:
    """Draws the two views of §2.2.4 for a batch of users (see the module docstring).

    ``users`` are the trainable users (at least one period at the finest scale), as
    positions in ``boi[scales[0]]``. ``sample(k, rng)`` returns ``{scale: ScaleBatch}`` of 2B
    views: rows 0..B-1 are the x views of users k, rows B..2B-1 their y views. Only
    ``boi[scales[0]]`` is read: the coarser scales of a view are summed from its own fine
    periods (:func:`collate_views`).
    """

    def __init__(self, boi: dict[str, BoISequences], scales: tuple[str, ...], config: UserTrainingConfig):
        self.scales, self.config = tuple(scales), config
        self.base = Timeline(boi[self.scales[0]])
        base = self.base.seqs
        self.users = np.flatnonzero(np.diff(base.user_ptr) > 0)
        # the data's last period: views may run past a user's last behaviour up to it
        self.last_period = int(base.period.max()) if len(base.period) else 0

    def spans(self, k: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The two disjoint views of each user k: (A, B) (2n,) unix seconds, x views then y views.

        A user's life runs from its first non-empty period to the data's last period (quiet
        years after its last behaviour are part of the timeline, as at encoding). A cut is
        drawn between two consecutive non-empty periods i and i + 1 of the user (uniformly
        over its behaviour periods): x = [max(first, p_i + 1 - L_x), p_i + 1) ends just
        after a behaviour, y = [p_(i+1), min(last + 1, p_(i+1) + L_y)) starts at the next
        one, so both hold a behaviour and no period is in both. L_x and L_y are drawn as
        in the module docstring and clipped by the room on their side of the cut. A user
        with one non-empty period gets two views starting there that differ by L only.
        """
        cfg, base = self.config, self.base
        ptr, period = base.seqs.user_ptr, base.seqs.period
        k = np.asarray(k, dtype=np.int64)
        first, n_periods = period[ptr[k]], ptr[k + 1] - ptr[k]  # (n,), (n,) >= 1
        life = self.last_period - first + 1  # (n,) life span in periods, gaps and quiet tail included
        shortest = np.minimum(cfg.min_subseq_periods, life)  # a life shorter than that: all of it
        longest = np.maximum(np.floor(cfg.max_subseq_fraction * life).astype(np.int64), shortest)
        if cfg.max_periods is not None:
            longest = np.minimum(longest, cfg.max_periods)
        shortest = np.minimum(shortest, longest)
        L_x, L_y = rng.integers(shortest, longest + 1), rng.integers(shortest, longest + 1)  # (n,) each
        i = (rng.random(len(k)) * np.maximum(n_periods - 1, 1)).astype(np.int64)  # (n,) last period of x
        p_i = period[ptr[k] + i]  # (n,)
        p_next = period[ptr[k] + np.minimum(i + 1, n_periods - 1)]  # (n,) y's start (p_i for one period)
        a_x = np.where(n_periods > 1, np.maximum(first, p_i + 1 - L_x), p_i)
        b_x = np.where(n_periods > 1, p_i + 1, np.minimum(self.last_period + 1, p_i + L_x))
        b_y = np.minimum(self.last_period + 1, p_next + L_y)
        g = base.seqs.granularity
        return period_start_ts(g, np.concatenate([a_x, p_next])), period_start_ts(g, np.concatenate([b_x, b_y]))

    def sample(self, k: np.ndarray, rng: np.random.Generator) -> dict[str, ScaleBatch]:
        both = np.concatenate([k, k])  # (2B,) x views then y views
        A, B = self.spans(k, rng)
        lo, hi = self.base.rows_in(both, A, B)
        rows, lengths = _drop_periods(*row_ranges(lo, hi), self.config.period_dropout, rng)
        return collate_views(self.base.seqs, rows, lengths, B, self.scales)


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# The resume checkpoint: plain data only, resumed only when written from the same inputs
# ---------------------------------------------------------------------------------------

CHECKPOINT_FORMAT = 2  # 2: plain-data RNG states and the input fingerprint (weights_only loads)
_NOT_TRAINING = ("epochs", "encode_batch_size")  # fields that do not change what an epoch computes


def boi_fingerprint(boi: dict[str, BoISequences], scales: tuple[str, ...]) -> str:
    """SHA-256 over every array of the BoI ``scales`` (what a SMEN trained on them learned from).

    All bytes are hashed (:func:`lurm_lite.io.update_digest`): far less than one training
    epoch over the same arrays costs.
    """
    digest = hashlib.sha256()
    for granularity in scales:
        seqs = boi[granularity]
        matrix = seqs.matrix.tocsr()
        digest.update(f"{granularity}:{matrix.shape}".encode())
        io.update_digest(digest, matrix.indptr, matrix.indices, matrix.data, seqs.user_ids, seqs.user_ptr, seqs.period)
    return digest.hexdigest()


def _plain(value):
    """``value`` with numpy scalars and arrays turned into Python numbers and lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


def _checkpoint_inputs(boi: dict[str, BoISequences], smen_config: SMENConfig, train_config: UserTrainingConfig,
                       seed: int) -> dict:
    """What a checkpoint must have been written from to be resumed (plain data)."""
    training = {k: v for k, v in dataclasses.asdict(train_config).items() if k not in _NOT_TRAINING}
    return {"format": CHECKPOINT_FORMAT, "smen_config": dataclasses.asdict(smen_config), "training": training,
            "seed": int(seed), "boi": boi_fingerprint(boi, smen_config.scales)}


def _changed_fields(saved: dict, wanted: dict) -> str:
    return ", ".join(f"{k} {saved.get(k)!r} -> {wanted.get(k)!r}"
                     for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k))


def _why_not_resume(ckpt: dict, inputs: dict, epochs: int) -> str | None:
    """Why the checkpoint ``ckpt`` must not be resumed for ``inputs`` and ``epochs`` (None: resume)."""
    saved = ckpt.get("inputs")
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        return "it was written by an older lurm_lite, without a record of its inputs"
    if saved["boi"] != inputs["boi"]:
        return "its BoI input differs (notebook 03 was rerun or the dataset changed)"
    if saved["seed"] != inputs["seed"]:
        return f"it was trained with seed {saved['seed']}, not {inputs['seed']}"
    if saved["smen_config"] != inputs["smen_config"]:
        return f"its SMEN config differs ({_changed_fields(saved['smen_config'], inputs['smen_config'])})"
    if saved["training"] != inputs["training"]:
        return f"its training config differs ({_changed_fields(saved['training'], inputs['training'])})"
    if ckpt["epoch"] > epochs:
        return f"it has trained {ckpt['epoch']} epochs, more than the {epochs} asked for"
    return None


def train_smen(boi: dict[str, BoISequences], smen_config: SMENConfig, train_config: UserTrainingConfig,
               device: torch.device | str | None, seed: int, checkpoint_path: str | Path | None = None,
               resume: bool = True, progress: bool = True,
               on_epoch_end: Callable[[int, SMEN], dict | None] | None = None,
               snapshots: Mapping[int, str | Path] | None = None) -> tuple[SMEN, dict[str, list]]:
    """Train SMEN with the contrastive loss of §2.2.4 (eq. 3 on h(R^) of two views per user).

    One epoch visits every trainable user once, in a random order, ``batch_size`` users per
    step. All sampling in epoch e uses ``np.random.default_rng([seed, e])``, so a run
    resumed from the checkpoint of epoch e continues exactly as an uninterrupted one. The
    same seed gives the same bits on CUDA too (:func:`lurm_lite.io.deterministic_kernels`).

    Args:
        boi: ``{granularity: BoISequences}`` holding every scale of ``smen_config.scales``.
        device: passed to ``io.device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ...).
        checkpoint_path: written atomically after every epoch (model, optimizers, RNG states,
            epoch, loss history, and what it was trained from: both configs, the seed and
            :func:`boi_fingerprint`), as plain data that loads with ``weights_only=True``.
            With ``resume`` an existing one is continued when it was written from the same
            BoI, seed, SMEN config and training config (``epochs`` and
            ``encode_batch_size`` aside) and has trained at most ``train_config.epochs``
            epochs: with more epochs asked for, training continues from it (the same as an
            uninterrupted run, see above); a model trained longer than asked is not
            reused. Otherwise a line says why, and training starts from scratch (the
            checkpoint is overwritten after the first epoch).
        on_epoch_end: called as ``on_epoch_end(epoch, model)`` after every epoch (model in
            eval mode for the call, train mode restored after); a returned dict is kept in
            ``history["eval"]`` with the epoch and the number of steps so far (learning
            curves: downstream AUC or retrieval against training steps). It must not draw
            from the global RNGs if a resumed run is to match an uninterrupted one.
        snapshots: ``{E: path}``: after epoch E the model is also written to ``path``
            (:func:`lurm_lite.smen.save_smen`). Since epoch e samples from its own seeded RNG,
            it is the model a run of E epochs with the same seed and settings trains:
            notebook 08 encodes it instead of training its E-epoch reference again.

    Returns:
        (model in eval mode, ``{"step": loss per step, "epoch": mean loss per epoch,
        "eval": [{"epoch", "step", ...on_epoch_end's values}]}``).
    """
    dev = io.device(device)
    torch.manual_seed(seed)
    model = SMEN(boi[smen_config.scales[0]].n_interests, smen_config.hidden, smen_config.anchors,
                 smen_config.scales, sparse=smen_config.sparse_grad).to(dev)
    optimizers = adam_optimizers(model.dense_parameters(), model.sparse_parameters(), train_config.lr)
    history: dict[str, list] = {"step": [], "epoch": [], "eval": []}
    first_epoch = 0
    inputs = _checkpoint_inputs(boi, smen_config, train_config, seed) if checkpoint_path is not None else None
    ckpt = (io.resumable_checkpoint(checkpoint_path, dev,
                                    lambda saved: _why_not_resume(saved, inputs, train_config.epochs),
                                    "training from scratch")
            if checkpoint_path is not None and resume and Path(checkpoint_path).exists() else None)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        for optimizer, state in zip(optimizers, ckpt["optimizers"]):
            optimizer.load_state_dict(state)
        history, first_epoch = ckpt["history"], ckpt["epoch"]
        io.set_rng_states(ckpt["rng"])

    sampler = PairSampler(boi, smen_config.scales, train_config)
    if len(sampler.users) < 2:
        raise ValueError("SMEN training needs at least two users with periods (in-batch negatives)")
    n_users, bs = len(sampler.users), train_config.batch_size
    steps_per_epoch = n_users // bs + (n_users % bs >= 2)  # a last batch of 1 has no negative
    use_amp = train_config.amp and dev.type == "cuda"
    bar = tqdm(total=train_config.epochs * steps_per_epoch, initial=first_epoch * steps_per_epoch,
               disable=not progress, desc="SMEN", unit="step")
    model.train()
    with io.deterministic_kernels(dev):  # the same bits for the same seed on CUDA too
        for epoch in range(first_epoch, train_config.epochs):
            rng = np.random.default_rng([seed, epoch])
            order = rng.permutation(sampler.users)
            epoch_losses = []
            for step in range(steps_per_epoch):
                k = order[step * bs:(step + 1) * bs]  # (B,) users of this step
                batch = {s: x.to(dev) for s, x in sampler.sample(k, rng).items()}  # 2B views
                with torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext():
                    z = model.project(model(batch))  # (2B, M*H) h(R^)
                loss = info_nce(z[:len(k)].float(), z[len(k):].float(), train_config.tau)
                optimizer_step(loss, optimizers)
                epoch_losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{epoch_losses[-1]:.4f}")
            history["step"].extend(epoch_losses)
            history["epoch"].append(float(np.mean(epoch_losses)))
            if on_epoch_end is not None:
                model.eval()
                values = on_epoch_end(epoch, model)
                model.train()
                if values is not None:
                    history["eval"].append({"epoch": epoch + 1, "step": len(history["step"]), **values})
            if snapshots is not None and epoch + 1 in snapshots:  # before the checkpoint: a resumed run has it
                save_smen(snapshots[epoch + 1], model)
            if checkpoint_path is not None:
                io.save_torch(checkpoint_path, {
                    "epoch": epoch + 1, "model": model.state_dict(),
                    "optimizers": [optimizer.state_dict() for optimizer in optimizers],
                    "history": _plain(history), "rng": io.rng_states(), "inputs": inputs,
                })
    bar.close()
    return model.eval(), history


# ---------------------------------------------------------------------------------------
# Encoding users
# ---------------------------------------------------------------------------------------


def _window(base: Timeline, user_ids: np.ndarray, last_months: int | None, history_end_ts: int | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finest-scale rows [lo, hi) of each user in the encoding window, and its end B (unix s)."""
    k = base.user_index(user_ids)  # (n,) -1 where absent
    if history_end_ts is None:  # the end of the data's last period
        end = int(base.end_ts.max()) if len(base.end_ts) else 0
    else:
        end = int(history_end_ts)
    B = np.full(len(user_ids), end, dtype=np.int64)
    A = window_start_ts(B, last_months) if last_months is not None else np.full_like(B, np.iinfo(np.int64).min)
    lo, hi = base.rows_in(k, A, B, inside=True)  # a period straddling A would count behaviour before it
    return lo, hi, B


@contextlib.contextmanager
def inference(model: torch.nn.Module):
    """Eval mode and no autograd for the duration; the model's former mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def encoding_batches(model: SMEN, boi: dict[str, BoISequences], user_ids: np.ndarray, dev: torch.device,
                     last_months: int | None, history_end_ts: int | None, batch_size: int
                     ) -> Iterator[tuple[slice, dict[str, ScaleBatch]]]:
    """The encoding windows of ``user_ids``, ``batch_size`` users at a time: (rows slice, {scale: batch} on dev).

    Each window is built exactly as a training view (:func:`collate_views`); see
    :func:`encode_users` for the window rule.
    """
    base = Timeline(boi[model.scales[0]])
    lo, hi, end = _window(base, user_ids, last_months, history_end_ts)
    for start in range(0, len(user_ids), batch_size):
        part = slice(start, start + batch_size)
        rows, n_rows = row_ranges(lo[part], hi[part])
        yield part, {s: x.to(dev) for s, x in collate_views(base.seqs, rows, n_rows, end[part], model.scales).items()}


def encode_users(model: SMEN, boi: dict[str, BoISequences], user_ids: np.ndarray,
                 device: torch.device | str | None, last_months: int | None = None,
                 history_end_ts: int | None = None, batch_size: int = 512) -> np.ndarray:
    """R^ of eq. (7) of every user, flattened: (n_users, M*H) float32, rows in ``user_ids`` order.

    The representation is R^, not the head output h(R^) (§2.2.3). Runs in eval mode under
    ``torch.inference_mode`` (the model's mode is restored afterwards), ``batch_size`` users
    at a time, so memory is bounded by one batch.

    Window: the behaviours before ``history_end_ts`` (unix s; None: the end of the latest
    period in ``boi``, i.e. the end of the data); with ``last_months`` K only those of the
    last K calendar months before it (Fig. 3 length ablation, LURM(2M)). Built exactly as a
    training view (:func:`collate_views`): the finest scale's rows inside the window, every
    coarser scale summed from them (a 2-month window has a year row of those two months),
    and a fixed-interval timeline that runs to the window end, so a user quiet for years
    before the history end is encoded as such. Only ``boi[model.scales[0]]`` is read.

    Users absent from ``boi`` or without behaviours in the window get the encoding of an
    empty sequence (r~ = 0 at every scale, hence R^ = 0).
    """
    dev = io.device(device)
    user_ids = np.asarray(user_ids, dtype=np.int64)
    reps = np.zeros((len(user_ids), model.anchors * model.hidden), dtype=np.float32)
    with inference(model):
        for part, batch in encoding_batches(model, boi, user_ids, dev, last_months, history_end_ts, batch_size):
            reps[part] = model(batch).flatten(1).float().cpu().numpy()  # (b, M*H)
    return reps


def encode_stages(model: SMEN, boi: dict[str, BoISequences], user_ids: np.ndarray,
                  device: torch.device | str | None, history_end_ts: int | None = None,
                  batch_size: int = 512) -> dict[str, np.ndarray]:
    """What each stage of SMEN holds about each user's whole history (§2.2.1-2.2.3), flattened.

    The same windows as :func:`encode_users` (``last_months`` None). Returns, every array
    (n_users, M*H) float32 with rows in ``user_ids`` order:

    - ``"r <scale>"``: the multi-anchor outputs r^i_t of eq. (5) averaged over the user's
      non-empty periods t at that scale (what enters the GRU, before any time aggregation);
    - ``"r~ <scale>"``: the GRU's last state r~^i at that scale (§2.2.2);
    - ``"R^"``: eq. (7), equal to :func:`encode_users` (with one scale, r~ of that scale).

    Read with a probe per stage, it locates where a signal of b_T is lost: in the per-period
    encoding (eq. 5), in the time aggregation or in the scale switch.
    """
    dev = io.device(device)
    user_ids = np.asarray(user_ids, dtype=np.int64)
    size = model.anchors * model.hidden
    names = [f"{stage} {scale}" for scale in model.scales for stage in ("r", "r~")] + ["R^"]
    out = {name: np.zeros((len(user_ids), size), dtype=np.float32) for name in names}
    with inference(model):
        for part, batch in encoding_batches(model, boi, user_ids, dev, None, history_end_ts, batch_size):
            r_tilde = []
            for scale in model.scales:
                x = batch[scale]
                r = model.multi_anchor(x).float()  # (n_rows, M, H) eq. (5) per period
                total = r.new_zeros(x.n_users, *r.shape[1:]).index_add_(0, x.row_user, r)  # (b, M, H)
                n_periods = torch.bincount(x.row_user, minlength=x.n_users).clamp(min=1).to(r)  # (b,)
                out[f"r {scale}"][part] = (total / n_periods[:, None, None]).flatten(1).cpu().numpy()
                r_tilde.append(model.time_aggregation(r, x))  # (b, M, H)
                out[f"r~ {scale}"][part] = r_tilde[-1].flatten(1).float().cpu().numpy()
            R_hat = r_tilde[0] if model.switch is None else model.switch(*r_tilde)  # (b, M, H)
            out["R^"][part] = R_hat.flatten(1).float().cpu().numpy()
    return out


def anchor_outputs(model: SMEN, boi: dict[str, BoISequences], user_ids: np.ndarray,
                   device: torch.device | str | None, scale: str | None = None,
                   batch_size: int = 512) -> np.ndarray:
    """Multi-anchor outputs r^i (eq. 5) per user, for the t-SNE of Fig. 5: (n_users, M, H).

    r^i_t is computed for every period t of the user's whole life at ``scale`` (default the
    finest, ``model.scales[0]``) and averaged over the periods: one point per (user, anchor).
    Users without periods get zeros.
    """
    dev = io.device(device)
    seqs = boi[scale or model.scales[0]]
    timeline = Timeline(seqs)
    lo, hi = timeline.whole_life(timeline.user_index(user_ids))
    out = np.zeros((len(user_ids), model.anchors, model.hidden), dtype=np.float32)
    with inference(model):
        for start in range(0, len(user_ids), batch_size):
            part = slice(start, start + batch_size)
            x = collate_rows(seqs, *row_ranges(lo[part], hi[part])).to(dev)
            r = model.multi_anchor(x).float()  # (n_rows, M, H)
            total = r.new_zeros(x.n_users, *r.shape[1:]).index_add_(0, x.row_user, r)  # (b, M, H)
            count = x.lengths.clamp(min=1).to(r)[:, None, None]
            out[part] = (total / count).cpu().numpy()
    return out


def save_user_reps(path: str | Path, user_ids: np.ndarray, reps: np.ndarray) -> Path:
    """Write (user_ids (n,), reps (n, M*H)) atomically as ``.npz`` (``RunPaths.user_reps``)."""
    return io.save_npz(path, user_ids=np.asarray(user_ids, dtype=np.int64),
                         reps=np.asarray(reps, dtype=np.float32))


def rows_of(user_ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Position of each ``wanted`` id in ``user_ids`` (-1 when absent)."""
    index = pd.Index(np.asarray(user_ids))
    if not index.is_unique:
        raise ValueError("user_ids must be unique: each row is one user.")
    return index.get_indexer(np.asarray(wanted))


def model_encoding_path(model_path: str | Path) -> Path:
    """Where the R^ of every user by the SMEN saved at ``model_path`` is kept: ``<stem>_reps.npz`` beside it."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}_reps.npz")


def save_model_encoding(model_path: str | Path, user_ids: np.ndarray, reps: np.ndarray) -> Path:
    """Keep ``reps`` (n, M*H), the R^ of ``user_ids`` by the SMEN saved at ``model_path``, beside
    it (:func:`model_encoding_path`) with the model file's SHA-256, so that it is read back
    (:func:`kept_model_encoding`) only for that very model."""
    return io.save_npz(model_encoding_path(model_path), user_ids=np.asarray(user_ids, dtype=np.int64),
                       reps=np.asarray(reps, dtype=np.float32), model_sha256=np.array(file_sha256(model_path)))


def kept_model_encoding(model_path: str | Path, user_ids: np.ndarray) -> np.ndarray | None:
    """The (n, M*H) R^ of ``user_ids`` kept by :func:`save_model_encoding` for the model at
    ``model_path``; None when there is none, it was made from another model file (e.g. an
    older run's), or it lacks one of the users."""
    path = model_encoding_path(model_path)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as kept:
        if str(kept["model_sha256"]) != file_sha256(model_path):
            return None
        rows = rows_of(kept["user_ids"], user_ids)
        return None if (rows < 0).any() else kept["reps"][rows]


def load_user_reps(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(user_ids (n,) int64, reps (n, M*H) float32) written by ``save_user_reps``."""
    with np.load(path) as f:
        return f["user_ids"], f["reps"]


def user_reps_of(path: str | Path, user_ids: np.ndarray) -> np.ndarray:
    """The R^ saved in ``path`` (``save_user_reps``: notebook 04's ``user_reps.npz``) of
    ``user_ids``, in that order: (n, M*H) float32.

    Raises ``MissingPrerequisite`` naming the file and a user without a row (the saved
    representations are of another dataset or an older run), never a silently wrong row.
    """
    saved_ids, reps = load_user_reps(path)
    user_ids = np.asarray(user_ids)
    rows = rows_of(saved_ids, user_ids)
    if (rows < 0).any():
        raise MissingPrerequisite(f"{path} lacks {(rows < 0).sum()} users with history, e.g. user "
                                  f"{user_ids[rows < 0][0]}; rerun notebooks/04_smen.ipynb on this dataset.")
    return reps[rows]
