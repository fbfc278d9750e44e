"""Monthly incremental update (lurm_lite.serving): equal to a whole-life re-encode, across a
year boundary, for quiet users and users new in the month; refusals; atomic saves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lurm_lite import io, serving
from lurm_lite.boi import build_boi
from lurm_lite.config import SMENConfig, UserTrainingConfig
from lurm_lite.smen import SMEN
from lurm_lite.user_training import encode_users, train_smen

D = 40
ABSENT = 9999  # asked for, never any behaviour


def ts(date: str) -> int:
    return int(np.datetime64(date, "s").astype(np.int64))


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    """120 users over 2010-2016 (D = 40, 3 favourite interests each), plus 8001 whose first
    behaviour is in 2016-06, 8002 whose first is in 2015-12 (then 2016-01), 8003 quiet
    since 2013."""
    rng = np.random.default_rng(0)
    n = 12_000
    user = rng.integers(0, 120, n)
    favourite = rng.integers(0, D, (120, 3))
    interest = np.where(rng.random(n) < 0.8, favourite[user, rng.integers(0, 3, n)], rng.integers(0, D, n))
    t = rng.integers(ts("2010-01-01"), ts("2016-12-31"), n)
    special = pd.DataFrame({
        "user": [8001, 8001, 8002, 8002, 8003],
        "interest": [1, 2, 3, 4, 5],
        "t": [ts("2016-06-03"), ts("2016-06-20"), ts("2015-12-10"), ts("2016-01-05"), ts("2013-04-01")],
    })
    df = pd.concat([pd.DataFrame({"user": user, "interest": interest, "t": t}), special]).sort_values(["user", "t"])
    return df.reset_index(drop=True)


def boi_of(events: pd.DataFrame, granularities=("month", "year"), start: int | None = None,
           end: int | None = None) -> dict:
    """BoI of eq. (4) by the kit's builder, items being interests (assignment = identity)."""
    return build_boi(events.user.to_numpy(), events.interest.to_numpy(), events.t.to_numpy(), np.arange(D), D,
                     granularities, start_ts=start, end_ts=end)


def month_boi(events: pd.DataFrame, month: str):
    """The BoI of one calendar month, as an update takes it."""
    start, end = (np.datetime64(month, "M") + np.arange(2)).astype("datetime64[s]").astype(np.int64)
    return boi_of(events, ("month",), int(start), int(end))["month"]


def reencode(model, events: pd.DataFrame, user_ids: np.ndarray, end: str) -> np.ndarray:
    """The whole-life encoding of the users with the BoI rebuilt up to ``end`` (exclusive)."""
    return encode_users(model, boi_of(events, ("month",), end=ts(end)), user_ids, "cpu", history_end_ts=ts(end))


@pytest.fixture(scope="module")
def model(events):
    config = UserTrainingConfig(batch_size=32, epochs=1, min_subseq_periods=4, max_periods=24)
    trained, _ = train_smen(boi_of(events), SMENConfig(hidden=8, anchors=3), config, "cpu", seed=0, progress=False)
    return trained


def history_users(events: pd.DataFrame, end: str) -> np.ndarray:
    return np.r_[np.unique(events.user[events.t < ts(end)]), ABSENT]


def test_init_state_equals_the_whole_life_encoding(events, model):
    for end in ("2016-06-01", "2016-01-01"):  # an open year of 5 months, and none (a year just closed)
        ids = history_users(events, end)
        state = serving.init_state(model, boi_of(events), ids, "cpu", history_end_ts=ts(end))
        assert state.history_end_ts == ts(end) and state.user_ids.tolist() == sorted(ids)
        np.testing.assert_allclose(serving.representations(model, state, "cpu"),
                                   reencode(model, events, state.user_ids, end), atol=1e-5)
    assert state.open_months == 0 and state.open_counts.nnz == 0


