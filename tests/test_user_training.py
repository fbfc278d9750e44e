"""SMEN training and user encoding (§2.2.4): pair sampling, loss, exact resume, encoding
order, windows and the empty / one-period / years-apart users."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from lurm_lite.boi import BoISequences, build_boi
from lurm_lite.config import SMENConfig, UserTrainingConfig, for_scale
from lurm_lite.runs import MissingPrerequisite
from lurm_lite.smen import collate_rows
from lurm_lite.user_training import (PairSampler, Timeline, anchor_outputs, encode_stages, encode_users,
                                     load_user_reps, save_user_reps, train_smen, user_reps_of)

SMEN_TINY = SMENConfig(hidden=8, anchors=3)
TRAIN_TINY = UserTrainingConfig(batch_size=32, epochs=2, min_subseq_periods=4, max_periods=24)


def ts(date: str) -> int:
    return int(np.datetime64(date, "s").astype(np.int64))


def boi_from_events(user, interest, t, D) -> dict[str, BoISequences]:
    """Month and year BoI (eq. 4: log(1 + count)) of sorted events, the straightforward way."""
    boi = {}
    for g, unit in (("month", "M"), ("year", "Y")):
        period = np.asarray(t).astype("datetime64[s]").astype(f"datetime64[{unit}]").astype(np.int64)
        keys, row = np.unique(np.stack([user, period]), axis=1, return_inverse=True)  # (2, n_rows)
        counts = sp.csr_matrix((np.ones(len(user), np.float32), (row.ravel(), interest)), shape=(keys.shape[1], D))
        counts.sum_duplicates()
        counts.data = np.log1p(counts.data)
        user_ids, per_user = np.unique(keys[0], return_counts=True)
        boi[g] = BoISequences(counts, user_ids.astype(np.int64), np.concatenate([[0], np.cumsum(per_user)]),
                              keys[1].astype(np.int64), g)
    return boi


@pytest.fixture(scope="module")
def events():
    """120 users with 3 favourite interests among D = 40 over 2010-2016, plus special users:
    7001 one behaviour, 7002 two periods five years apart, 7003 a life of three months."""
    rng = np.random.default_rng(0)
    n = 12_000
    user = rng.integers(0, 120, n)
    favourite = rng.integers(0, 40, (120, 3))
    interest = np.where(rng.random(n) < 0.8, favourite[user, rng.integers(0, 3, n)], rng.integers(0, 40, n))
    t = rng.integers(ts("2010-01-01"), ts("2016-12-31"), n)
    special = pd.DataFrame({
        "user": [7001, 7002, 7002, 7003, 7003, 7003],
        "interest": [1, 2, 3, 4, 5, 6],
        "t": [ts("2012-05-03"), ts("2010-03-10"), ts("2015-07-01"), ts("2014-01-02"), ts("2014-02-02"), ts("2014-03-30")],
    })
    df = pd.concat([pd.DataFrame({"user": user, "interest": interest, "t": t}), special]).sort_values(["user", "t"])
    return df.reset_index(drop=True)


@pytest.fixture(scope="module")
def boi(events):
    return boi_from_events(events.user.to_numpy(), events.interest.to_numpy(), events.t.to_numpy(), 40)


@pytest.fixture(scope="module")
def trained(boi):
    model, history = train_smen(boi, SMEN_TINY, TRAIN_TINY, "cpu", seed=0, progress=False)
    return model, history


def _rows_of(timeline: Timeline, k: int, A: int, B: int, inside: bool = False) -> int:
    """Number of periods of user k overlapping (or inside) [A, B), counted one by one."""
    rows = range(timeline.seqs.user_ptr[k], timeline.seqs.user_ptr[k + 1])
    if inside:
        return sum(A <= timeline.start_ts[r] and timeline.end_ts[r] <= B for r in rows)
    return sum(timeline.start_ts[r] < B and timeline.end_ts[r] > A for r in rows)


def dense_views(x, D: int) -> list[np.ndarray]:
    """The timelines of a ScaleBatch as dense (N, D) arrays, one per view (empty periods 0)."""
    b = np.zeros((x.n_rows, D), dtype=np.float32)
    b[x.nz_row.numpy(), x.interests.numpy()[x.nz_col.numpy()]] = x.nz_value.numpy()
    views = [np.zeros((int(n), D), dtype=np.float32) for n in x.lengths]
    for row, (user, step) in enumerate(zip(x.row_user.tolist(), x.row_step.tolist())):
        views[user][step] = b[row]
    return views


def expected_timeline(events, user: int, A: int, B: int, unit: str) -> np.ndarray:
    """Eq. (4) per period of the events of ``user`` in [A, B), on a fixed-interval timeline
    from the first non-empty period to the period of B - 1 (the straightforward way)."""
    e = events[(events.user == user) & (events.t >= A) & (events.t < B)]
    if e.empty:
        return np.zeros((0, 40), dtype=np.float32)
    period = e.t.to_numpy().astype("datetime64[s]").astype(f"datetime64[{unit}]").astype(np.int64)
    last = np.int64(B - 1).astype("datetime64[s]").astype(f"datetime64[{unit}]").astype(np.int64)
    out = np.zeros((last - period.min() + 1, 40), dtype=np.float32)
    np.add.at(out, (period - period.min(), e.interest.to_numpy()), 1.0)
    return np.log1p(out)


def test_every_scale_of_a_view_counts_only_behaviours_inside_its_span(events, boi):
    """§2.2.4: a view's month and year rows come from its own span only (no year row counted
    from behaviours outside it), on fixed-interval timelines that run to the span's end."""
    config = dataclasses.replace(TRAIN_TINY, period_dropout=0.0)
    sampler = PairSampler(boi, ("month", "year"), config)
    k = sampler.users[:40]
    both = np.concatenate([k, k])
    A, B = sampler.spans(k, np.random.default_rng(1))  # (2n,) x views, then y views
    batch = sampler.sample(k, np.random.default_rng(1))  # draws the same spans first
    assert ((B - A) / (30.44 * 86_400) <= config.max_periods + 0.5).all()
    users = boi["month"].user_ids[both]
    for scale, unit in (("month", "M"), ("year", "Y")):
        views = dense_views(batch[scale], 40)
        for v in range(len(both)):
            np.testing.assert_allclose(views[v], expected_timeline(events, users[v], A[v], B[v], unit),
                                       rtol=1e-5, atol=1e-6, err_msg=f"{scale} view {v}")
    assert (batch["month"].lengths >= 1).all()  # a view is never empty
    # two views of one user share no year row built from the same out-of-span behaviours:
    # a year row equals the whole-year row only when the span covers all that year's months
    assert any(not np.allclose(dense_views(batch["year"], 40)[v][-1], 0) for v in range(len(both)))


