"""Monthly incremental update of user representations: SMEN's encoding continued, not rerun.

The whole-life encoding of :func:`lurm_lite.user_training.encode_users` runs, per scale, the
GRU of §2.2.2 over a fixed-interval timeline (§2.2: "T is divided into N parts at a fixed
time interval") from the user's first non-empty period to the history end, one step per
period, an empty period being the input r = ReLU(0) = 0. The GRU is causal, so when the
history end moves on by one calendar month the new R^ (eq. 7) needs only what the encoder
held at the old end, never the user's past behaviours:

- **month scale**: every month is closed when its update arrives. The GRU state after the
  last month, r~^i (one per anchor i, M x H per user), takes one step with the new month's
  r^i of eq. (5) (r^i = 0 for a user with no new behaviour; a user whose first behaviour is
  in the new month starts the timeline there, from the GRU's initial state 0).
- **year scale**: the open year's b'_t = log(1 + counts so far) (eq. 4 on the months of the
  year seen so far, as ``collate_views`` sums them) changes with every month, so the state
  keeps the GRU state after the last CLOSED year and the open year's interest counts. The
  year's r~'^i is one GRU step from the closed state with the open row; when the new month
  is a December the open year is folded into the closed state (that step is kept, the
  counts are emptied) and r~'^i is the closed state itself until January's update.

R^ then follows from eq. (7), r^^i = s^i r~^i + (1 - s^i) r~'^i. The result equals a
whole-life re-encode to float rounding (tests/test_serving.py: 1e-5); one update costs one
multi-anchor pass and one GRU step per scale (two in December), whatever the life length.

Input of an update: the new month's BoI (``BoISequences`` at month granularity holding only
that month's rows), as :func:`lurm_lite.boi.build_boi` writes it from the month's
behaviours (``granularities=("month",), start_ts=<month start>, end_ts=<next month start>``).
That is the one builder the rest of the kit uses (hard or soft item -> interest
assignments alike), and its b_t = log(1 + count) carries the counts the year scale needs
(count = exp(b_t) - 1, exactly what ``collate_views`` sums).

Supported SMENs: scales ``("month", "year")`` or ``("month",)`` (the state advances a
calendar month at a time, which a '<N>d' scale does not nest into).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from lurm_lite import io
from lurm_lite.boi import BoISequences
from lurm_lite.periods import month_name, parse_month, period_index, period_start_ts
from lurm_lite.smen import SMEN, collate_matrix, row_ranges
from lurm_lite.user_training import Timeline, collate_views, inference

NOT_STARTED = np.iinfo(np.int64).min  # first_month of a user with no behaviour yet: no timeline
STATE_FORMAT = 1
SUPPORTED_SCALES = (("month", "year"), ("month",))


@dataclasses.dataclass
class UserState:
    """What SMEN needs to continue encoding n users, all at the history end of ``month``.

    Rows follow ``user_ids`` (ascending). M anchors, H hidden units, D interests.
    """

    user_ids: np.ndarray  # (n,) int64 ascending
    first_month: np.ndarray  # (n,) int64 the user's first non-empty month (timelines start there); NOT_STARTED
    h_month: np.ndarray  # (n, M, H) float32 month-scale GRU state after ``month`` = r~^i
    h_year: np.ndarray | None  # (n, M, H) float32 year-scale GRU state after the last closed year (None: one scale)
    open_counts: sp.csr_matrix | None  # (n, D) float32 interest counts of the open year's months so far
    month: int  # the last month encoded (months since 1970-01); history end = start of month + 1
    scales: tuple[str, ...]
    model_fingerprint: str  # :func:`model_fingerprint` of the SMEN that wrote the state

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def history_end_ts(self) -> int:
        """Unix seconds at which the encoded history ends (exclusive): the start of month + 1."""
        return int(period_start_ts("month", np.array([self.month + 1]))[0])

    @property
    def open_months(self) -> int:
        """Months of the open year encoded so far, 0..11 (0: the last update closed a year)."""
        return (self.month + 1) % 12

    def nbytes(self) -> int:
        """Bytes of the state's arrays (what :func:`save_state` writes, headers aside)."""
        arrays = [self.user_ids, self.first_month, self.h_month]
        if self.h_year is not None:
            arrays += [self.h_year, self.open_counts.data, self.open_counts.indices, self.open_counts.indptr]
        return int(sum(a.nbytes for a in arrays))


