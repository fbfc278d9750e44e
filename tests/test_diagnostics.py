"""lurm_lite.diagnostics: BoI survival R^2, the random-projection encoder, same-user view
retrieval, the per-epoch probe of train_smen, and benchmarks/quality.py's aggregation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.decomposition import TruncatedSVD

from lurm_lite import diagnostics
from lurm_lite.boi import build_boi
from lurm_lite.config import DownstreamConfig, SMENConfig, UserTrainingConfig
from lurm_lite.smen import SMEN, load_smen
from lurm_lite.user_training import encode_stages, kept_model_encoding

ROOT = Path(__file__).resolve().parents[1]
N_SHARED = 12  # interests 0..11 are shared; interest N_SHARED + u is user u's own


def ts(date: str) -> int:
    return int(np.datetime64(date, "s").astype(np.int64))


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def low_rank_boi() -> sp.csr_matrix:
    """b_T = log(1 + counts) of 600 users over D = 60 interests, counts from 5 latent topics."""
    rng = np.random.default_rng(0)
    topics = rng.dirichlet(np.full(60, 0.2), size=5)  # (5, D)
    mix = rng.dirichlet(np.full(5, 0.5), size=600)  # (n, 5)
    counts = rng.poisson(40 * mix @ topics)  # (n, D)
    return sp.csr_matrix(np.log1p(counts).astype(np.float32))


@pytest.fixture(scope="module")
def identity_boi():
    """Month and year BoI of 150 users (ids 1000 + u) over 2012-2017; every month row of user u
    holds their own interest N_SHARED + u beside shared ones, so any view identifies the user."""
    rng = np.random.default_rng(1)
    n_users, per_user = 150, 30
    user = np.repeat(np.arange(n_users), per_user)
    t = rng.integers(ts("2012-01-01"), ts("2017-12-31"), len(user))
    own = N_SHARED + user
    shared = rng.integers(0, N_SHARED, len(user))
    users = np.concatenate([user, user]) + 1000
    items = np.concatenate([own, shared])
    times = np.concatenate([t, t])
    order = np.lexsort((times, users))
    D = N_SHARED + n_users
    return build_boi(users[order], items[order], times[order], np.arange(D), D, granularities=("month", "year"))


class IdentityStub(torch.nn.Module):
    """R^ (B, 1, n_users): the one-hot of the user's own interest found in the view."""

    def __init__(self, n_users: int):
        super().__init__()
        self.scales, self.n_users, self.seen = ("month", "year"), n_users, 0

    def forward(self, batch):
        x = batch["month"]
        interest = x.interests[x.nz_col]  # (nnz,)
        view = x.row_user[x.nz_row]  # (nnz,)
        own = interest >= N_SHARED
        out = torch.zeros(x.n_users, 1, self.n_users)
        out[view[own], 0, interest[own] - N_SHARED] = 1.0
        self.seen += x.n_users // 2
        return out


class RandomStub(torch.nn.Module):
    """R^ of random numbers (its own seeded generator): retrieval at chance."""

    def __init__(self):
        super().__init__()
        self.scales, self.generator = ("month", "year"), torch.Generator().manual_seed(0)

    def forward(self, batch):
        return torch.randn(batch["month"].n_users, 2, 8, generator=self.generator)


# ---------------------------------------------------------------------------------------
# boi_survival_r2
# ---------------------------------------------------------------------------------------


def test_r2_is_near_one_when_the_representation_holds_b_T(low_rank_boi):
    assert diagnostics.boi_survival_r2(low_rank_boi.toarray(), low_rank_boi, seed=0) > 0.99
    top = TruncatedSVD(20, random_state=0).fit_transform(low_rank_boi)  # (n, 20) dense top components
    assert diagnostics.boi_survival_r2(top, low_rank_boi, seed=1, n_components=16) > 0.97


def test_r2_is_near_zero_for_noise_and_between_for_a_partial_view(low_rank_boi):
    noise = np.random.default_rng(3).normal(size=(low_rank_boi.shape[0], 32))
    assert abs(diagnostics.boi_survival_r2(noise, low_rank_boi, seed=0)) < 0.05
    half = low_rank_boi[:, :30].toarray()  # half of the interests only
    r2 = diagnostics.boi_survival_r2(half, low_rank_boi, seed=0)
    assert 0.2 < r2 < 0.99


def test_r2_is_seeded_and_checks_its_inputs(low_rank_boi):
    reps = low_rank_boi[:, :10].toarray()
    assert diagnostics.boi_survival_r2(reps, low_rank_boi, 5) == diagnostics.boi_survival_r2(reps, low_rank_boi, 5)
    with pytest.raises(ValueError, match="one row per user"):
        diagnostics.boi_survival_r2(reps[:-1], low_rank_boi, 0)
    train, test = diagnostics.user_split(100, seed=0, test_fraction=0.3)
    assert len(test) == 30 and len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 100


