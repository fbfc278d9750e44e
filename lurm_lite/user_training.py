"""Self-supervised training of SMEN and encoding of users, §2.2.4 of the paper.

Positive pairs (§2.2.4: "two behavior sequences drawn from the same user ... continuous
sub-sequences randomly sampled from the whole life time T"). For each user of a batch,
two views are drawn independently:

- a span [a, a + L) of periods of the finest scale (``smen_config.scales[0]``, months by
  default). L is uniform in [min_subseq_periods, max_subseq_fraction x life span], capped
  at ``max_periods`` and at the life span (first to last non-empty period); the start a is
  a non-empty period drawn uniformly among those that leave room for L, so a view is never
  empty. Two views of one user may overlap, touch or be disjoint: their overlap is not
  fixed, it follows from the two independent draws.
- every scale contributes its rows whose period overlaps the span: the monthly rows in it
  and, for the year scale, the yearly rows of the years the span touches.
- each period of a view is then dropped with probability ``period_dropout`` (one period is
  always kept). A user whose life is shorter than ``min_subseq_periods`` thus gets two
  views of the whole life that differ by the dropped periods only; a user with a single
  period gets two identical views, still a valid positive with in-batch negatives.

The other users of the batch are the negatives; the loss is eq. (3)
(``lurm_lite.contrastive.info_nce``) on the projection head outputs h(R^).

The user representation is R^ (B, M, H) flattened to M*H, *not* the head output: as in
SimCLR and the paper (§2.2.3: "The output of this module R^ ... is served as the final user
representation"), the head exists for the loss only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lurm_lite import runs
from lurm_lite.boi import BoISequences
from lurm_lite.config import DAY_SECONDS, SMENConfig, UserTrainingConfig
from lurm_lite.contrastive import adam_optimizers, info_nce, optimizer_step
from lurm_lite.smen import SMEN, ScaleBatch, collate_rows, row_ranges

# ---------------------------------------------------------------------------------------
# Periods in time, and windows of rows
# ---------------------------------------------------------------------------------------


def period_start_ts(granularity: str, period: np.ndarray) -> np.ndarray:
    """Unix seconds at which each period index starts (boi.py's period convention).

    ``month``: months since 1970-01; ``year``: years since 1970; ``<N>d``: ts // (N days).
    """
    period = np.asarray(period, dtype=np.int64)
    if granularity == "month":
        return period.astype("datetime64[M]").astype("datetime64[s]").astype(np.int64)
    if granularity == "year":
        return period.astype("datetime64[Y]").astype("datetime64[s]").astype(np.int64)
    if granularity.endswith("d") and granularity[:-1].isdigit():
        return period * int(granularity[:-1]) * DAY_SECONDS
    raise ValueError(f"Unknown granularity {granularity!r}: use 'month', 'year' or '<N>d'")


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
        self.key_period = _pack(row_user, seqs.period)
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


class PairSampler:
    """Draws the two views of §2.2.4 for a batch of users (see the module docstring).

    ``users`` are the trainable users (at least one period at the finest scale), as
    positions in ``boi[scales[0]]``. ``sample(k, rng)`` returns ``{scale: ScaleBatch}`` of 2B
    views: rows 0..B-1 are the x views of users k, rows B..2B-1 their y views.
    """

    def __init__(self, boi: dict[str, BoISequences], scales: tuple[str, ...], config: UserTrainingConfig):
        self.scales, self.config = tuple(scales), config
        self.timelines = {s: Timeline(boi[s]) for s in self.scales}
        base = boi[self.scales[0]]
        self.users = np.flatnonzero(np.diff(base.user_ptr) > 0)
        # position of each base user in every scale (-1: absent there)
        self.index = {s: self.timelines[s].user_index(base.user_ids) for s in self.scales}

    def spans(self, k: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One span per entry of k: (A, B) unix seconds of [a, a + L) finest-scale periods."""
        cfg, base = self.config, self.timelines[self.scales[0]]
        ptr, period = base.seqs.user_ptr, base.seqs.period
        first, last = period[ptr[k]], period[ptr[k + 1] - 1]
        life = last - first + 1  # (n,) life span in periods, gaps included
        shortest = np.minimum(cfg.min_subseq_periods, life)  # a life shorter than that: all of it
        longest = np.maximum(np.floor(cfg.max_subseq_fraction * life).astype(np.int64), shortest)
        longest = np.minimum(longest, cfg.max_periods)
        shortest = np.minimum(shortest, longest)
        L = rng.integers(shortest, longest + 1)  # (n,)
        latest = np.maximum(last - L + 1, first)  # last start that leaves room for L
        n_starts = np.searchsorted(base.key_period, _pack(k, latest), side="right") - ptr[k]  # >= 1
        a = period[ptr[k] + (rng.random(len(k)) * n_starts).astype(np.int64)]
        g = base.seqs.granularity
        return period_start_ts(g, a), period_start_ts(g, a + L)

    def sample(self, k: np.ndarray, rng: np.random.Generator) -> dict[str, ScaleBatch]:
        both = np.concatenate([k, k])  # (2B,) x views then y views
        A, B = self.spans(both, rng)
        batch = {}
        for s in self.scales:
            lo, hi = self.timelines[s].rows_in(self.index[s][both], A, B)
            rows, lengths = _drop_periods(*row_ranges(lo, hi), self.config.period_dropout, rng)
            batch[s] = collate_rows(self.timelines[s].seqs, rows, lengths)
        return batch


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------


def _rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def train_smen(boi: dict[str, BoISequences], smen_config: SMENConfig, train_config: UserTrainingConfig,
               device: torch.device | str | None, seed: int, checkpoint_path: str | Path | None = None,
               resume: bool = True, progress: bool = True) -> tuple[SMEN, dict[str, list[float]]]:
    """Train SMEN with the contrastive loss of §2.2.4 (eq. 3 on h(R^) of two views per user).

    One epoch visits every trainable user once, in a random order, ``batch_size`` users per
    step. All sampling in epoch e uses ``np.random.default_rng([seed, e])``, so a run
    resumed from the checkpoint of epoch e continues exactly as an uninterrupted one.

    Args:
        boi: ``{granularity: BoISequences}`` holding every scale of ``smen_config.scales``.
        device: passed to ``runs.device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ...).
        checkpoint_path: written atomically after every epoch (model, optimizers, RNG states,
            epoch, loss history). With ``resume`` an existing one is continued; it must come
            from the same ``smen_config`` and ``seed``.

    Returns:
        (model in eval mode, ``{"step": loss per step, "epoch": mean loss per epoch}``).
    """
    dev = runs.device(str(device) if device is not None else "auto")
    torch.manual_seed(seed)
    model = SMEN(boi[smen_config.scales[0]].n_interests, smen_config.hidden, smen_config.anchors,
                 smen_config.scales, sparse=smen_config.sparse_grad).to(dev)
    optimizers = adam_optimizers(model.dense_parameters(), model.sparse_parameters(), train_config.lr)
    history: dict[str, list[float]] = {"step": [], "epoch": []}
    first_epoch = 0
    if checkpoint_path is not None and resume and Path(checkpoint_path).exists():
        ckpt = torch.load(checkpoint_path, map_location=dev, weights_only=False)
        if ckpt["smen_config"] != dataclasses.asdict(smen_config) or ckpt["seed"] != seed:
            raise ValueError(f"{checkpoint_path} was written with another SMEN config or seed; "
                             "delete it or pass resume=False")
        model.load_state_dict(ckpt["model"])
        for optimizer, state in zip(optimizers, ckpt["optimizers"]):
            optimizer.load_state_dict(state)
        history, first_epoch = ckpt["history"], ckpt["epoch"]
        _set_rng_states(ckpt["rng"])

    sampler = PairSampler(boi, smen_config.scales, train_config)
    if len(sampler.users) < 2:
        raise ValueError("SMEN training needs at least two users with periods (in-batch negatives)")
    n_users, bs = len(sampler.users), train_config.batch_size
    steps_per_epoch = n_users // bs + (n_users % bs >= 2)  # a last batch of 1 has no negative
    use_amp = train_config.amp and dev.type == "cuda"
    bar = tqdm(total=train_config.epochs * steps_per_epoch, initial=first_epoch * steps_per_epoch,
               disable=not progress, desc="SMEN", unit="step")
    model.train()
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
        if checkpoint_path is not None:
            runs.save_torch(checkpoint_path, {
                "epoch": epoch + 1, "model": model.state_dict(),
                "optimizers": [optimizer.state_dict() for optimizer in optimizers],
                "history": history, "rng": _rng_states(),
                "smen_config": dataclasses.asdict(smen_config), "seed": seed,
            })
    bar.close()
    return model.eval(), history


# ---------------------------------------------------------------------------------------
# Encoding users
# ---------------------------------------------------------------------------------------


def _month_start_ts(ts: np.ndarray, months_back: int) -> np.ndarray:
    """Start (unix s) of the month ``months_back`` months before the month after ts - 1.

    With ts = 2018-01-01 00:00 and 12: 2017-01-01, i.e. [result, ts) is the last 12 months.
    """
    month = (np.asarray(ts, dtype=np.int64) - 1).astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
    return period_start_ts("month", month + 1 - months_back)


def _windows(timelines: dict[str, Timeline], scales: tuple[str, ...], user_ids: np.ndarray,
             last_months: int | None, history_end_ts: int | None, coarse_rows: str) -> dict:
    """Rows [lo, hi) per scale of each user in the encoding window (see ``encode_users``)."""
    index = {s: timelines[s].user_index(user_ids) for s in scales}
    if last_months is None and history_end_ts is None:
        return {s: timelines[s].whole_life(index[s]) for s in scales}
    base = timelines[scales[0]]
    k0 = index[scales[0]]
    if history_end_ts is not None:
        B = np.full(len(user_ids), int(history_end_ts), dtype=np.int64)
    else:  # each user's own last period at the finest scale; users without one get nothing
        ptr, k = base.seqs.user_ptr, np.maximum(k0, 0)
        k0 = np.where((k0 >= 0) & (ptr[k + 1] > ptr[k]), k0, -1)
        B = np.append(base.end_ts, 0)[np.where(k0 >= 0, ptr[k + 1] - 1, -1)]  # (n,) 0 when none
    A = _month_start_ts(B, last_months) if last_months is not None else np.full_like(B, np.iinfo(np.int64).min)
    out = {}
    for s in scales:
        k = np.where(k0 >= 0, index[s], -1) if history_end_ts is None else index[s]
        out[s] = timelines[s].rows_in(k, A, B, inside=(coarse_rows == "inside"))
    return out


@contextlib.contextmanager
def _inference(model: SMEN):
    """Eval mode and no autograd for the duration; the model's former mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def encode_users(model: SMEN, boi: dict[str, BoISequences], user_ids: np.ndarray,
                 device: torch.device | str | None, last_months: int | None = None,
                 history_end_ts: int | None = None, batch_size: int = 512,
                 coarse_rows: str = "overlap") -> np.ndarray:
    """R^ of eq. (7) of every user, flattened: (n_users, M*H) float32, rows in ``user_ids`` order.

    The representation is R^, not the head output h(R^) (§2.2.3). Runs in eval mode under
    ``torch.inference_mode`` (the model's mode is restored afterwards), ``batch_size`` users
    at a time, so memory is bounded by one batch.

    Window (Fig. 3 length ablation): by default each user's whole life. With ``last_months``
    K, the periods overlapping the last K calendar months before ``history_end_ts`` (unix s;
    None: the end of each user's own last period). Periods overlapping the window are kept:
    for the year scale that is every year the window touches (the year rows were built from
    whole years, so a 2-month window then also sees the rest of that year); with
    ``coarse_rows="inside"`` only periods lying wholly inside the window are kept (a short
    window then has no year rows). ``history_end_ts`` alone cuts the life at that time.

    Users absent from ``boi`` or without periods in the window get the encoding of an
    empty sequence (r~ = 0 at every scale, hence R^ = 0).
    """
    if coarse_rows not in ("overlap", "inside"):
        raise ValueError(f"coarse_rows must be 'overlap' or 'inside', not {coarse_rows!r}")
    dev = runs.device(str(device) if device is not None else "auto")
    user_ids = np.asarray(user_ids, dtype=np.int64)
    timelines = {s: Timeline(boi[s]) for s in model.scales}
    windows = _windows(timelines, model.scales, user_ids, last_months, history_end_ts, coarse_rows)
    reps = np.zeros((len(user_ids), model.anchors * model.hidden), dtype=np.float32)
    with _inference(model):
        for start in range(0, len(user_ids), batch_size):
            part = slice(start, start + batch_size)
            batch = {s: collate_rows(boi[s], *row_ranges(lo[part], hi[part])).to(dev)
                     for s, (lo, hi) in windows.items()}
            reps[part] = model(batch).flatten(1).float().cpu().numpy()  # (b, M*H)
    return reps


def anchor_outputs(model: SMEN, boi: dict[str, BoISequences], user_ids: np.ndarray,
                   device: torch.device | str | None, scale: str | None = None,
                   batch_size: int = 512) -> np.ndarray:
    """Multi-anchor outputs r^i (eq. 5) per user, for the t-SNE of Fig. 5: (n_users, M, H).

    r^i_t is computed for every period t of the user's whole life at ``scale`` (default the
    finest, ``model.scales[0]``) and averaged over the periods: one point per (user, anchor).
    Users without periods get zeros.
    """
    dev = runs.device(str(device) if device is not None else "auto")
    seqs = boi[scale or model.scales[0]]
    timeline = Timeline(seqs)
    lo, hi = timeline.whole_life(timeline.user_index(user_ids))
    out = np.zeros((len(user_ids), model.anchors, model.hidden), dtype=np.float32)
    with _inference(model):
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
    return runs.save_npz(path, user_ids=np.asarray(user_ids, dtype=np.int64),
                         reps=np.asarray(reps, dtype=np.float32))


def load_user_reps(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(user_ids (n,) int64, reps (n, M*H) float32) written by ``save_user_reps``."""
    with np.load(path) as f:
        return f["user_ids"], f["reps"]