def test_two_views_of_a_user_are_disjoint_each_holds_a_behaviour_and_lengths_reach_the_cap(boi):
    """§2.2.4 views, our rule: a cut between two consecutive behaviour months, x ends just
    after a behaviour, y starts at the next one; no month is in both views."""
    config = dataclasses.replace(TRAIN_TINY, period_dropout=0.0)
    sampler = PairSampler(boi, ("month", "year"), config)
    k = np.tile(sampler.users[:100], 20)
    A, B = sampler.spans(k, np.random.default_rng(3))
    n = len(k)
    month = lambda t: np.asarray(t).astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)  # noqa: E731
    seqs = boi["month"]
    for v in range(0, n, 7):
        periods = seqs.period[seqs.user_ptr[k[v]]:seqs.user_ptr[k[v] + 1]]
        x_months = np.arange(month(A[v]), month(B[v]))
        y_months = np.arange(month(A[n + v]), month(B[n + v]))
        if len(periods) > 1:
            assert not set(x_months) & set(y_months), f"view pair {v} overlaps"
            assert B[v] <= A[n + v]
            assert x_months[-1] in periods and y_months[0] in periods  # x ends on, y starts at, a behaviour
            after = periods[periods > x_months[-1]]
            assert y_months[0] == after[0]  # y starts at the next behaviour after x
    lengths = np.round((B - A) / (30.44 * 86_400))
    assert lengths.min() >= 1 and lengths.max() == config.max_periods  # clipped by the room, up to the cap
    batch = sampler.sample(sampler.users[:100], np.random.default_rng(3))
    assert (batch["month"].lengths >= 1).all()