def model_fingerprint(model: SMEN) -> str:
    """SHA-256 over the SMEN's weights: a state is continued only with the model that wrote it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _check_model(model: SMEN) -> None:
    if tuple(model.scales) not in SUPPORTED_SCALES:
        raise ValueError(f"incremental updates advance a calendar month at a time: the SMEN's scales must be "
                         f"('month', 'year') or ('month',), got {tuple(model.scales)}")


def _check_state(model: SMEN, state: UserState) -> None:
    _check_model(model)
    if state.model_fingerprint != model_fingerprint(model):
        raise ValueError("this state was written by another SMEN (its weights differ): a state is continued only "
                         "with the model that built it; rebuild it with init_state(model, boi, user_ids)")


def _gru_step(model: SMEN, r: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One step of the §2.2.2 GRU for every (user, anchor): r (n, M, H), h (n, M, H) -> (n, M, H)."""
    n, M, H = r.shape
    out, _ = model.time_aggregation.gru(r.reshape(n * M, 1, H), h.reshape(1, n * M, H).contiguous())  # (n*M, 1, H)
    return out.view(n, M, H)


def _step_started(model: SMEN, b: sp.csr_matrix, h: torch.Tensor, started: np.ndarray,
                  dev: torch.device) -> torch.Tensor:
    """h of the users ``started`` after one step with the rows b (n, D) as input; others keep h.

    r^i = eq. (5) of each row (0 for an empty row, as an empty period of the timeline); a
    user whose timeline has not started (no behaviour yet) takes no step: its r~ stays 0.
    """
    idx = np.flatnonzero(started)
    if len(idx) == 0:
        return h
    x = collate_matrix(b[idx], np.ones(len(idx), dtype=np.int64)).to(dev)
    r = model.multi_anchor(x)  # (n_started, M, H) eq. (5)
    rows = torch.from_numpy(idx).to(dev)
    return h.index_copy(0, rows, _gru_step(model, r.to(h.dtype), h[rows]))


def _log1p_rows(counts: sp.csr_matrix) -> sp.csr_matrix:
    """b = log(1 + counts) of eq. (4), float32, as ``collate_views`` computes coarse rows."""
    b = counts.astype(np.float64)
    b.data = np.log1p(b.data)
    return b.astype(np.float32)


def _counts(b: sp.csr_matrix) -> sp.csr_matrix:
    """Interest counts of BoI rows, exp(b_j) - 1 (float64; eq. 4 inverted)."""
    counts = b.astype(np.float64)
    counts.data = np.expm1(counts.data)
    return counts