def test_a_month_update_equals_the_re_encode_for_quiet_and_new_users(events, model):
    state = serving.init_state(model, boi_of(events), history_users(events, "2016-06-01"), "cpu",
                               history_end_ts=ts("2016-06-01"))
    new = month_boi(events, "2016-06")
    after, reps = serving.update(model, state, new, "2016-06", "cpu")
    assert 8001 in after.user_ids and 8001 not in state.user_ids  # first behaviour this month: added
    expected = reencode(model, events, after.user_ids, "2016-07-01")
    np.testing.assert_allclose(reps, expected, atol=1e-5)

    quiet = ~np.isin(after.user_ids, new.user_ids) & (after.first_month != serving.NOT_STARTED)
    assert quiet.sum() >= 20 and 8003 in after.user_ids[quiet]  # users without behaviour in June stepped r = 0
    assert not np.allclose(reps[quiet], serving.representations(model, state, "cpu")[np.isin(state.user_ids,
                                                                                             after.user_ids[quiet])])
    row = np.searchsorted(after.user_ids, [8001, ABSENT])
    assert after.first_month[row[0]] == np.datetime64("2016-06", "M").astype(np.int64)
    assert np.abs(reps[row[0]]).max() > 0 and np.abs(reps[row[1]]).max() == 0  # never active: R^ = 0
    assert state.month == after.month - 1 and 8001 not in state.user_ids  # the input state is unchanged


def test_december_closes_the_year_and_january_opens_the_next(events, model):
    """Two consecutive updates across the year boundary, with 8002 asked for before its first behaviour."""
    state = serving.init_state(model, boi_of(events), np.r_[history_users(events, "2015-12-01"), 8002], "cpu",
                               history_end_ts=ts("2015-12-01"))
    assert state.open_months == 11 and state.first_month[state.user_ids == 8002] == serving.NOT_STARTED
    december, reps = serving.update(model, state, month_boi(events, "2015-12"), "2015-12", "cpu")
    assert december.open_months == 0 and december.open_counts.nnz == 0  # the year is folded into h_year
    np.testing.assert_allclose(reps, reencode(model, events, december.user_ids, "2016-01-01"), atol=1e-5)
    january, reps = serving.update(model, december, month_boi(events, "2016-01"), "2016-01", "cpu")
    assert january.open_months == 1
    np.testing.assert_allclose(reps, reencode(model, events, january.user_ids, "2016-02-01"), atol=1e-5)


def test_a_month_only_smen_updates_too(events):
    month_only = SMEN(D, hidden=8, anchors=3, scales=("month",))
    state = serving.init_state(month_only, boi_of(events), history_users(events, "2016-06-01"), "cpu",
                               history_end_ts=ts("2016-06-01"))
    assert state.h_year is None and state.open_counts is None
    after, reps = serving.update(month_only, state, month_boi(events, "2016-06"), "2016-06", "cpu")
    np.testing.assert_allclose(reps, reencode(month_only, events, after.user_ids, "2016-07-01"), atol=1e-5)


def test_wrong_month_other_model_or_mid_month_end_are_refused(events, model):
    state = serving.init_state(model, boi_of(events), [0, 1], "cpu", history_end_ts=ts("2016-06-01"))
    with pytest.raises(ValueError, match="next update is for 2016-06, not 2016-08"):
        serving.update(model, state, month_boi(events, "2016-08"), "2016-08", "cpu")
    with pytest.raises(ValueError, match=r"must hold 2016-06 only, but has rows of \['2016-07'\]"):
        serving.update(model, state, boi_of(events, ("month",), ts("2016-06-01"), ts("2016-08-01"))["month"],
                       "2016-06", "cpu")
    with pytest.raises(ValueError, match="written by another SMEN"):
        serving.update(SMEN(D, hidden=8, anchors=3), state, month_boi(events, "2016-06"), "2016-06", "cpu")
    with pytest.raises(ValueError, match=r"not the start of a month.*2016-07-01T00:00:00"):
        serving.init_state(model, boi_of(events), [0], "cpu", history_end_ts=ts("2016-06-15"))
    with pytest.raises(ValueError, match="scales must be"):
        serving.init_state(SMEN(D, hidden=8, anchors=3, scales=("7d", "28d")), boi_of(events), [0], "cpu")


def test_state_round_trips_and_a_failed_save_leaves_the_old_file(events, model, tmp_path, monkeypatch):
    state = serving.init_state(model, boi_of(events), history_users(events, "2016-06-01"), "cpu",
                               history_end_ts=ts("2016-06-01"))
    path = serving.save_state(tmp_path / "state.npz", state)
    loaded = serving.load_state(path)
    np.testing.assert_array_equal(serving.representations(model, loaded, "cpu"),
                                  serving.representations(model, state, "cpu"))
    assert loaded.month == state.month and loaded.scales == state.scales
    before = path.read_bytes()

    after, _ = serving.update(model, state, month_boi(events, "2016-06"), "2016-06", "cpu")

    def killed_mid_write(fh, **arrays):
        fh.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(io.np, "savez", killed_mid_write)
    with pytest.raises(OSError, match="simulated"):
        serving.save_state(path, after)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["state.npz"]
    assert serving.load_state(path).month == state.month