def test_a_single_behaviour_user_gets_views_from_it_into_the_quiet_tail(boi):
    sampler = PairSampler(boi, ("month", "year"), dataclasses.replace(TRAIN_TINY, period_dropout=0.0))
    k = sampler.base.user_index(np.array([7001, 7003]))
    A, B = sampler.spans(np.tile(k, 50), np.random.default_rng(0))
    x_a, y_a = A[:100], A[100:]
    # 7001 has one behaviour (2012-05): both views start at that month and last 4..24 months,
    # past the behaviour into the quiet months that follow, as the whole-life encoding does
    assert set(x_a[::2].tolist()) == set(y_a[::2].tolist()) == {ts("2012-05-01")}
    months = np.round((B - A) / (30.44 * 86_400))
    assert months[::2].min() >= 4 and months[::2].max() <= 24 and len(set(months[::2].tolist())) > 5
    # 7003 (2014-01..03): x ends in January or February, y starts in February or March
    assert set(B[:100][1::2].tolist()) <= {ts("2014-02-01"), ts("2014-03-01")}
    assert set(y_a[1::2].tolist()) <= {ts("2014-02-01"), ts("2014-03-01")}
    batch = PairSampler(boi, ("month", "year"), dataclasses.replace(TRAIN_TINY, period_dropout=0.9)).sample(
        k, np.random.default_rng(0))
    assert (batch["month"].n_rows >= 4)  # one period of each view always kept


def test_loss_falls_and_history_has_steps_and_epoch_means(boi, trained):
    _, history = trained
    steps_per_epoch = len(history["step"]) // 2
    assert len(history["epoch"]) == 2 and steps_per_epoch >= 3
    assert history["epoch"][1] < history["epoch"][0]
    assert history["epoch"][0] == pytest.approx(np.mean(history["step"][:steps_per_epoch]))


def test_loss_falls_on_synthetic_tiny(tiny_dataset):
    """Month + year BoI of the synthetic tiny history, interests = the ground-truth topics."""
    from data_prep.schema import load_dataset

    history = load_dataset(tiny_dataset).history()
    topic = np.load(tiny_dataset / "ground_truth" / "item_topic.npy")
    boi = build_boi(history.user_id.to_numpy(), history.item_id.to_numpy(), history.ts.to_numpy(), topic,
                    int(topic.max()) + 1)
    config = for_scale("tiny")
    train_config = dataclasses.replace(config.user_training, epochs=12)
    _, history = train_smen(boi, config.smen, train_config, "cpu", seed=0, progress=False)
    # disjoint views share no behaviour: the loss starts at chance, log(2B - 1) for 2B views,
    # and falls as the encoder learns what stays true of a user (measured: 4.88 -> 4.50)
    chance = np.log(2 * train_config.batch_size - 1)
    assert history["epoch"][0] == pytest.approx(chance, rel=0.03)
    assert history["epoch"][-1] < 0.95 * history["epoch"][0]
    assert history["epoch"][-1] < 0.95 * chance


def test_training_runs_inside_deterministic_kernels(boi, deterministic_entries):
    train_smen(boi, SMEN_TINY, dataclasses.replace(TRAIN_TINY, epochs=1), "cpu", seed=0, progress=False)
    assert deterministic_entries == [torch.device("cpu")]


def test_resume_after_a_kill_equals_the_uninterrupted_run(boi, trained, tmp_path):
    ckpt = tmp_path / "smen_ckpt.pt"
    one_epoch = dataclasses.replace(TRAIN_TINY, epochs=1)
    train_smen(boi, SMEN_TINY, one_epoch, "cpu", seed=0, checkpoint_path=ckpt, progress=False)  # then "killed"
    resumed, history = train_smen(boi, SMEN_TINY, TRAIN_TINY, "cpu", seed=0, checkpoint_path=ckpt, progress=False)
    straight, straight_history = trained
    assert history == straight_history
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2


def test_encoding_is_deterministic_follows_user_ids_and_zero_for_absent_users(boi, trained):
    model, _ = trained
    ids = np.array([7002, 5, 999_999, 7001, 17, 3])
    reps = encode_users(model, boi, ids, "cpu", batch_size=4)
    assert reps.dtype == np.float32 and reps.shape == (6, 3 * 8)
    np.testing.assert_array_equal(reps, encode_users(model, boi, ids, "cpu", batch_size=4))
    shuffled = encode_users(model, boi, ids[::-1], "cpu", batch_size=512)
    np.testing.assert_allclose(shuffled[::-1], reps, rtol=1e-5, atol=1e-6)
    assert not reps[2].any() and reps[[0, 1, 3, 4, 5]].any(axis=1).all()
    assert model.training is False