def init_state(model: SMEN, boi: dict[str, BoISequences], user_ids: np.ndarray,
               device: torch.device | str | None = None, history_end_ts: int | None = None,
               batch_size: int = 512) -> UserState:
    """The state of ``user_ids`` at ``history_end_ts`` from one whole-life encode of their history.

    Windows as in :func:`lurm_lite.user_training.encode_users` (only ``boi["month"]`` is
    read, every behaviour before ``history_end_ts``; None: the end of the data's latest
    month), which must be the start of a calendar month. Per batch of users:

    - month scale: the GRU state r~^i over the month timeline to the history end;
    - year scale: the GRU state over the year timeline of the CLOSED years only (the window
      ending at 1 January of the open year), and the open year's counts, sum of
      exp(b_t) - 1 over its months so far.

    User ids are deduplicated and sorted (the state's row order); a user absent from
    ``boi`` or without behaviour before the end is kept, not started (R^ = 0 until its
    first behaviour).
    """
    _check_model(model)
    dev = io.device(device)
    base = Timeline(boi["month"])
    seqs = base.seqs
    user_ids = np.unique(np.asarray(user_ids, dtype=np.int64))
    end = int(base.end_ts.max()) if history_end_ts is None else int(history_end_ts)
    month = int(period_index(np.array([end - 1]), "month")[0])
    month_end = int(period_start_ts("month", np.array([month + 1]))[0])
    if end != month_end:
        raise ValueError(f"history_end_ts {end} ({np.datetime64(end, 's')}) is not the start of a month: the "
                         f"state advances a calendar month at a time; use e.g. {month_end} "
                         f"({np.datetime64(month_end, 's')}) to encode up to the end of {month_name(month)}")
    two_scales = model.switch is not None
    year_start = int(period_start_ts("month", np.array([(month + 1) // 12 * 12]))[0])  # 1 January of the open year

    k = base.user_index(user_ids)  # (n,) -1 where absent
    n = len(user_ids)
    lo, hi = base.rows_in(k, np.full(n, np.iinfo(np.int64).min), np.full(n, end), inside=True)
    first_month = np.full(n, NOT_STARTED, dtype=np.int64)  # (n,)
    first_month[hi > lo] = seqs.period[lo[hi > lo]]
    closed_hi = base.rows_in(k, np.full(n, np.iinfo(np.int64).min), np.full(n, year_start), inside=True)[1]
    M, H = model.anchors, model.hidden
    h_month = np.zeros((n, M, H), dtype=np.float32)
    h_year = np.zeros((n, M, H), dtype=np.float32) if two_scales else None
    with inference(model):
        for start in range(0, n, batch_size):
            part = slice(start, start + batch_size)
            rows, n_rows = row_ranges(lo[part], hi[part])
            x = collate_views(seqs, rows, n_rows, np.full(len(n_rows), end), ("month",))["month"]
            h_month[part] = model.encode_scale(x.to(dev)).float().cpu().numpy()  # (b, M, H)
            if two_scales:
                rows, n_rows = row_ranges(lo[part], closed_hi[part])
                x = collate_views(seqs, rows, n_rows, np.full(len(n_rows), year_start), ("year",))["year"]
                h_year[part] = model.encode_scale(x.to(dev)).float().cpu().numpy()  # (b, M, H)
    open_counts = None
    if two_scales:  # sum the open year's month rows [closed_hi, hi) of each user: one sparse product
        rows, n_rows = row_ranges(closed_hi, hi)
        G = sp.csr_matrix((np.ones(len(rows)), (np.repeat(np.arange(n), n_rows), np.arange(len(rows)))),
                          shape=(n, len(rows)))
        open_counts = (G @ _counts(seqs.matrix[rows])).astype(np.float32).tocsr()  # (n, D)
    return UserState(user_ids, first_month, h_month, h_year, open_counts, month,
                     tuple(model.scales), model_fingerprint(model))


def representations(model: SMEN, state: UserState, device: torch.device | str | None = None,
                    batch_size: int = 4096) -> np.ndarray:
    """R^ of eq. (7) of every user of the state, flattened: (n, M*H) float32, rows in ``user_ids`` order.

    r~^i is the month state; r~'^i is the closed-year state after one GRU step with the open
    year's row b'_t = log(1 + counts so far) (or the closed state itself right after a
    December, when the open year has no month yet). Equal to
    ``encode_users(model, boi, state.user_ids, device, history_end_ts=state.history_end_ts)``.
    """
    _check_state(model, state)
    return _representations(model, state, io.device(device), batch_size)


def _representations(model: SMEN, state: UserState, dev: torch.device, batch_size: int) -> np.ndarray:
    started = state.first_month != NOT_STARTED  # (n,)
    reps = np.zeros((state.n_users, model.anchors * model.hidden), dtype=np.float32)
    with inference(model):
        for start in range(0, state.n_users, batch_size):
            part = slice(start, start + batch_size)
            r_tilde = torch.from_numpy(state.h_month[part]).to(dev)  # (b, M, H)
            if model.switch is None:
                R_hat = r_tilde
            else:
                r_tilde_prime = torch.from_numpy(state.h_year[part]).to(dev)  # (b, M, H) closed years
                if state.open_months:
                    r_tilde_prime = _step_started(model, _log1p_rows(state.open_counts[part]), r_tilde_prime,
                                                  started[part], dev)
                R_hat = model.switch(r_tilde, r_tilde_prime)  # (b, M, H)
            reps[part] = R_hat.flatten(1).float().cpu().numpy()
    return reps


def _month_rows(month_boi: BoISequences, month: int, n_interests: int) -> BoISequences:
    """``month_boi`` checked to hold the rows of ``month`` only, one per user, D = n_interests."""
    if month_boi.granularity != "month":
        raise ValueError(f"the update takes the new month's BoI at month granularity, got {month_boi.granularity!r}: "
                         "build it with build_boi(..., granularities=('month',), start_ts=..., end_ts=...)")
    if month_boi.n_interests != n_interests:
        raise ValueError(f"the new month's BoI has D = {month_boi.n_interests} interests, the SMEN {n_interests}")
    other = month_boi.period[month_boi.period != month]
    if len(other):
        raise ValueError(f"the new month's BoI must hold {month_name(month)} only, but has rows of "
                         f"{sorted({month_name(p) for p in other[:5]})}: build it with start_ts and end_ts "
                         f"at the bounds of {month_name(month)}")
    return month_boi


def update(model: SMEN, state: UserState, month_boi: BoISequences, month: int | str,
           device: torch.device | str | None = None, batch_size: int = 4096) -> tuple[UserState, np.ndarray]:
    """Advance every user by one calendar month without reading the past: (new state, R^ (n', M*H)).

    ``month`` ('YYYY-MM' or months since 1970-01) must be the month after ``state.month``;
    ``month_boi`` holds its rows b_t (eq. 4), one per user with behaviour in it (see the
    module docstring). Users of ``month_boi`` not in the state are added (their timelines
    start this month); the state's users without a row take the step with r = 0. Per user:

        r~^i     <- GRU(r^i of b_month, r~^i)                   month scale, §2.2.2
        counts   <- counts + exp(b_month) - 1                    the open year, eq. (4)
        December: h'^i <- GRU(r^i of log(1 + counts), h'^i), counts <- 0   (the year closes)

    then R^ by :func:`representations`. ``state`` is not modified; save the new one with
    :func:`save_state`, which replaces the file atomically (a killed update leaves the
    previous state on disk). R^ rows follow the new state's ``user_ids``.
    """
    _check_state(model, state)
    dev = io.device(device)
    month = parse_month(month)
    if month != state.month + 1:
        raise ValueError(f"the state is at the end of {month_name(state.month)}: the next update is for "
                         f"{month_name(state.month + 1)}, not {month_name(month)} (apply months in order, one "
                         "at a time; a month without behaviour is an update with an empty BoI)")
    month_boi = _month_rows(month_boi, month, model.n_interests)

    user_ids = np.union1d(state.user_ids, month_boi.user_ids)  # (n',) ascending
    n = len(user_ids)
    old = np.searchsorted(user_ids, state.user_ids)  # (n,) row of each old user in the new state
    row_user = np.searchsorted(user_ids, np.repeat(month_boi.user_ids, np.diff(month_boi.user_ptr)))  # (rows,)
    b_new = sp.csr_matrix((np.ones(len(row_user), np.float32), (row_user, np.arange(len(row_user)))),
                          shape=(n, len(row_user))) @ month_boi.matrix  # (n', D) b_t of the month, empty rows: 0
    first_month = np.full(n, NOT_STARTED, dtype=np.int64)
    first_month[old] = state.first_month
    first_month[row_user] = np.where(first_month[row_user] == NOT_STARTED, month, first_month[row_user])
    started = first_month != NOT_STARTED  # (n',)

    def grown(a: np.ndarray) -> np.ndarray:  # (n, M, H) -> (n', M, H), new users 0
        out = np.zeros((n, *a.shape[1:]), dtype=a.dtype)
        out[old] = a
        return out

    h_month, h_year, open_counts = grown(state.h_month), None, None
    if model.switch is not None:
        h_year = grown(state.h_year)
        P = sp.csr_matrix((np.ones(len(old)), (old, np.arange(len(old)))), shape=(n, len(old)))
        counts = P @ state.open_counts.astype(np.float64) + _counts(b_new)  # (n', D) the open year so far
        closes_year = month % 12 == 11
    with inference(model):
        for start in range(0, n, batch_size):
            part = slice(start, start + batch_size)
            h = torch.from_numpy(h_month[part]).to(dev)  # (b, M, H)
            h_month[part] = _step_started(model, b_new[part], h, started[part], dev).float().cpu().numpy()
            if model.switch is not None and closes_year:  # fold December's year into the closed state
                h = torch.from_numpy(h_year[part]).to(dev)
                h_year[part] = _step_started(model, _log1p_rows(counts[part]), h, started[part],
                                             dev).float().cpu().numpy()
    if model.switch is not None:
        open_counts = sp.csr_matrix((n, model.n_interests), dtype=np.float32) if closes_year \
            else counts.astype(np.float32).tocsr()
    new = UserState(user_ids, first_month, h_month, h_year, open_counts, month, state.scales,
                    state.model_fingerprint)
    return new, _representations(model, new, dev, batch_size)


def save_state(path: str | Path, state: UserState) -> Path:
    """Write the state atomically as one uncompressed ``.npz`` (a failed or killed write
    leaves the previous file as it was: :func:`lurm_lite.io.atomic_path`)."""
    arrays = dict(format=np.asarray(STATE_FORMAT), user_ids=state.user_ids, first_month=state.first_month,
                  h_month=state.h_month, month=np.asarray(state.month, dtype=np.int64),
                  scales=np.asarray(state.scales), model_fingerprint=np.asarray(state.model_fingerprint))
    if state.h_year is not None:
        c = state.open_counts.tocsr()
        arrays.update(h_year=state.h_year, open_data=c.data, open_indices=c.indices, open_indptr=c.indptr,
                      open_shape=np.asarray(c.shape, dtype=np.int64))
    return io.save_npz(path, **arrays)


def load_state(path: str | Path) -> UserState:
    """Read a state written by :func:`save_state`."""
    with np.load(path, allow_pickle=False) as f:
        if int(f["format"]) != STATE_FORMAT:
            raise ValueError(f"{path} holds a user state of format {int(f['format'])}, this lurm_lite reads "
                             f"{STATE_FORMAT}: rebuild it with init_state")
        two_scales = "h_year" in f
        return UserState(
            user_ids=f["user_ids"], first_month=f["first_month"], h_month=f["h_month"],
            h_year=f["h_year"] if two_scales else None,
            open_counts=sp.csr_matrix((f["open_data"], f["open_indices"], f["open_indptr"]),
                                      shape=tuple(f["open_shape"])) if two_scales else None,
            month=int(f["month"]), scales=tuple(str(s) for s in f["scales"]),
            model_fingerprint=str(f["model_fingerprint"]),
        )
