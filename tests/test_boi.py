import math
from collections import defaultdict
from datetime import datetime, timezone

import numpy as np
import pytest
import scipy.sparse as sp

from lurm_lite.boi import build_boi, build_boi_streaming, load_boi, save_boi, whole_life_boi
from lurm_lite.periods import period_index

D = 7


def _utc(*args) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp())


def _random_log(seed=0, n=4000, n_users=60, n_items=50):
    """Behaviours sorted by (user, ts), 1995..2020, sparse user ids, some users very active."""
    rng = np.random.default_rng(seed)
    activity = 1.0 / np.arange(1, n_users + 1)  # Zipf-like: a few users hold most behaviours
    user_ids = rng.choice(np.arange(n_users) * 37 + 5, n, p=activity / activity.sum()).astype(np.int64)
    ts = rng.integers(_utc(1995, 1, 1), _utc(2020, 1, 1), n).astype(np.int64)
    order = np.lexsort((ts, user_ids))
    return user_ids[order], rng.integers(0, n_items, n).astype(np.int32)[order], ts[order]


def _soft_assignment(seed=1, n_items=50, top_k=3):
    rng = np.random.default_rng(seed)
    cols = np.stack([rng.choice(D, top_k, replace=False) for _ in range(n_items)])
    weights = rng.random((n_items, top_k))
    weights /= weights.sum(axis=1, keepdims=True)
    return sp.csr_matrix((weights.ravel(), (np.repeat(np.arange(n_items), top_k), cols.ravel())), shape=(n_items, D))


def _reference(user_ids, item_ids, ts, assignment, granularity, start_ts=None, end_ts=None):
    """Eq. (4) with a dict per (user, period) and datetime calendars: {(user, period): {j: b_tj}}."""
    counts = defaultdict(lambda: defaultdict(float))
    if sp.issparse(assignment):  # item -> [(j, weight), ...]
        soft = sp.csr_matrix(assignment)
        weights = [list(zip(soft.indices[a:b].tolist(), soft.data[a:b].tolist()))
                   for a, b in zip(soft.indptr[:-1], soft.indptr[1:])]
    for user, item, t in zip(user_ids.tolist(), item_ids.tolist(), ts.tolist()):
        if (start_ts is not None and t < start_ts) or (end_ts is not None and t >= end_ts):
            continue
        date = datetime.fromtimestamp(t, tz=timezone.utc)
        period = {"month": (date.year - 1970) * 12 + date.month - 1, "year": date.year - 1970,
                  "life": 0}.get(granularity)
        if period is None:  # "<N>d"
            period = math.floor(t / (int(granularity[:-1]) * 86400))
        if sp.issparse(assignment):
            for j, w in weights[item]:
                counts[(user, period)][j] += w
        else:
            counts[(user, period)][int(assignment[item])] += 1
    return {key: {j: math.log1p(c) for j, c in row.items()} for key, row in counts.items()}


def _as_dict(seqs):
    out = {}
    for k, user in enumerate(seqs.user_ids.tolist()):
        for r in range(seqs.user_ptr[k], seqs.user_ptr[k + 1]):
            row = seqs.matrix.getrow(r)
            out[(user, int(seqs.period[r]))] = dict(zip(row.indices.tolist(), row.data.tolist()))
    return out


def _assert_same(actual, expected):
    assert actual.keys() == expected.keys()
    for key, row in expected.items():
        assert actual[key].keys() == row.keys(), key
        for j, value in row.items():
            assert actual[key][j] == pytest.approx(value, rel=1e-6), (key, j)


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_boi_equals_brute_force_reference_at_month_and_year(soft):
    user_ids, item_ids, ts = _random_log()
    assignment = _soft_assignment() if soft else np.random.default_rng(2).integers(0, D, 50)
    boi = build_boi(user_ids, item_ids, ts, assignment, D, granularities=("month", "year", "10d"), chunk_users=7)
    for granularity in ("month", "year", "10d"):
        seqs = boi[granularity]
        assert seqs.granularity == granularity and seqs.matrix.shape[1] == D
        assert seqs.matrix.dtype == np.float32 and seqs.matrix.has_canonical_format
        _assert_same(_as_dict(seqs), _reference(user_ids, item_ids, ts, assignment, granularity))