# ---------------------------------------------------------------------------------------
# random_projection_features
# ---------------------------------------------------------------------------------------


def test_random_projection_is_the_summed_rows_times_a_fixed_gaussian_matrix(identity_boi):
    month = identity_boi["month"]
    D, dim, seed = month.n_interests, 24, 7
    P = np.random.default_rng(seed).standard_normal((D, dim)) / np.sqrt(dim)  # (D, dim)
    user_ids = np.array([1003, 999, 1000, 1149, 1003])  # 999 is absent; 1003 twice
    got = diagnostics.random_projection_features(month, user_ids, dim, seed)
    assert got.shape == (5, dim) and got.dtype == np.float32
    for row, uid in enumerate(user_ids):
        k = np.searchsorted(month.user_ids, uid)
        if k < month.n_users and month.user_ids[k] == uid:
            expected = np.asarray(month.user_rows(k).sum(axis=0)).ravel() @ P
        else:
            expected = np.zeros(dim)
        np.testing.assert_allclose(got[row], expected, rtol=1e-5, atol=1e-5)
    relu = diagnostics.random_projection_features(month, user_ids, dim, seed, relu=True)
    np.testing.assert_allclose(relu, np.maximum(got, 0))
    np.testing.assert_array_equal(got, diagnostics.random_projection_features(month, user_ids, dim, seed))
    assert not np.allclose(got[0], diagnostics.random_projection_features(month, user_ids, dim, seed + 1)[0])


def test_summed_boi_sums_or_averages_each_users_rows(identity_boi):
    year = identity_boi["year"]
    user_ids = np.array([1003, 999, 1000, 1003])  # 999 is absent; 1003 twice
    summed = diagnostics.summed_boi(year, user_ids).toarray()
    mean = diagnostics.summed_boi(year, user_ids, mean=True).toarray()
    for row, uid in enumerate(user_ids):
        k = np.searchsorted(year.user_ids, uid)
        rows = year.user_rows(k).toarray() if year.user_ids[k] == uid else np.zeros((0, year.n_interests))
        np.testing.assert_allclose(summed[row], rows.sum(axis=0))
        np.testing.assert_allclose(mean[row], rows.mean(axis=0) if len(rows) else 0.0)
    assert len(year.user_rows(np.searchsorted(year.user_ids, 1003)).toarray()) > 1  # a mean of several years


