"""LURM keeps a planted profile signal (issue: "LURM that keeps what BoI holds").

A small log with a known profile: each user has a binary label y that tilts which half of
the D interests their behaviours come from, on top of personal favourite interests (the
identity the contrastive loss of §2.2.4 can latch on to). SMEN trained on it, frozen, and
read by the downstream probe of §3.4 must recover y well above chance and close to the raw
whole-life BoI it compresses (paper Table 5: within about one AUC point at full scale;
the margins here are for a model trained for seconds).
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from lurm_lite import baselines, downstream
from lurm_lite.boi import build_boi
from lurm_lite.config import DownstreamConfig, SMENConfig, UserTrainingConfig
from lurm_lite.user_training import encode_users, train_smen

D = 24
N_USERS = 480


def planted_log(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Behaviours (user_id, item_id = interest, ts) sorted by (user, ts), and the label y."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, N_USERS)  # (n_users,)
    favourites = rng.integers(0, D, (N_USERS, 2))  # personal, label-free
    n = rng.integers(30, 120, N_USERS)  # behaviours per user
    user = np.repeat(np.arange(N_USERS), n)  # (n_behaviours,)
    kind = rng.random(len(user))
    tilted = np.where(rng.random(len(user)) < 0.7, y[user], 1 - y[user]) * (D // 2) + rng.integers(0, D // 2, len(user))
    interest = np.where(kind < 0.5, favourites[user, rng.integers(0, 2, len(user))], tilted)
    start = np.datetime64("2012-01-01", "s").astype(np.int64)
    ts = start + rng.integers(0, 6 * 365 * 86_400, len(user))
    log = pd.DataFrame({"user_id": user, "item_id": interest, "ts": ts}).sort_values(["user_id", "ts"])
    return log.reset_index(drop=True), y


def probe_auc(X, y: np.ndarray) -> float:
    config = DownstreamConfig(max_epochs=60, patience=8, bootstrap=10)
    return downstream.evaluate_task(X, y, config, seed=0, device="cpu")["auc"]


@pytest.fixture(scope="module")
def planted():
    log, y = planted_log()
    boi = build_boi(log.user_id.to_numpy(), log.item_id.to_numpy(), log.ts.to_numpy(), np.arange(D), D)
    model, history = train_smen(boi, SMENConfig(hidden=32, anchors=4),
                                UserTrainingConfig(batch_size=64, epochs=6, min_subseq_periods=6), "cpu", seed=0,
                                progress=False)
    users = np.arange(N_USERS)
    lurm = encode_users(model, boi, users, "cpu", history_end_ts=np.datetime64("2018-01-01", "s").astype(np.int64))
    raw = baselines.boi_features(log, np.arange(D), D, users)
    return {"lurm": probe_auc(lurm, y), "boi": probe_auc(raw, y), "history": history}


def test_lurm_recovers_a_planted_profile_close_to_raw_boi(planted):
    assert planted["boi"] > 0.85  # the signal is there to be kept
    assert planted["lurm"] > 0.75  # far above chance (0.5)
    assert planted["lurm"] > planted["boi"] - 0.08  # and close to the input SMEN compresses


def test_training_is_what_gets_there(planted):
    log, y = planted_log()
    boi = build_boi(log.user_id.to_numpy(), log.item_id.to_numpy(), log.ts.to_numpy(), np.arange(D), D)
    untrained, _ = train_smen(boi, SMENConfig(hidden=32, anchors=4),
                              UserTrainingConfig(batch_size=64, epochs=0), "cpu", seed=0, progress=False)
    X = encode_users(untrained, boi, np.arange(N_USERS), "cpu",
                     history_end_ts=np.datetime64("2018-01-01", "s").astype(np.int64))
    assert planted["history"]["epoch"][-1] < planted["history"]["epoch"][0]
    assert planted["lurm"] >= probe_auc(X, y) - 0.02  # training does not lose what random weights keep