def _assert_identical(a, b):
    """Every BoISequences field equal, bit for bit, dtypes included."""
    assert a.granularity == b.granularity and a.matrix.shape == b.matrix.shape
    for name in ("user_ids", "user_ptr", "period"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name
    for name in ("indptr", "indices", "data"):
        x, y = getattr(a.matrix, name), getattr(b.matrix, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def _year_boundary_log():
    """A hand-made log: user 1 crosses New Year (Dec 2017 -> Jan 2018) with interest 0 in both
    years and interest 2 twice in February; user 4 has all behaviours in one month (so one
    period at every scale); user 6 a single behaviour; user 9 repeats item 3 over three months
    of one year (its year count sums the months). Items are their own hard interests."""
    behaviours = [
        (1, 0, _utc(2017, 12, 31, 23, 59, 59)), (1, 1, _utc(2017, 12, 31, 23, 59, 59)), (1, 0, _utc(2018, 1, 1)),
        (1, 2, _utc(2018, 2, 3)), (1, 2, _utc(2018, 2, 4)), (1, 0, _utc(2018, 2, 5)),
        (4, 5, _utc(2016, 7, 1)), (4, 5, _utc(2016, 7, 9)), (4, 6, _utc(2016, 7, 31, 23)),
        (6, 4, _utc(1999, 3, 3)),
        (9, 3, _utc(2019, 1, 2)), (9, 3, _utc(2019, 1, 3)), (9, 3, _utc(2019, 5, 1)), (9, 6, _utc(2019, 12, 31)),
    ]
    user_ids, item_ids, ts = (np.array(column, dtype=np.int64) for column in zip(*behaviours))
    return user_ids, item_ids, ts


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("log", ["year_boundary", "random"])
def test_one_pass_equals_each_granularity_built_alone(soft, log):
    """Month and year from one pass (year rows from month rows) equal each granularity built
    on its own (year counted from the behaviours) and the dict reference, in build_boi and
    build_boi_streaming alike; so do nested "<N>d" and "life" sets."""
    if log == "year_boundary":
        user_ids, item_ids, ts = _year_boundary_log()
        assignment = _soft_assignment(n_items=7) if soft else np.arange(7)
    else:
        user_ids, item_ids, ts = _random_log(seed=9, n=1500, n_users=30)
        assignment = _soft_assignment(seed=10) if soft else np.random.default_rng(10).integers(0, D, 50)
    alone = {}  # granularity: BoISequences built on its own, checked against the dict reference once
    for granularity in ("month", "year", "life", "7d", "14d", "28d"):
        alone[granularity] = build_boi(user_ids, item_ids, ts, assignment, D, granularities=(granularity,))[granularity]
        _assert_same(_as_dict(alone[granularity]), _reference(user_ids, item_ids, ts, assignment, granularity))
    nested_sets = (("month", "year"), ("year", "month", "life"), ("7d", "14d", "28d", "life"), ("7d", "month", "year"))
    for granularities in nested_sets:
        together = build_boi(user_ids, item_ids, ts, assignment, D, granularities=granularities, chunk_users=3)
        cuts = np.flatnonzero(np.r_[True, user_ids[1:] != user_ids[:-1]])[1::2]  # two users per chunk
        chunks = zip(np.split(user_ids, cuts), np.split(item_ids, cuts), np.split(ts, cuts))
        streamed = build_boi_streaming(chunks, assignment, D, granularities=granularities)
        assert list(together) == list(streamed) == list(granularities)
        for granularity in granularities:
            _assert_identical(together[granularity], alone[granularity])
            _assert_identical(streamed[granularity], alone[granularity])
    if log == "year_boundary" and not soft:
        boi = build_boi(user_ids, item_ids, ts, assignment, D)
        counts = {g: {key: {j: round(math.expm1(v)) for j, v in row.items()} for key, row in _as_dict(boi[g]).items()}
                  for g in ("month", "year")}
        assert counts["year"][(1, 47)] == {0: 1, 1: 1} and counts["year"][(1, 48)] == {0: 2, 2: 2}
        assert counts["month"][(9, 588)] == {3: 2} and counts["year"][(9, 49)] == {3: 3, 6: 1}
        assert counts["month"][(4, 558)] == counts["year"][(4, 46)] == {5: 2, 6: 1}


def test_whole_life_boi_is_one_row_per_user():
    user_ids, item_ids, ts = _random_log(seed=3)
    assignment = np.random.default_rng(4).integers(0, D, 50)
    life = whole_life_boi(user_ids, item_ids, ts, assignment, D)
    np.testing.assert_array_equal(life.user_ids, np.unique(user_ids))
    np.testing.assert_array_equal(life.user_ptr, np.arange(len(life.user_ids) + 1))
    assert np.all(life.period == 0)
    _assert_same(_as_dict(life), _reference(user_ids, item_ids, ts, assignment, "life"))
    window = whole_life_boi(user_ids, item_ids, ts, assignment, D, start_ts=_utc(2000, 1, 1), end_ts=_utc(2001, 1, 1))
    _assert_same(_as_dict(window), _reference(user_ids, item_ids, ts, assignment, "life", _utc(2000, 1, 1),
                                              _utc(2001, 1, 1)))


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_streamed_equals_one_shot_exactly(soft):
    user_ids, item_ids, ts = _random_log(seed=5, n=6000)
    assignment = _soft_assignment(seed=6) if soft else np.random.default_rng(6).integers(0, D, 50)
    one_shot = build_boi(user_ids, item_ids, ts, assignment, D, chunk_users=10**9)
    for chunk_users in (1, 13):
        chunked = build_boi(user_ids, item_ids, ts, assignment, D, chunk_users=chunk_users)
        for granularity in ("month", "year"):
            a, b = one_shot[granularity], chunked[granularity]
            assert (a.matrix != b.matrix).nnz == 0
            np.testing.assert_array_equal(a.matrix.indptr, b.matrix.indptr)
            np.testing.assert_array_equal(a.user_ids, b.user_ids)
            np.testing.assert_array_equal(a.user_ptr, b.user_ptr)
            np.testing.assert_array_equal(a.period, b.period)
    # An iterator of chunks split on arbitrary user boundaries gives the same result.
    cuts = np.flatnonzero(np.r_[True, user_ids[1:] != user_ids[:-1]])[[5, 20, 21]]
    chunks = zip(np.split(user_ids, cuts), np.split(item_ids, cuts), np.split(ts, cuts))
    streamed = build_boi_streaming(chunks, assignment, D, granularities=("month",))
    assert (streamed["month"].matrix != one_shot["month"].matrix).nnz == 0


def test_rows_contiguous_per_user_and_periods_ascending():
    user_ids, item_ids, ts = _random_log(seed=7)
    seqs = build_boi(user_ids, item_ids, ts, np.zeros(50, dtype=np.int64), D, granularities=("month",))["month"]
    assert np.all(np.diff(seqs.user_ids) > 0)
    assert seqs.user_ptr[0] == 0 and seqs.user_ptr[-1] == seqs.matrix.shape[0] == len(seqs.period)
    for k in range(seqs.n_users):
        periods = seqs.period[seqs.user_ptr[k] : seqs.user_ptr[k + 1]]
        assert len(periods) >= 1 and np.all(np.diff(periods) > 0)
    # Every behaviour counted once: sum over rows of (exp(b_t) - 1) = n behaviours (one interest).
    assert np.expm1(seqs.matrix.toarray().astype(np.float64)).sum() == pytest.approx(len(user_ids))


def test_window_bounds_are_start_inclusive_end_exclusive():
    start, end = _utc(2018, 1, 1), _utc(2018, 3, 1)
    user_ids = np.array([1, 1, 1, 1, 2])
    ts = np.array([start - 1, start, end - 1, end, end + 100])
    boi = build_boi(user_ids, np.zeros(5, np.int32), ts, np.zeros(1, np.int64), D, start_ts=start, end_ts=end)
    month = boi["month"]
    np.testing.assert_array_equal(month.user_ids, [1])  # user 2 has nothing in the window
    np.testing.assert_array_equal(month.period, [(2018 - 1970) * 12, (2018 - 1970) * 12 + 1])
    np.testing.assert_allclose(month.matrix.toarray()[:, 0], [math.log(2), math.log(2)])
    np.testing.assert_allclose(boi["year"].matrix.toarray()[:, 0], [math.log(3)])


def test_calendar_boundaries_for_hand_picked_timestamps():
    ts = np.array([_utc(2017, 12, 31, 23, 59, 59), _utc(2018, 1, 1), _utc(1970, 1, 1), _utc(1969, 12, 31, 23, 59, 59),
                   _utc(2016, 2, 29, 12), _utc(2016, 3, 1), _utc(2100, 12, 31, 23, 59, 59)])
    np.testing.assert_array_equal(period_index(ts, "month"), [575, 576, 0, -1, 553, 554, 1571])
    np.testing.assert_array_equal(period_index(ts, "year"), [47, 48, 0, -1, 46, 46, 130])
    np.testing.assert_array_equal(period_index(ts, "7d"), np.floor(ts / (7 * 86400)).astype(np.int64))
    # Two behaviours one second apart across New Year fall in two rows of both scales.
    boi = build_boi(np.array([1, 1]), np.array([0, 0]), ts[:2], np.array([3]), D)
    np.testing.assert_array_equal(boi["month"].period, [575, 576])
    np.testing.assert_array_equal(boi["year"].period, [47, 48])


def test_unsorted_input_and_bad_granularity_are_rejected():
    with pytest.raises(ValueError, match="sorted"):
        build_boi(np.array([1, 1]), np.array([0, 0]), np.array([_utc(2018, 2, 1), _utc(2018, 1, 1)]),
                  np.zeros(1, np.int64), D)
    with pytest.raises(ValueError, match="sorted"):
        build_boi(np.array([2, 1]), np.array([0, 0]), np.array([0, 0]), np.zeros(1, np.int64), D, chunk_users=1)
    with pytest.raises(ValueError, match="granularity"):
        build_boi(np.array([1]), np.array([0]), np.array([0]), np.zeros(1, np.int64), D, granularities=("week",))


def test_save_load_round_trip(tmp_path):
    user_ids, item_ids, ts = _random_log(seed=8, n=500)
    seqs = build_boi(user_ids, item_ids, ts, np.arange(50) % D, D, granularities=("month",))["month"]
    loaded = load_boi(save_boi(tmp_path / "boi_month.npz", seqs))
    assert (loaded.matrix != seqs.matrix).nnz == 0 and loaded.granularity == "month"
    np.testing.assert_array_equal(loaded.user_ptr, seqs.user_ptr)


def test_soft_items_without_weight_leave_an_empty_row():
    soft = sp.csr_matrix(np.array([[0.0] * D, [0.5, 0.5] + [0.0] * (D - 2)]))
    boi = build_boi(np.array([1, 2, 2]), np.array([0, 0, 1]), np.zeros(3, np.int64), soft, D, granularities=("year",))
    np.testing.assert_allclose(boi["year"].matrix.toarray()[:, :2], [[0, 0], [math.log(1.5), math.log(1.5)]])
    only_weightless = build_boi(np.array([1]), np.array([0]), np.zeros(1, np.int64), soft, D, granularities=("year",))
    assert only_weightless["year"].matrix.shape == (1, D) and only_weightless["year"].matrix.nnz == 0


def test_growing_array_spans_segments_and_empty_window_gives_empty_boi():
    from lurm_lite.boi import _GrowingArray

    grown = _GrowingArray(np.int64, segment_bytes=8 * 5)  # 5 elements per segment
    for values in (np.arange(3), np.arange(3, 11), np.arange(0), np.arange(11, 12)):
        grown.append(values)
    np.testing.assert_array_equal(grown.take(np.int32), np.arange(12))
    empty = build_boi(np.array([1]), np.array([0]), np.array([0]), np.zeros(1, np.int64), D, start_ts=10)["month"]
    assert empty.matrix.shape == (0, D) and empty.n_users == 0 and empty.user_ptr.tolist() == [0]


def test_uint64_keys_when_row_times_d_overflows_uint32():
    """With D = 2^31, row * D + c_j no longer fits a uint32 key: the same counts come from uint64 keys."""
    user_ids, item_ids, ts = _random_log(seed=12, n=400, n_users=8)
    assignment = np.random.default_rng(13).choice([0, 5, 2**31 - 1], 50)
    boi = build_boi(user_ids, item_ids, ts, assignment, 2**31)
    for granularity in ("month", "year"):
        _assert_same(_as_dict(boi[granularity]), _reference(user_ids, item_ids, ts, assignment, granularity))
