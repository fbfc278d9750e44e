"""Bag-of-Interests features, eq. (4) of the paper (§2.1.2).

For a user and a time period t with behaviours S_t = {x_1..x_|S_t|}, the BoI feature is

    b_t = [log(1 + sum_i I(x_i in c_1)), ..., log(1 + sum_i I(x_i in c_D))]   in R^D

where c_1..c_D are the D interests (k-means clusters of item embeddings). With a soft
assignment each behaviour spreads a unit mass over its interests, and the count of c_j is
the sum of the behaviours' weights on c_j.

BoI is a sparse group-by count over behaviours sorted by (user, ts) (DESIGN.md, performance
principles). Behaviours are processed in cache-sized blocks of whole users, all granularities
in one pass over a block: the interest and the period of every behaviour, and the rows
(user, period t) of b_t from the changes along the sorted arrays, are computed once; a
granularity nested in a finer requested one (year in month) takes its rows from the finer
rows instead of from the behaviours. Each granularity's counts then come from one sort of
the uint32 key row * D + interest, whose runs are the counts. No Python loop per behaviour or
per user; memory is bounded by one chunk of users plus the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import scipy.sparse as sp

from lurm_lite.io import save_npz
from lurm_lite.periods import DAY_SECONDS, LIFE, coarser_period, month_of_day, nests, parse_granularity, period_days, period_index
_MAX_BLOCK_BEHAVIORS = 1 << 15  # behaviours per block: its temporaries stay in the L2 cache (~12% faster than 2^16)


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


# ---------------------------------------------------------------------------------------
# Periods of the behaviours (what a period is: lurm_lite.periods)
# ---------------------------------------------------------------------------------------


class _MonthOfDay:
    """Day index (days since 1970-01-01) -> calendar month index (:func:`periods.month_of_day`),
    as a lookup table over the days seen so far, grown on demand (one gather per behaviour)."""

    def __init__(self) -> None:
        self.first_day = 0
        self.table = np.zeros(0, dtype=np.int64)

    def __call__(self, days: np.ndarray) -> np.ndarray:
        lo, hi = int(days.min()), int(days.max()) + 1
        if lo < self.first_day or hi > self.first_day + len(self.table):
            if len(self.table):
                lo, hi = min(lo, self.first_day), max(hi, self.first_day + len(self.table))
            margin = max(hi - lo, 3660)  # ten years or more of slack, so the table is rarely rebuilt
            self.table = month_of_day(np.arange(lo - margin, hi + margin))
            self.first_day = lo - margin
        return self.table[days - self.first_day]


def _periods(ts: np.ndarray, granularities: Sequence[str], month_of_day: _MonthOfDay) -> dict[str, np.ndarray]:
    """:func:`periods.period_index` of every behaviour ts (n,) at every granularity: (n,) int64 each,
    the calendar month looked up once for month and year."""
    out = {}
    if "month" in granularities or "year" in granularities:
        month = month_of_day(ts // DAY_SECONDS)  # (n,)
        if "month" in granularities:
            out["month"] = month
        if "year" in granularities:
            out["year"] = month // 12
    for granularity in granularities:
        if granularity not in out:
            out[granularity] = period_index(ts, granularity)
    return out


def _sources(granularities: Sequence[str]) -> dict[str, str | None]:
    """{granularity: the coarsest other requested granularity nesting in it (its rows are
    built from that one's rows), or None (rows from the behaviours)}, finer before coarser."""
    ordered = sorted(dict.fromkeys(granularities), key=period_days)
    return {g: max((f for f in ordered if nests(f, g)), key=period_days, default=None) for g in ordered}


# ---------------------------------------------------------------------------------------
# Counting one block of whole users
# ---------------------------------------------------------------------------------------


class _GrowingArray:
    """A 1-D array appended to block by block, stored in fixed segments of >= 64 MB.

    Segments this large are separate memory maps (above glibc's mmap threshold), so each one
    goes back to the operating system the moment :meth:`take` has copied it into the final
    array: building a 1e8-behaviour BoI peaks near the output size plus one segment, not at
    twice the output (which many small block arrays, fragmenting the heap, would cost).
    """

    def __init__(self, dtype, segment_bytes: int = 64 << 20):
        self.dtype = np.dtype(dtype)
        self.segment_len = segment_bytes // self.dtype.itemsize
        self.segments: list[np.ndarray] = []
        self.size = 0  # elements stored

    def append(self, values: np.ndarray) -> None:
        done = 0
        while done < len(values):
            used = self.size - (len(self.segments) - 1) * self.segment_len if self.segments else self.segment_len
            if used == self.segment_len:
                self.segments.append(np.empty(self.segment_len, dtype=self.dtype))
                used = 0
            n = min(self.segment_len - used, len(values) - done)
            self.segments[-1][used : used + n] = values[done : done + n]
            self.size += n
            done += n

    def take(self, dtype=None) -> np.ndarray:
        """The whole array (as ``dtype``); the segments are released one by one."""
        out = np.empty(self.size, dtype=dtype or self.dtype)
        for k in range(len(self.segments)):
            lo = k * self.segment_len
            hi = min(lo + self.segment_len, self.size)
            out[lo:hi] = self.segments[k][: hi - lo]
            self.segments[k] = None  # free this segment before copying the next
        self.segments, self.size = [], 0
        return out


class _BoIRows:
    """The BoI rows of one granularity, block after block: user k owns ``user_rows[k]``
    consecutive rows, row r has ``row_nnz[r]`` entries (cols, values)."""

    def __init__(self) -> None:
        self.user_ids = _GrowingArray(np.int64)  # (U,)
        self.user_rows = _GrowingArray(np.int64)  # (U,) rows per user
        self.row_period = _GrowingArray(np.int64)  # (R,)
        self.row_nnz = _GrowingArray(np.int64)  # (R,)
        self.cols = _GrowingArray(np.int32)  # (nnz,) interest j
        self.values = _GrowingArray(np.float32)  # (nnz,) log(1 + count)

    def add(self, row_user, row_period, row_nnz, cols, values) -> None:
        user_first_row = _run_starts(row_user)  # (U_b,)
        self.user_ids.append(row_user[user_first_row])
        self.user_rows.append(_run_lengths(user_first_row, len(row_user)))
        self.row_period.append(row_period)
        self.row_nnz.append(row_nnz)
        self.cols.append(cols)
        self.values.append(values)

    def assemble(self, n_interests: int, granularity: str) -> BoISequences:
        """One CSR with its user_ptr and period index (releases the stored blocks)."""
        user_ptr = np.zeros(self.user_rows.size + 1, dtype=np.int64)
        np.cumsum(self.user_rows.take(), out=user_ptr[1:])
        row_nnz = self.row_nnz.take()
        nnz = int(row_nnz.sum())
        index_dtype = np.int32 if nnz < np.iinfo(np.int32).max else np.int64
        indptr = np.zeros(len(row_nnz) + 1, dtype=index_dtype)
        np.cumsum(row_nnz, out=indptr[1:], dtype=index_dtype)
        del row_nnz
        matrix = sp.csr_matrix((self.values.take(), self.cols.take(index_dtype), indptr),
                               shape=(len(indptr) - 1, n_interests), copy=False)
        matrix.has_sorted_indices = True  # interests ascend within every row by construction
        return BoISequences(matrix=matrix, user_ids=self.user_ids.take(), user_ptr=user_ptr,
                            period=self.row_period.take(), granularity=granularity)


def _rows(user_ids: np.ndarray, period: np.ndarray):
    """The (user, period) rows along behaviours (or finer rows) sorted by (user, ts).

    Returns (first (R,) int64 position of each row's first element, row_user (R,),
    row_period (R,)). Raises when consecutive rows do not ascend in (user, period), i.e. when
    the input is not sorted by (user, ts) (checked on the R rows, not the n behaviours).
    """
    new_row = np.empty(len(period), dtype=bool)  # (n,)
    new_row[:1] = True
    np.not_equal(period[1:], period[:-1], out=new_row[1:])
    new_row[1:] |= user_ids[1:] != user_ids[:-1]
    first = np.flatnonzero(new_row)  # (R,)
    row_user, row_period = user_ids[first], period[first]
    user_step, period_step = row_user[1:] - row_user[:-1], row_period[1:] - row_period[:-1]  # (R-1,)
    if (user_step < 0).any() or ((period_step < 0) & (user_step == 0)).any():
        raise ValueError("behaviours must be sorted by (user_id, ts) (the data contract); sort them first")
    return first, row_user, row_period


def _run_starts(values: np.ndarray) -> np.ndarray:
    """(k,) positions where a run of equal values starts in the 1-D ``values``."""
    new_run = np.empty(len(values), dtype=bool)
    new_run[:1] = True
    np.not_equal(values[1:], values[:-1], out=new_run[1:])
    return np.flatnonzero(new_run)


def _run_lengths(run_starts: np.ndarray, n: int) -> np.ndarray:
    """(k,) int64 lengths of the runs starting at ``run_starts`` in an array of length n."""
    lengths = np.empty(len(run_starts), dtype=np.int64)
    np.subtract(run_starts[1:], run_starts[:-1], out=lengths[:-1])
    lengths[-1:] = n - run_starts[-1:]
    return lengths


def _count_hard(row_len: np.ndarray, interest: np.ndarray, n_interests: int):
    """b_t,j = log(1 + count of the row's behaviours on c_j) of eq. (4), hard assignment, for
    the R rows t of one block, from one sort of the block's keys.

    The key of a behaviour is row * D + c_j. Rows ascend along the block, so sorting the keys
    keeps every row's behaviours in place with its interests ascending, and a behaviour whose
    key equals the previous one repeats an entry of b_t instead of starting one. Only the
    values are sorted (no argsort, no payload), as uint32 whenever n * D fits (blocks are
    sized for it), and everything after the sort is a pass or two over the block plus work in
    the number of repeats, which is small when D is large.

    Args: row_len (R,) behaviours per row (rows are consecutive), interest (n,) c_j of each
        behaviour.
    Returns (row_nnz (R,) int64, cols (nnz,) uint, values (nnz,) float32 = log(1 + count)).
    """
    key_dtype = np.uint32 if len(interest) * n_interests <= 1 << 32 else np.uint64  # R <= n
    width = key_dtype(n_interests)
    row_base = np.repeat(np.arange(len(row_len), dtype=key_dtype) * width, row_len)  # (n,) row * D
    key = row_base + interest  # (n,)
    key.sort()
    repeat = np.empty(len(key), dtype=bool)  # (n,) same (row, interest) as the behaviour before
    repeat[0] = False
    np.equal(key[1:], key[:-1], out=repeat[1:])
    key -= row_base  # (n,) c_j again, ascending within each row
    repeats = np.flatnonzero(repeat)  # (n_rep,)
    cols = key[~repeat]  # (nnz,) one per entry
    row_nnz = row_len - np.bincount(row_base[repeats] // width, minlength=len(row_len))  # (R,)
    # The k-th repeat (position p) falls in entry p - k - 1; entries without repeats count 1.
    entry_of_repeat = repeats - np.arange(1, len(repeats) + 1)  # (n_rep,) ascending
    first = _run_starts(entry_of_repeat)  # (n_heavy,) one per entry counted more than once
    heavy_counts = 1 + _run_lengths(first, len(repeats))  # (n_heavy,)
    # log(1 + count) by count: float32 np.log1p of float32 counts, as if applied to every entry.
    log1p = np.log1p(np.arange(int(heavy_counts.max(initial=1)) + 1, dtype=np.float32))
    values = np.full(len(cols), log1p[1], dtype=np.float32)  # (nnz,) b_t entries, eq. (4)
    values[entry_of_repeat[first]] = log1p[heavy_counts]
    return row_nnz, cols, values


def _count_soft(row_len: np.ndarray, items: np.ndarray, soft: sp.csr_matrix, n_interests: int):
    """b_t,j of eq. (4) with a soft assignment: behaviour b adds soft[item_b, j] to the count of
    interest j in its row, summed in float64 in behaviour order.

    Args: row_len (R,) behaviours per row (rows are consecutive), items (n,), soft (n_items, D).
    Returns (row_nnz (R,) int64, cols (nnz,) int32, values (nnz,) float32 = log(1 + sum)).
    """
    first_entry = soft.indptr[items]  # (n,)
    n_entries = soft.indptr[items + 1] - first_entry  # (n,) interests per behaviour
    entry_offset = np.cumsum(n_entries) - n_entries  # (n,) where each behaviour's entries start
    entry = np.repeat(first_entry - entry_offset, n_entries) + np.arange(int(n_entries.sum()))  # (E,)
    if entry.size == 0:  # no behaviour of the block has an item with any interest weight
        return np.zeros(len(row_len), dtype=np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
    row = np.repeat(np.arange(len(row_len)), row_len)  # (n,)
    key = np.repeat(row, n_entries) * n_interests + soft.indices[entry]  # (E,) int64
    order = np.argsort(key, kind="stable")  # stable: each sum adds in behaviour order
    key = key[order]
    run_starts = _run_starts(key)  # (nnz,)
    sums = np.add.reduceat(soft.data[entry[order]], run_starts)  # (nnz,) float64
    unique_keys = key[run_starts]
    entry_row = unique_keys // n_interests
    cols = (unique_keys - entry_row * n_interests).astype(np.int32)
    return np.bincount(entry_row, minlength=len(row_len)), cols, np.log1p(sums).astype(np.float32)


def _count_block(user_ids, item_ids, ts, assignment, n_interests, sources, month_of_day, rows) -> None:
    """Add the BoI rows of one block of whole users to ``rows[g]`` for every granularity g.

    One pass over the behaviours gives their interests, their periods and the (user, period)
    rows of the granularities counted from behaviours (``sources[g]`` is None); a coarser
    granularity g takes its rows from its finer source f (a year row is a run of month rows
    of one user in one year), so its periods and rows cost O(R_f), not O(n). Each
    granularity's b_t (eq. 4) then comes from one sort of its keys row * D + c_j.
    """
    n = len(user_ids)
    soft = sp.issparse(assignment)
    interest = None if soft else assignment.take(item_ids)  # (n,) hard: c_j of each behaviour
    periods = _periods(ts, [g for g, source in sources.items() if source is None], month_of_day)
    first, row_user, row_period = {}, {}, {}  # per granularity, (R_g,) each: first behaviour, user, period
    for granularity, source in sources.items():  # every source comes before the granularities it feeds
        if source is None:
            first[granularity], row_user[granularity], row_period[granularity] = _rows(user_ids, periods[granularity])
        else:
            fine_period = coarser_period(row_period[source], source, granularity)  # (R_f,)
            fine_row, row_user[granularity], row_period[granularity] = _rows(row_user[source], fine_period)
            first[granularity] = first[source][fine_row]
        row_len = _run_lengths(first[granularity], n)  # (R_g,)
        if soft:
            count = _count_soft(row_len, item_ids, assignment, n_interests)
        else:
            count = _count_hard(row_len, interest, n_interests)
        rows[granularity].add(row_user[granularity], row_period[granularity], *count)


def _user_blocks(user_ids: np.ndarray, block_size: int) -> Iterator[slice]:
    """Slices of ~block_size behaviours that never split a user (sorted ``user_ids``)."""
    n = len(user_ids)
    targets = np.arange(block_size, n, block_size)
    cuts = np.unique(np.searchsorted(user_ids, user_ids[targets], side="left"))  # starts of users
    bounds = np.r_[0, cuts[cuts > 0], n]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi > lo:
            yield slice(int(lo), int(hi))


# ---------------------------------------------------------------------------------------
# Public builders
# ---------------------------------------------------------------------------------------


def _normalise_assignment(assignment, n_interests: int):
    if sp.issparse(assignment):
        soft = sp.csr_matrix(assignment, dtype=np.float64)
        soft.sort_indices()
        if soft.shape[1] != n_interests:
            raise ValueError(f"soft assignment has {soft.shape[1]} columns, expected D = {n_interests}")
        return soft
    hard = np.asarray(assignment)
    if hard.ndim != 1:
        raise ValueError("hard assignment must be (n_items,) interest ids; pass a CSR for soft")
    if hard.size and (hard.min() < 0 or hard.max() >= n_interests):
        raise ValueError(f"interest ids must lie in [0, {n_interests}); got [{hard.min()}, {hard.max()}]")
    return hard.astype(np.uint32 if n_interests <= np.iinfo(np.uint32).max else np.uint64)  # as the keys


def build_boi_streaming(
    chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    assignment: np.ndarray | sp.spmatrix,
    n_interests: int,
    granularities: Sequence[str] = ("month", "year"),
    start_ts: int | None = None,
    end_ts: int | None = None,
) -> dict[str, BoISequences]:
    """BoI sequences of eq. (4) from behaviours that arrive in chunks of whole users.

    Each chunk is ``(user_ids, item_ids, ts)``, sorted by (user_id, ts), and holds every
    behaviour of its users; users ascend across chunks (e.g. pyarrow batches of a Parquet
    file sorted by the data contract and split on user boundaries). Only one chunk is in
    memory at a time besides the output, so a 1e8-behaviour log need not be loaded whole.

    Args:
        chunks: iterable of (user_ids (n,) int, item_ids (n,) int, ts (n,) int64 seconds UTC).
        assignment: item -> interest: (n_items,) int (hard) or (n_items, D) CSR whose rows sum
            to 1 (soft; a behaviour adds its item's weights: count = sum of weights).
        n_interests: D.
        granularities: any of ``"month"``, ``"year"`` (calendar, UTC), ``"<N>d"`` (fixed
            intervals of N days since 1970-01-01).
        start_ts, end_ts: keep behaviours with start_ts <= ts < end_ts (None: unbounded).

    Returns:
        {granularity: BoISequences}; a user appears when it has a behaviour in the window.
    """
    granularities = tuple(granularities)
    for granularity in granularities:
        parse_granularity(granularity)
    assignment = _normalise_assignment(assignment, n_interests)
    month_of_day = _MonthOfDay()
    sources = _sources(granularities)
    # Blocks small enough that row * D + interest fits a uint32 key (unless D > 2^20 or one user is larger).
    block_size = int(np.clip(np.iinfo(np.uint32).max // n_interests, 1 << 12, _MAX_BLOCK_BEHAVIORS))
    rows = {g: _BoIRows() for g in sources}
    last_user = None
    for user_ids, item_ids, ts in chunks:
        user_ids = np.asarray(user_ids, dtype=np.int64)
        item_ids = np.asarray(item_ids)
        ts = np.asarray(ts, dtype=np.int64)
        if start_ts is not None or end_ts is not None:
            inside = np.ones(len(ts), dtype=bool)
            if start_ts is not None:
                inside &= ts >= start_ts
            if end_ts is not None:
                inside &= ts < end_ts
            user_ids, item_ids, ts = user_ids[inside], item_ids[inside], ts[inside]
        for block in _user_blocks(user_ids, block_size):
            if last_user is not None and user_ids[block.start] <= last_user:
                raise ValueError("behaviours must be sorted by (user_id, ts), and chunks must hold whole users "
                                 "in ascending user_id order")
            last_user = user_ids[block.stop - 1]
            _count_block(user_ids[block], item_ids[block], ts[block], assignment, n_interests, sources,
                         month_of_day, rows)
    return {g: rows.pop(g).assemble(n_interests, g) for g in dict.fromkeys(granularities)}


def _user_chunks(user_ids, item_ids, ts, chunk_users: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Views of sorted behaviour arrays, ``chunk_users`` users at a time."""
    user_ids = np.asarray(user_ids)
    user_start = np.flatnonzero(np.r_[True, user_ids[1:] != user_ids[:-1]])  # (U,)
    bounds = np.r_[user_start[::chunk_users], len(user_ids)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        yield user_ids[lo:hi], item_ids[lo:hi], ts[lo:hi]


def build_boi(
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    ts: np.ndarray,
    assignment: np.ndarray | sp.spmatrix,
    n_interests: int,
    granularities: Sequence[str] = ("month", "year"),
    start_ts: int | None = None,
    end_ts: int | None = None,
    chunk_users: int = 50_000,
) -> dict[str, BoISequences]:
    """BoI feature sequences B = {b_t1..b_tN} of every user, eq. (4) and §2.2.

    b_t = log(1 + count of the user's behaviours in period t on interest c_j), j = 1..D, for
    every non-empty period t of every user, at each granularity (the multi-scale input of
    §2.2.3: month and year). Behaviours in memory are streamed ``chunk_users`` users at a
    time through :func:`build_boi_streaming`; the result does not depend on ``chunk_users``.

    Args:
        user_ids, item_ids, ts: (n,) behaviours sorted by (user_id, ts) (the data contract);
            pass history-window behaviours, or the whole log with ``start_ts``/``end_ts``.
        assignment: (n_items,) int interest per item (hard) or (n_items, D) CSR (soft).
        n_interests: D.
        granularities: ``"month"``, ``"year"``, ``"<N>d"``.
        start_ts, end_ts: window start_ts <= ts < end_ts in unix seconds (None: unbounded).
        chunk_users: users per chunk, bounds the working memory.

    Returns:
        {granularity: BoISequences}.
    """
    return build_boi_streaming(_user_chunks(user_ids, item_ids, ts, chunk_users), assignment, n_interests,
                               granularities, start_ts, end_ts)


def whole_life_boi(
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    ts: np.ndarray,
    assignment: np.ndarray | sp.spmatrix,
    n_interests: int,
    start_ts: int | None = None,
    end_ts: int | None = None,
    chunk_users: int = 50_000,
) -> BoISequences:
    """b_T of §2.2: eq. (4) over the user's whole life cycle T (or the window
    [start_ts, end_ts)), one row per user, period 0, granularity ``"life"``. This is the
    'BoI' baseline: a D-dimensional sparse user representation."""
    return build_boi(user_ids, item_ids, ts, assignment, n_interests, (LIFE,), start_ts, end_ts, chunk_users)[LIFE]


# ---------------------------------------------------------------------------------------
# BoI rows as Parquet (written by lurm_lite.spark, read anywhere with pyarrow)
# ---------------------------------------------------------------------------------------

BOI_PARQUET_COLUMNS = ("user_id", "period", "indices", "values")  # one row per non-empty (user, period)


def boi_from_arrow(table, granularity: str, n_interests: int, source: str = "BoI rows") -> BoISequences:
    """BoISequences of eq. (4) from an Arrow table of BoI rows sorted by (user_id, period).

    ``table`` has ``user_id`` int64, ``period`` int64, ``indices`` list<int> (the interests j
    with b_t,j > 0, ascending) and ``values`` list<float32> (b_t,j = log(1 + count)), one row
    per non-empty period. The result has :func:`build_boi`'s dtypes (CSR float32 with int32
    indices below 2^31 non-zeros). ``source`` names the data in errors (a file or folder).
    """
    import pyarrow.compute as pc

    missing = [c for c in BOI_PARQUET_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{source}: no column {missing[0]!r} (columns: {', '.join(table.column_names)}); BoI rows "
                         "are user_id int64, period int64, indices list<int>, values list<float>, "
                         "e.g. (42, 576, [3, 17], [0.693, 1.099])")
    user_ids = table.column("user_id").to_numpy().astype(np.int64)  # (n_rows,)
    period = table.column("period").to_numpy().astype(np.int64)  # (n_rows,)
    row_nnz = pc.list_value_length(table.column("indices")).to_numpy(zero_copy_only=False)  # (n_rows,)
    if not np.array_equal(row_nnz, pc.list_value_length(table.column("values")).to_numpy(zero_copy_only=False)):
        raise ValueError(f"{source}: 'indices' and 'values' differ in length in some row; each row lists the "
                         "interests j and their b_t,j pairwise, e.g. indices [3, 17], values [0.693, 1.099]")
    nnz = int(row_nnz.sum())
    index_dtype = np.int32 if nnz < np.iinfo(np.int32).max else np.int64
    cols = pc.list_flatten(table.column("indices")).to_numpy().astype(index_dtype)  # (nnz,)
    values = pc.list_flatten(table.column("values")).to_numpy().astype(np.float32)  # (nnz,)
    if nnz and (cols.min() < 0 or cols.max() >= n_interests):
        raise ValueError(f"{source}: field 'indices' holds interest {int(cols.max())} outside [0, D = {n_interests}); "
                         "pass the D the rows were built with")
    indptr = np.zeros(len(row_nnz) + 1, dtype=index_dtype)
    np.cumsum(row_nnz, out=indptr[1:], dtype=index_dtype)
    matrix = sp.csr_matrix((values, cols, indptr), shape=(len(row_nnz), n_interests), copy=False)
    if not matrix.has_sorted_indices:
        raise ValueError(f"{source}: field 'indices' must ascend within each row (e.g. [3, 17], not [17, 3])")
    new_user = np.ones(len(user_ids), dtype=bool)  # (n_rows,) the row opens a user's sequence
    new_user[1:] = user_ids[1:] != user_ids[:-1]
    if (np.diff(user_ids) < 0).any() or (np.diff(period)[~new_user[1:]] <= 0).any():
        raise ValueError(f"{source}: rows must be sorted by (user_id, period), one row per (user, period)")
    user_start = np.flatnonzero(new_user)  # (n_users,)
    return BoISequences(matrix=matrix, user_ids=user_ids[user_start],
                        user_ptr=np.r_[user_start, len(user_ids)].astype(np.int64), period=period,
                        granularity=granularity)


def load_boi_parquet(path: str | Path, granularity: str, n_interests: int,
                     user_ids: np.ndarray | None = None) -> BoISequences:
    """Read BoI rows written by :func:`lurm_lite.spark.write_boi` back into BoISequences.

    ``path`` is the folder Spark wrote (``granularity=<g>/part-*.parquet`` beneath it);
    ``user_ids`` (any order) keeps one shard of users, None all of them. Only pyarrow is
    needed, not Spark. Equal to :func:`build_boi`'s result for the same users.
    """
    import pyarrow.dataset as ds

    parse_granularity(granularity)
    dataset = ds.dataset(str(path), format="parquet", partitioning="hive")
    written = sorted({part.split("=", 1)[1] for file in dataset.files for part in Path(file).parts
                      if part.startswith("granularity=")})
    if granularity not in written:
        raise ValueError(f"{path}: no granularity={granularity}/ folder (found: {', '.join(written) or 'none'}); "
                         f"expected the layout lurm_lite.spark.write_boi writes, e.g. "
                         f"{path}/granularity={granularity}/part-00000-....parquet")
    rows = ds.field("granularity") == granularity
    if user_ids is not None:
        rows &= ds.field("user_id").isin(np.unique(np.asarray(user_ids, dtype=np.int64)))
    table = dataset.to_table(columns=list(BOI_PARQUET_COLUMNS), filter=rows)
    table = table.sort_by([("user_id", "ascending"), ("period", "ascending")])
    return boi_from_arrow(table, granularity, n_interests, source=f"{path} (granularity={granularity})")