def test_random_projection_matrix_does_not_depend_on_the_chunking():
    whole = np.random.default_rng(3).standard_normal((50, 9)) / 3.0
    blocks = list(diagnostics.random_projection_matrix(50, 9, 3, chunk_rows=7))
    assert len(blocks) == 8
    np.testing.assert_allclose(np.concatenate([b for _, b in blocks]), whole, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# view_retrieval_top1
# ---------------------------------------------------------------------------------------

TRAIN = UserTrainingConfig(min_subseq_periods=3, max_periods=24, period_dropout=0.1)


def test_retrieval_is_perfect_when_every_view_names_its_user(identity_boi):
    users = identity_boi["month"].user_ids
    stub = IdentityStub(len(users))
    assert diagnostics.view_retrieval_top1(stub, identity_boi, users, TRAIN, seed=0) == 1.0
    assert stub.seen == len(users)  # every user, over several batches of RETRIEVAL_BATCH
    stub.seen = 0
    assert diagnostics.view_retrieval_top1(stub, identity_boi, users[::3], TRAIN, seed=0, n_users=20) == 1.0
    assert stub.seen == 20


def test_retrieval_of_random_vectors_is_at_chance(identity_boi):
    users = identity_boi["month"].user_ids
    assert diagnostics.view_retrieval_top1(RandomStub(), identity_boi, users, TRAIN, seed=0) < 0.05


def test_retrieval_of_an_smen_is_seeded_and_keeps_the_mode(identity_boi):
    torch.manual_seed(0)
    model = SMEN(identity_boi["month"].n_interests, hidden=8, anchors=2).train()
    users = identity_boi["month"].user_ids
    a = diagnostics.view_retrieval_top1(model, identity_boi, users, TRAIN, seed=4, n_users=100)
    b = diagnostics.view_retrieval_top1(model, identity_boi, users, TRAIN, seed=4, n_users=100)
    assert a == b and 0.0 <= a <= 1.0 and model.training
    with pytest.raises(ValueError, match="at least two"):
        diagnostics.view_retrieval_top1(model, identity_boi, users[:1], TRAIN, seed=0)


# ---------------------------------------------------------------------------------------
# epoch_probe with train_smen
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_boi(tiny_dataset):
    from data_prep.schema import load_dataset

    dataset = load_dataset(tiny_dataset)
    history = dataset.history()
    D = 40
    boi = build_boi(history["user_id"].to_numpy(), history["item_id"].to_numpy(), history["ts"].to_numpy(),
                    np.arange(len(dataset.items)) % D, D, granularities=("month", "year"))
    return dataset, boi


def test_epoch_probe_records_a_learning_curve_without_touching_the_training_path(tiny_boi, tmp_path):
    from lurm_lite.user_training import encode_users, train_smen

    dataset, boi = tiny_boi
    smen_config = SMENConfig(hidden=8, anchors=2)
    train_config = UserTrainingConfig(batch_size=100, epochs=2, min_subseq_periods=2, max_periods=6)
    probe_config = DownstreamConfig(max_epochs=5, patience=2)
    users = boi["month"].user_ids
    probe = diagnostics.EpochProbe(boi, users, dataset, probe_config, ["age"], seed=0, device="cpu",
                                    retrieval_users=users[::2], train_config=train_config)
    torch.manual_seed(123)
    model, with_probe = train_smen(boi, smen_config, train_config, "cpu", seed=0, progress=False, on_epoch_end=probe)
    after_probe = torch.rand(1)
    # the last epoch's encoding is the trained model's R^ (notebook 04 saves it instead of encoding again)
    np.testing.assert_array_equal(probe.encoding_after(2), encode_users(model, boi, users, "cpu"))
    assert probe.encoding_after(1) is None
    # an epoch of keep_epochs is kept too: the R^ of the snapshot written after it (notebook 08's reference)
    keeping = diagnostics.EpochProbe(boi, users, dataset, probe_config, ["age"], seed=0, device="cpu", keep_epochs={1})
    snapshot = tmp_path / "smen_ep1.pt"
    train_smen(boi, smen_config, train_config, "cpu", seed=0, progress=False, on_epoch_end=keeping,
               snapshots={1: snapshot})
    np.testing.assert_array_equal(keeping.encoding_after(1), encode_users(load_smen(snapshot), boi, users, "cpu"))
    assert keeping.save_encodings({1: snapshot, 2: tmp_path / "smen_ep2.pt"}) == [tmp_path / "smen_ep1_reps.npz"]
    np.testing.assert_array_equal(kept_model_encoding(snapshot, users[::-1]), keeping.encoding_after(1)[::-1])
    torch.manual_seed(123)
    _, without = train_smen(boi, smen_config, train_config, "cpu", seed=0, progress=False)
    assert torch.equal(after_probe, torch.rand(1))  # the global torch RNG is where it would be
    assert with_probe["step"] == without["step"]
    assert [e["epoch"] for e in with_probe["eval"]] == [1, 2]
    for entry in with_probe["eval"]:
        assert set(entry["auc"]) == {"age"} and 0 <= entry["auc"]["age"] <= 1
        assert 0 <= entry["retrieval_top1"] <= 1
    frame = diagnostics.learning_curve_frame(with_probe)
    assert set(frame["metric"]) == {"auc age", "retrieval_top1"} and len(frame) == 4
    with pytest.raises(ValueError, match="unknown task"):
        diagnostics.EpochProbe(boi, users, dataset, probe_config, ["nope"], seed=0)
    with pytest.raises(ValueError, match="train_config"):
        diagnostics.EpochProbe(boi, users, dataset, probe_config, ["age"], seed=0, retrieval_users=users)


# ---------------------------------------------------------------------------------------
# benchmarks/quality.py: aggregation over seeds
# ---------------------------------------------------------------------------------------


def _quality_module():
    spec = importlib.util.spec_from_file_location("quality_benchmark", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quality_aggregation_gives_mean_and_sample_sd_over_seeds():
    quality = _quality_module()
    per_seed = [
        {"age": {"LURM": 0.70, "BoI": 0.80}, "future_Books": {"LURM": 0.60, "BoI": 0.58}},
        {"age": {"LURM": 0.74, "BoI": 0.84}, "future_Books": {"LURM": 0.62}},
        {"age": {"LURM": 0.72, "BoI": 0.82}, "future_Books": {"LURM": 0.64, "BoI": 0.62}},
    ]
    tasks = quality.aggregate_aucs(per_seed)
    assert tasks["age"]["LURM"]["auc_mean"] == pytest.approx(0.72)
    assert tasks["age"]["LURM"]["auc_sd"] == pytest.approx(0.02)  # sd of 0.70, 0.74, 0.72 (ddof 1)
    assert tasks["age"]["BoI"]["auc_mean"] == pytest.approx(0.82)
    assert tasks["future_Books"]["BoI"]["auc_mean"] == pytest.approx(0.60)  # the two seeds that have it
    assert tasks["future_Books"]["BoI"]["auc_sd"] == pytest.approx(np.sqrt(0.0008))
    single = quality.aggregate_aucs(per_seed[:1])
    assert single["age"]["LURM"] == {"auc_mean": pytest.approx(0.70), "auc_sd": None}
    assert set(single["age"]["LURM"]) == {"auc_mean", "auc_sd"}
    gaps = quality.gaps(per_seed, "LURM", "BoI")
    assert gaps["age"]["mean"] == pytest.approx(-0.10)
    assert gaps["future_Books"]["mean"] == pytest.approx(0.02) and gaps["future_Books"]["n_seeds"] == 2
    summary = quality.mean_sd([0.5, 0.7])
    assert summary["mean"] == pytest.approx(0.6) and summary["sd"] == pytest.approx(np.sqrt(0.02))
    table = quality.markdown_table(tasks)
    assert "| age |" in table and "72.00 ± 2.00" in table


# ---------------------------------------------------------------------------------------
# Linear probe per stage of SMEN
# ---------------------------------------------------------------------------------------


def test_linear_probe_reads_a_planted_label_and_treats_sparse_like_dense():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)  # (n,) three classes
    X = rng.normal(size=(600, 20))
    X[:, 4] += 1.5 * (y == 1) - 1.5 * (y == 2)  # one column carries the label
    auc = diagnostics.linear_probe_auc(X, y, seed=0)
    assert auc > 0.8
    assert abs(diagnostics.linear_probe_auc(rng.normal(size=(600, 20)), y, seed=0) - 0.5) < 0.08  # noise: chance
    # standardising a sparse X without centring gives the same probe (the intercept takes the mean)
    counts = sp.csr_matrix(rng.poisson(np.where(y[:, None] == 1, 0.6, 0.3), size=(600, 30)).astype(float))
    assert diagnostics.linear_probe_auc(counts, y, seed=0) == pytest.approx(
        diagnostics.linear_probe_auc(counts.toarray(), y, seed=0), abs=2e-3)
    with pytest.raises(ValueError, match="rows"):
        diagnostics.linear_probe_auc(X[:10], y, seed=0)


def test_signal_by_stage_probes_b_T_and_every_stage_of_each_model(identity_boi):
    month = identity_boi["month"]
    user_ids = month.user_ids  # (150,)
    b_T = diagnostics.summed_boi(month, user_ids)  # (150, D) a stand-in for b_T
    y = (user_ids % 2).astype(np.int64)  # user parity: carried by each user's own interest
    torch.manual_seed(0)
    models = {"a": SMEN(month.n_interests, hidden=8, anchors=2).eval(),
              "b": SMEN(month.n_interests, hidden=8, anchors=2, scales=("month",)).eval()}
    frame = diagnostics.signal_by_stage(models, identity_boi, user_ids, b_T, {"parity": (user_ids[::-1], y[::-1])},
                                        seed=0)
    assert frame[frame.model == "input"].stage.tolist() == ["b_T", "mean b_t month", "mean b_t year"]
    assert frame.groupby("model").size().to_dict() == {"input": 3, "a": 5, "b": 3}
    assert frame.auc.between(0, 1).all()
    expected = diagnostics.linear_probe_auc(b_T[::-1], y[::-1], seed=0)  # labels in the given order
    assert frame.auc.iloc[0] == pytest.approx(expected)
    mean_year = diagnostics.summed_boi(identity_boi["year"], user_ids, mean=True)[::-1]
    assert frame.auc.iloc[2] == pytest.approx(diagnostics.linear_probe_auc(mean_year, y[::-1], seed=0))
    # a model's stages encoded beforehand (notebook 08's untrained SMEN) give the same rows as the model
    given = diagnostics.signal_by_stage({"a": encode_stages(models["a"], identity_boi, user_ids, "cpu"),
                                         "b": models["b"]}, identity_boi, user_ids, b_T,
                                        {"parity": (user_ids[::-1], y[::-1])}, seed=0)
    pd.testing.assert_frame_equal(given, frame)
    with pytest.raises(ValueError, match="not in user_ids"):
        diagnostics.signal_by_stage(models, identity_boi, user_ids[1:], b_T[1:], {"parity": (user_ids, y)}, seed=0)