def test_last_months_window_equals_encoding_the_cut_history(events, boi, trained):
    """Fig. 3 / LURM(2M): a window's every scale comes from the window's behaviours alone."""
    model, _ = trained
    end, months = ts("2014-03-15"), 5  # window [2013-11-01, 2014-03-15)
    ids = np.array([3, 7003, 7001, 50])  # 7001: no behaviour in the window
    cut = events[(events.t >= ts("2013-11-01")) & (events.t < end)]
    cut_boi = boi_from_events(cut.user.to_numpy(), cut.interest.to_numpy(), cut.t.to_numpy(), 40)
    reps = encode_users(model, boi, ids, "cpu", last_months=months, history_end_ts=end)
    np.testing.assert_allclose(reps, encode_users(model, cut_boi, ids, "cpu", history_end_ts=end),
                               rtol=1e-5, atol=1e-6)
    assert not reps[2].any()
    # the precomputed year rows are never read: only the finest scale feeds every scale
    month_only = {"month": boi["month"]}
    np.testing.assert_allclose(encode_users(model, month_only, ids, "cpu"), encode_users(model, boi, ids, "cpu"),
                               rtol=1e-5, atol=1e-6)


def test_the_representation_knows_how_long_ago_the_behaviours_were(events, trained):
    """§2.2: fixed-interval timelines. The same behaviours further back before the history end
    give another R^; moving the behaviours and the end together gives the same R^."""
    model, _ = trained
    user = events[events.user == 3]
    four_years = 1461 * 86_400  # between 1901 and 2099, +1461 days keeps every calendar date

    def encode(shift: int, end: str) -> np.ndarray:
        b = boi_from_events(user.user.to_numpy(), user.interest.to_numpy(), user.t.to_numpy() + shift, 40)
        return encode_users(model, b, np.array([3]), "cpu", history_end_ts=ts(end))

    now = encode(0, "2017-01-01")
    assert not np.allclose(now, encode(0, "2021-01-01"), atol=1e-4)  # four more quiet years
    np.testing.assert_allclose(now, encode(four_years, "2021-01-01"), rtol=1e-5, atol=1e-6)  # all moved


def test_anchor_outputs_average_the_multi_anchor_outputs_over_periods(boi, trained):
    model, _ = trained
    ids = np.array([7002, 999_999])
    out = anchor_outputs(model, boi, ids, "cpu")
    assert out.shape == (2, 3, 8) and not out[1].any()
    month = boi["month"]
    k = int(np.searchsorted(month.user_ids, 7002))
    x = collate_rows(month, np.arange(month.user_ptr[k], month.user_ptr[k + 1]), np.array([2]))
    with torch.no_grad():
        np.testing.assert_allclose(out[0], model.multi_anchor(x).mean(0).numpy(), rtol=1e-5, atol=1e-6)


def test_encode_stages_agree_with_encode_users_and_the_whole_life_anchor_outputs(boi, trained):
    """Each stage of encode_stages, checked against an independent path to the same numbers."""
    model, _ = trained
    ids = np.array([7002, 3, 999_999, 7003, 41])
    stages = encode_stages(model, boi, ids, "cpu", batch_size=2)
    assert list(stages) == ["r month", "r~ month", "r year", "r~ year", "R^"]
    assert all(X.shape == (5, 3 * 8) and X.dtype == np.float32 for X in stages.values())
    np.testing.assert_allclose(stages["R^"], encode_users(model, boi, ids, "cpu"), rtol=1e-5, atol=1e-6)
    # r averaged over the whole history = anchor_outputs over the precomputed rows of each scale
    for scale in ("month", "year"):
        expected = anchor_outputs(model, boi, ids, "cpu", scale=scale).reshape(5, -1)
        np.testing.assert_allclose(stages[f"r {scale}"], expected, rtol=1e-5, atol=1e-5)
    assert not any(X[2].any() for X in stages.values())  # an absent user: every stage empty


def test_user_reps_round_trip(tmp_path):
    ids, reps = np.array([4, 2, 9]), np.random.default_rng(0).random((3, 6)).astype(np.float32)
    loaded_ids, loaded = load_user_reps(save_user_reps(tmp_path / "user_reps.npz", ids, reps))
    assert loaded_ids.tolist() == [4, 2, 9]
    np.testing.assert_array_equal(loaded, reps)
    np.testing.assert_array_equal(user_reps_of(tmp_path / "user_reps.npz", [9, 4]), reps[[2, 0]])
    with pytest.raises(MissingPrerequisite, match=r"user_reps.npz lacks 1 users with history, e.g. user 7; rerun"):
        user_reps_of(tmp_path / "user_reps.npz", [9, 7, 4])
