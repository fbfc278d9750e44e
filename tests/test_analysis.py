"""lurm_lite.analysis: windows of Fig. 3, evaluation tables, variants, anchors of Fig. 5."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from lurm_lite import analysis, downstream, results
from lurm_lite.boi import build_boi
from lurm_lite.config import SMENConfig, UserTrainingConfig
from lurm_lite.smen import SMEN

DAY = 86_400


def ts(date: str) -> int:
    return int(pd.Timestamp(date, tz="UTC").timestamp())


# ---------------------------------------------------------------------------------------
# Fig. 3 windows
# ---------------------------------------------------------------------------------------


def test_length_windows_adapt_to_the_span_and_always_end_with_the_whole_life():
    assert analysis.length_windows(120) == [2, 6, 12, 24, 36, 48, 60, None]
    assert analysis.length_windows(30) == [2, 6, 12, 24, None]
    assert analysis.length_windows(4) == [2, None]  # MovieLens: Sept 1997 - Dec 1997
    assert analysis.length_windows(2) == [None]  # 2 months is the whole life already
    assert analysis.length_windows(24, [12, 6, 6, 0, 24]) == [6, 12, None]
    assert [analysis.length_label(m) for m in [2, 6, 12, 18, 60, None]] == ["2M", "6M", "1Y", "18M", "5Y", "life"]


def test_boi_in_window_counts_only_the_behaviours_after_the_start():
    history = pd.DataFrame({"user_id": [1, 1, 1, 2], "item_id": [0, 1, 0, 1],
                            "ts": [ts("2016-05-01"), ts("2017-12-01"), ts("2017-12-15"), ts("2015-01-01")]})
    interest = np.array([0, 1])
    window = analysis.boi_in_window(history, interest, 2, np.array([2, 1, 3]), ts("2017-11-01")).toarray()
    np.testing.assert_allclose(window, [[0, 0], [np.log(2), np.log(2)], [0, 0]], rtol=1e-6)
    life = analysis.boi_in_window(history, interest, 2, np.array([1, 2]), None).toarray()
    np.testing.assert_allclose(life, [[np.log(3), np.log(2)], [0, np.log(2)]], rtol=1e-6)


def test_rfm_in_window_sees_only_the_behaviours_after_the_start():
    history = pd.DataFrame({"user_id": [1, 1, 1, 2], "item_id": [0, 1, 0, 1],
                            "ts": [ts("2016-05-01"), ts("2017-12-01"), ts("2017-12-15"), ts("2015-01-01")]})
    end, month = ts("2018-01-01"), 30.4375 * DAY
    window = analysis.rfm_in_window(history, np.array([2, 1]), end, ts("2017-11-01"))
    user_1 = [(end - ts("2017-12-15")) / month, np.log(3), (end - ts("2017-12-01")) / month]
    np.testing.assert_allclose(window, [[user_1[2], 0, user_1[2]], user_1], rtol=1e-6)  # user 2: none in the window
    life = analysis.rfm_in_window(history, np.array([1, 2]), end, None)
    np.testing.assert_allclose(life[:, 2], [(end - ts("2016-05-01")) / month, (end - ts("2015-01-01")) / month],
                               rtol=1e-6)


# ---------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------


def _m(auc, acc):
    return {"auc": auc, "acc": acc, "auc_ci95": [auc - 0.01, auc + 0.01], "n_test": 10}


def test_metrics_frame_and_length_trend():
    per = {"2M": {"age": _m(0.6, 0.3), "books": _m(0.70, 0.7)},
           "1Y": {"age": _m(0.7, 0.35), "books": _m(0.75, 0.72)},
           "life": {"books": _m(0.74, 0.71), "age": _m(0.8, 0.4)}}
    frame = analysis.metrics_frame(per, "length")
    assert list(frame["task"]) == ["age"] * 3 + ["books"] * 3
    assert list(frame["length"]) == ["2M", "1Y", "life"] * 2
    assert frame.loc[0, "auc_lo"] == pytest.approx(0.59)
    trend = analysis.length_trend(frame).set_index("task")
    assert trend.loc["age", "gain"] == pytest.approx(0.2) and trend.loc["age", "spearman"] == pytest.approx(1.0)
    assert trend.loc["books", "best"] == "1Y" and trend.loc["books", "from_best"] == pytest.approx(-0.01)
    table = results.table_frame({"BoI": per["2M"], "LURM": per["life"]})
    assert table.loc["LURM", "age"] == "**80.00**/**40.00**" and list(table.columns) == ["age", "books"]
    assert table.loc["BoI", "books"] == "70.00/70.00" and table.loc["LURM", "books"] == "**74.00**/**71.00**"


# ---------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------


def test_variant_training_config_keeps_spans_in_time_for_a_year_only_model():
    base = UserTrainingConfig(min_subseq_periods=6, max_periods=120, epochs=8)
    year = analysis.variant_training_config(base, ("year",), epochs=2)
    assert (year.min_subseq_periods, year.max_periods, year.epochs) == (1, 10, 2)
    month = analysis.variant_training_config(base, ("month", "year"))
    assert month == base
    uncapped = analysis.variant_training_config(dataclasses.replace(base, max_periods=None), ("year",))
    assert (uncapped.min_subseq_periods, uncapped.max_periods) == (1, None)  # the default scale's spans


def _toy_boi(n_users=24, D=12, seed=0):
    rng = np.random.default_rng(seed)
    n = 40 * n_users
    user = np.sort(rng.integers(0, n_users, n))
    t = np.sort(rng.integers(ts("2014-01-01"), ts("2018-01-01"), n))
    order = np.lexsort((t, user))
    item = rng.integers(0, 30, n)
    assignment = np.arange(30) % D
    return build_boi(user[order].astype(np.int64), item, t[order], assignment, D), np.unique(user)


def test_train_variant_encodes_every_user_and_caches(tmp_path):
    boi, users = _toy_boi()
    smen_config = SMENConfig(hidden=8, anchors=2)
    train_config = UserTrainingConfig(batch_size=8, epochs=1, min_subseq_periods=2)
    wanted = np.append(users, 999)  # an unknown user gets the empty-sequence encoding
    cache = tmp_path / "variant.npz"
    reps, info = analysis.train_variant(boi, smen_config, train_config, wanted, "cpu", 0, cache_path=cache,
                                        cache_key={"D": 12})
    assert reps.shape == (len(wanted), 16) and info["representation_size"] == 16 and not info["cached"]
    assert np.all(reps[-1] == 0) and np.abs(reps[:-1]).sum() > 0
    again, info2 = analysis.train_variant(boi, smen_config, train_config, wanted, "cpu", 0, cache_path=cache,
                                          cache_key={"D": 12})
    assert info2["cached"] and np.array_equal(again, reps)
    other_interests, _ = _toy_boi(seed=1)  # same D and configs, another BoI (e.g. k-means rerun)
    _, info_other = analysis.train_variant(other_interests, smen_config, train_config, wanted, "cpu", 0,
                                           cache_path=cache, cache_key={"D": 12})
    assert not info_other["cached"]
    _, info3 = analysis.train_variant(boi, smen_config, train_config, wanted, "cpu", 1, cache_path=cache,
                                      cache_key={"D": 12})
    assert not info3["cached"]  # another seed is another variant


def test_notebook_04s_snapshot_is_the_reference_variant_and_is_used_only_when_it_is(tmp_path):
    """The model after epoch 1 of a 2-epoch run equals a fresh 1-epoch run; run_snapshot finds it only
    for the same seed and settings (08 then encodes it instead of training)."""
    from lurm_lite.io import save_json
    from lurm_lite.runs import RunPaths
    from lurm_lite.user_training import kept_model_encoding, model_encoding_path, save_model_encoding, train_smen

    boi, users = _toy_boi()
    smen_config = SMENConfig(hidden=8, anchors=2)
    two_epochs = UserTrainingConfig(batch_size=8, epochs=2, min_subseq_periods=2)
    one_epoch = dataclasses.replace(two_epochs, epochs=1)
    run = RunPaths(tmp_path)
    _, history = train_smen(boi, smen_config, two_epochs, "cpu", 0, progress=False,
                            snapshots={1: run.smen_snapshot(1)})
    save_json(run.smen_loss, history)
    save_json(run.stage_json("04_smen"), {"smen_config": smen_config.__dict__, "train_config": two_epochs.__dict__,
                                          "seed": 0, "snapshots": {"1": "smen_ep1.pt"}})
    shared = analysis.run_snapshot(run.root, smen_config, one_epoch, seed=0)
    assert shared == (run.smen_snapshot(1), history["epoch"][:1])
    reps_shared, info = analysis.train_variant(boi, smen_config, one_epoch, users, "cpu", 0, trained=shared)
    reps_trained, info_trained = analysis.train_variant(boi, smen_config, one_epoch, users, "cpu", 0)
    assert np.array_equal(reps_shared, reps_trained) and info["shared"] == "smen_ep1.pt"
    assert info["loss_last_epoch"] == info_trained["loss_last_epoch"]
    # the encoding notebook 04 kept beside the snapshot is read instead of encoding it (a marked copy
    # here, to see which one came back), for that model file only
    save_model_encoding(run.smen_snapshot(1), users[::-1], reps_trained[::-1] + 1)
    assert model_encoding_path(run.smen_snapshot(1)).name == "smen_ep1_reps.npz"
    reps_kept, _ = analysis.train_variant(boi, smen_config, one_epoch, users, "cpu", 0, trained=shared)
    np.testing.assert_array_equal(reps_kept, reps_trained + 1)
    assert kept_model_encoding(run.smen_snapshot(1), np.append(users, 10**6)) is None  # a user it lacks
    with open(run.smen_snapshot(1), "ab") as model_file:  # another model under that name: encoded again
        model_file.write(b"\0")
    assert kept_model_encoding(run.smen_snapshot(1), users) is None
    assert analysis.run_snapshot(run.root, smen_config, one_epoch, seed=1) is None
    assert analysis.run_snapshot(run.root, smen_config, dataclasses.replace(one_epoch, lr=0.01), seed=0) is None
    assert analysis.run_snapshot(run.root, dataclasses.replace(smen_config, anchors=3), one_epoch, seed=0) is None
    assert analysis.run_snapshot(run.root, smen_config, dataclasses.replace(one_epoch, epochs=2), seed=0) is None


def test_recluster_hard_and_soft_share_the_centroids():
    from lurm_lite.config import ClusteringConfig

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((200, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    config = ClusteringConfig(n_interests=5, niter=5, soft_top_k=2)
    centroids, hard = analysis.recluster(emb, 5, config, 0)
    same, soft = analysis.recluster(emb, 5, config, 0, assignment="soft", centroids=centroids)
    assert same is centroids and hard.shape == (200,) and soft.shape == (200, 5)
    np.testing.assert_allclose(np.asarray(soft.sum(axis=1)).ravel(), 1, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# Fig. 5 anchors
# ---------------------------------------------------------------------------------------


def test_anchor_points_and_silhouette_of_separated_and_mixed_anchors():
    rng = np.random.default_rng(0)
    centres = np.eye(4)[:3] * 10  # 3 anchors pointing in different directions
    separated = centres[None, :, :] + rng.normal(scale=0.3, size=(50, 3, 4))  # (users, M, H)
    points, labels = analysis.anchor_points(separated)
    assert points.shape == (150, 4) and list(labels[:6]) == [0, 1, 2, 0, 1, 2]
    np.testing.assert_array_equal(points[4], separated[1, 1])
    assert analysis.anchor_silhouette(points, labels) > 0.9
    mixed = rng.normal(size=(50, 3, 4)) + 5
    assert abs(analysis.anchor_silhouette(*analysis.anchor_points(mixed))) < 0.1
    with_zeros = separated.copy()
    with_zeros[:10] = 0  # users without periods are left out
    assert analysis.anchor_silhouette(*analysis.anchor_points(with_zeros)) > 0.9
    assert analysis.anchor_knn_purity(points, labels, k=5) == pytest.approx(1.0)
    assert analysis.anchor_knn_purity(*analysis.anchor_points(mixed), k=5) < 0.6  # chance: 1/3


def test_knn_purity_by_hand():
    points = np.array([[1.0, 0], [1.0, 0.1], [0, 1.0], [0.1, 1.0]])
    assert analysis.anchor_knn_purity(points, np.array([0, 0, 1, 1]), k=1) == 1.0
    assert analysis.anchor_knn_purity(points, np.array([0, 1, 0, 1]), k=1) == 0.0


def test_tsne_gives_two_columns():
    points = np.random.default_rng(0).normal(size=(20, 5))
    assert analysis.tsne_2d(points, seed=0).shape == (20, 2)  # perplexity capped below n/3


def test_interest_alpha_matches_the_model_and_sums_to_one():
    torch.manual_seed(0)
    model = SMEN(n_interests=7, hidden=4, anchors=3)
    alpha = analysis.interest_alpha(model)
    assert alpha.shape == (7, 3)
    np.testing.assert_allclose(alpha.sum(axis=1), 1, rtol=1e-5)
    with torch.no_grad():
        ma = model.multi_anchor
        k = torch.relu(ma.W_e) @ ma.W_p.T  # k_j = W^p ReLU(W^e_j)
        expected = torch.softmax(k @ ma.W_a.T, dim=1).numpy()  # eq. (6)
    np.testing.assert_allclose(alpha, expected, rtol=1e-5, atol=1e-6)


def test_anchor_label_mass_by_hand():
    alpha = np.array([[1.0, 0.0], [0.25, 0.75], [0.5, 0.5]])  # (D=3, M=2)
    item_interest = np.array([0, 1, 1, 2])
    item_topic = np.array([0, 1, 0, 1])
    weight = np.array([1.0, 2.0, 1.0, 4.0])
    mass = analysis.anchor_label_mass(alpha, item_interest, item_topic, 2, weight)
    # anchor 0: topic 0 = 1*1 + 1*0.25, topic 1 = 2*0.25 + 4*0.5; anchor 1: 0 + 0.75, 2*0.75 + 4*0.5
    np.testing.assert_allclose(mass, [[1.25, 2.5], [0.75, 3.5]])
    np.testing.assert_allclose(mass.sum(axis=0), [1 + 1, 2 + 4])  # every label's total weight
    top = analysis.top_labels_per_anchor(mass, ["A", "B"], top=1)
    assert top[0][0]["label"] == "A" and top[1][0]["label"] == "B"
    assert top[0][0]["share"] == pytest.approx(1.25 / 3.75) and top[0][0]["lift"] == pytest.approx((1.25 / 3.75) / 0.25)
    # soft assignment and multi-label items: the same mass as the hand-expanded version
    soft = sp.csr_matrix(np.array([[1, 0, 0], [0, 0.5, 0.5], [0, 1, 0], [0, 0, 1.0]]))
    labels, names = analysis.item_label_matrix(["Drama|War", "War", "Drama", ""])
    assert names == ["Drama", "War"] and labels.toarray()[0].tolist() == [0.5, 0.5] and labels[3].nnz == 0
    mass = analysis.anchor_label_mass(alpha, soft, labels)
    per_item = np.array([[1, 0], [0.375, 0.625], [0.25, 0.75], [0.5, 0.5]])  # soft rows @ alpha
    np.testing.assert_allclose(mass, (labels.toarray().T @ per_item).T)


def test_alpha_concentration_uniform_and_one_hot():
    uniform = analysis.alpha_concentration(np.full((5, 4), 0.25))
    assert uniform["max_alpha"] == pytest.approx(0.25) and uniform["entropy"] == pytest.approx(1.0)
    one_hot = analysis.alpha_concentration(np.eye(4)[[0, 1, 2, 3, 0]])
    assert one_hot["max_alpha"] == pytest.approx(1.0) and one_hot["entropy"] == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------------------------------
# Notebook 08's rows: Ablation, Table 5, Fig. 4, hard vs soft
# ---------------------------------------------------------------------------------------


def _ablation(tmp_path, n_users=48, log=None):
    """A tiny Ablation on _toy_boi's users: one binary task (20+ users per class), 1 epoch."""
    from lurm_lite.config import DownstreamConfig

    boi, users = _toy_boi(n_users=n_users, D=6)
    rng = np.random.default_rng(0)
    history = pd.DataFrame({"user_id": np.repeat(users, 5), "item_id": rng.integers(0, 30, 5 * len(users)),
                            "ts": np.tile(ts("2017-06-01") + DAY * np.arange(5), len(users))})
    labels = {"parity": (users, (users % 2).astype(np.int64))}
    ab = analysis.Ablation(history, labels, users, DownstreamConfig(max_epochs=2, bootstrap=5, workers=1),
                           UserTrainingConfig(batch_size=16, epochs=1, min_subseq_periods=2), "cpu", 0,
                           tmp_path / "ablations", log=log)
    interests = analysis.RunInterests(np.eye(6, 4, dtype=np.float32), np.arange(30) % 6, "hard", boi)
    return ab, interests


def test_variant_configs_name_table5s_rows_and_refuse_unknown_ones():
    rows = analysis.variant_configs(SMENConfig(hidden=8, anchors=3), ["yearly", "1anchor-MH"])
    assert list(rows) == ["yearly", "1anchor-MH"]
    assert rows["yearly"][0] == "LURM(yearly)" and rows["yearly"][1].scales == ("year",)
    assert rows["1anchor-MH"][0] == "LURM(1anchor-24)" and (rows["1anchor-MH"][1].anchors,
                                                            rows["1anchor-MH"][1].hidden) == (1, 24)
    with pytest.raises(ValueError, match="'2anchor'.*monthly, yearly"):
        analysis.variant_configs(SMENConfig(), ["monthly", "2anchor"])


def test_table5_variants_train_then_load_from_the_cache(tmp_path):
    said = []
    ab, interests = _ablation(tmp_path, log=said.append)
    reps, infos = analysis.table5_variants(ab, SMENConfig(hidden=4, anchors=2), interests, ["yearly", "1anchor-H"])
    assert list(reps) == ["LURM(1ep)", "LURM(yearly)", "LURM(1anchor-4)"] == [ab.reference, *list(reps)[1:]]
    assert [r.shape[1] for r in reps.values()] == [8, 8, 4] and all(len(r) == len(ab.user_ids) for r in reps.values())
    assert infos["LURM(yearly)"]["scales"] == ["year"] and not any(i["cached"] for i in infos.values())
    assert sorted(p.name for p in (tmp_path / "ablations").iterdir()) == [
        "lurm_D6_hard.npz", "variant_1anchor-H_D6.npz", "variant_yearly_D6.npz"]
    assert "train LURM(yearly)" in ab.timing and said[1].startswith("LURM(yearly): 8 dims, loss ")
    again, infos2 = analysis.table5_variants(ab, SMENConfig(hidden=4, anchors=2), interests, ["yearly", "1anchor-H"])
    assert all(i["cached"] for i in infos2.values()) and "(cached)" in said[-1]
    assert all(np.array_equal(again[k], reps[k]) for k in reps)
    metrics = ab.evaluate("LURM(yearly)", reps["LURM(yearly)"])
    assert set(metrics) == {"parity"} and 0 <= metrics["parity"]["auc"] <= 1 and "probe LURM(yearly)" in ab.timing


def test_ablation_reads_back_a_representation_probed_before(tmp_path, monkeypatch):
    ab, _ = _ablation(tmp_path)
    ab.probe_cache = tmp_path / "probes"
    calls = []
    real = downstream.evaluate_task
    monkeypatch.setattr(downstream, "evaluate_task", lambda *a: calls.append(1) or real(*a))
    X = np.random.default_rng(1).standard_normal((len(ab.user_ids), 3)).astype(np.float32)
    first = ab.evaluate("a", X)
    assert ab.evaluate("b", X.copy()) == first and len(calls) == 1  # one task, probed once
    ab.evaluate("c", X + np.float32(1e-3))
    assert len(calls) == 2 and len(list(ab.probe_cache.glob("*.json"))) == 2


def test_sweep_values_keep_items_per_interest_only_for_presets():
    assert analysis.sweep_values([100, 300, 1000, 3000, 1], run_d=1000, n_items=16_000, user_set=False) == [100, 300, 1000]
    assert analysis.sweep_values([3000, 300, 300], run_d=1000, n_items=16_000, user_set=True) == [300, 3000]
    assert analysis.sweep_values([50], run_d=50, n_items=100, user_set=False) == [50]  # the run's D is never cut


def test_n_interests_sweep_reuses_the_runs_d_and_reclusters_the_others(tmp_path):
    ab, interests = _ablation(tmp_path)
    emb = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    from lurm_lite.config import ClusteringConfig

    reference = np.zeros((len(ab.user_ids), 8), np.float32)  # stands for LURM(<E>ep): all-zero, so AUC 0.5
    by_d, boi_by_d, infos = analysis.n_interests_sweep(ab, [3, 6], emb, ClusteringConfig(niter=2), SMENConfig(hidden=4, anchors=2),
                                                       interests, reference)
    assert list(by_d) == list(boi_by_d) == [3, 6] and list(infos) == ["D=3"] and infos["D=3"]["n_interests"] == 3
    assert by_d[6]["parity"]["auc"] == pytest.approx(0.5)  # the run's D: the reference's reps, not retrained
    assert "k-means + BoI D=3" in ab.timing and not (tmp_path / "ablations" / "lurm_D6_hard.npz").exists()


def test_assignment_comparison_rows_and_untrained_smen(tmp_path):
    from lurm_lite.config import ClusteringConfig

    ab, interests = _ablation(tmp_path)
    reference = {"parity": {"auc": 0.9, "acc": 0.9, "auc_ci95": [0.8, 1.0], "n_test": 10}}
    rows, info = analysis.assignment_comparison(ab, np.eye(30, 4, dtype=np.float32), ClusteringConfig(soft_top_k=2),
                                                SMENConfig(hidden=4, anchors=2), interests, reference)
    assert list(rows) == ["LURM(1ep, hard)", "LURM(1ep, soft)", "BoI (hard)", "BoI (soft)"]
    assert rows["LURM(1ep, hard)"] == reference and info["n_interests"] == 6
    assert (tmp_path / "ablations" / "lurm_D6_soft.npz").exists()
    torch.manual_seed(123)
    model = SMEN(n_interests=6, hidden=4, anchors=2)
    state = torch.get_rng_state()
    first, second = analysis.untrained_smen(model, 0), analysis.untrained_smen(model, 0)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG does not move
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    stored = analysis.stored_training_config(UserTrainingConfig(), {"min_subseq_periods": 3, "unknown": 1})
    assert stored.min_subseq_periods == 3 and stored.epochs == UserTrainingConfig().epochs


# ---------------------------------------------------------------------------------------
# Findings rendered from the stage JSON
# ---------------------------------------------------------------------------------------


def test_task_groups_from_the_contracts_rules():
    tasks = [{"name": "age", "rule": {"profile": "age_group"}}, {"name": "fB", "rule": {"future_category": "Books"}},
             {"name": "active", "rule": {"activity": "label_window"}}]
    assert analysis.task_groups(tasks) == {"age": "profile", "fB": "category", "active": "activity"}


def _length_stage(age_life):
    per = lambda age, books: {"age": _m(age, 0.3), "books": _m(books, 0.7)}  # noqa: E731
    return {"dataset": "synthetic-default", "source": "synthetic", "history_span_months": 120,
            "window_names": ["2M", "1Y", "life"], "task_groups": {"age": "profile", "books": "category"},
            "lurm": {"2M": per(0.60, 0.80), "1Y": per(0.70, 0.75), "life": per(age_life, 0.74)},
            "boi_reference": {"2M": per(0.58, 0.79), "1Y": per(0.7, 0.7), "life": per(0.92, 0.66)},
            "rfm_reference": {"2M": per(0.5, 0.84), "1Y": per(0.5, 0.8), "life": per(0.5, 0.7)},
            "users_with_behaviour": {"2M": 0.56, "1Y": 0.85, "life": 1.0}}


def test_length_findings_state_inequalities_and_flip_with_them():
    text = analysis.length_findings(_length_stage(age_life=0.845))
    assert "**Profile tasks: longer history helps** (life above 2M on 1 of 1)" in text
    assert "age: LURM 2M 0.600 < life 0.845" in text and "+24.5 AUC points" in text
    assert "**Category tasks: longer history does not help on most** (life above 2M on 0 of 1)" in text
    assert "BoI 0.920 > LURM 0.845 (age)" in text and "On synthetic data the raw BoI falls" in text
    assert "RFM 0.840 > LURM 0.800 (books)" in text and "2M 56%" in text
    flipped = analysis.length_findings(_length_stage(age_life=0.55))
    assert "**Profile tasks: longer history does not help on most**" in flipped and "LURM 2M 0.600 > life 0.550" in flipped
    other = {**_length_stage(0.845), "source": "movielens"}
    assert "synthetic" not in analysis.length_findings(other).split("\n", 1)[1]  # generator prose only on its data
    assert "no length to compare" in analysis.length_findings({**_length_stage(0.8), "window_names": ["life"]})


def test_length_findings_compare_lurm_2m_with_the_sequence_models_on_the_same_input():
    same = {"LURM(2M)": {"age": _m(0.60, 0.3), "books": _m(0.74, 0.7)},
            "PTUM(2M)": {"age": _m(0.52, 0.3), "books": _m(0.72, 0.7)},
            "HAN(2M)": {"age": _m(0.53, 0.3), "books": _m(0.75, 0.7)}}
    text = analysis.length_findings({**_length_stage(0.845), "same_length": same})
    assert ("**Same input (2M)** (Tables 3-4): LURM(2M) is above every sequence model (PTUM(2M), HAN(2M)) on 1 of 2 "
            "tasks (the paper: on all); behind the best of them on LURM(2M) 0.740 < HAN(2M) 0.750 (books).") in text
    same["HAN(2M)"]["books"] = _m(0.70, 0.7)
    assert "on 2 of 2 tasks (the paper: on all)." in analysis.length_findings({**_length_stage(0.845), "same_length": same})
    assert "Same input" not in analysis.length_findings(_length_stage(0.845))


def test_anchor_findings_flip_with_the_measurements():
    stage = {"users": 100, "anchors": 10, "knn_anchor_purity": {"initialised": 0.55, "trained": 0.67},
             "silhouette": {"initialised": -0.02, "trained": 0.04},
             "alpha_concentration": {"initialised": {"max_alpha": 0.73}, "trained": {"max_alpha": 0.88}},
             "max_category_lift": {"trained": 2.8},
             "top_topics": {"trained": [[{"label": "t1", "share": 0.1, "lift": 6.0}], [{"label": "t2", "share": 0.1, "lift": 2.0}]]}}
    text = analysis.anchor_findings(stage)
    assert "specialise more with training**: 10-NN anchor purity initialised 0.550 < trained 0.670 (chance 1/M = 0.100)" in text
    assert "near 0" in text and "out more decisively" in text and "fine topics rather than categories" in text
    assert "6.000 > of a category 2.800" in text
    stage["knn_anchor_purity"]["trained"], stage["max_category_lift"]["trained"] = 0.5, 7.0
    stage["alpha_concentration"]["trained"]["max_alpha"] = 0.7
    flipped = analysis.anchor_findings(stage)
    assert "do not specialise more" in flipped and "out less decisively" in flipped and "categories as much" in flipped
    assert "more than 7.00x" in analysis.anchor_findings({**stage, "top_topics": None})


def _ablation_stage(one_anchor_age):
    rows = lambda age, books: {"age": _m(age, 0.4), "books": _m(books, 0.7)}  # noqa: E731
    return {"dataset": "synthetic-default", "n_interests": 1000, "anchors": 10, "hidden": 128, "run_epochs": 6,
            "ablation_epochs": 2, "reference": "LURM(2ep)", "task_groups": {"age": "profile", "books": "category"},
            "table5": {"BoI": rows(0.922, 0.664), "LURM": rows(0.845, 0.776), "LURM(2ep)": rows(0.841, 0.771),
                       "LURM(monthly)": rows(0.788, 0.797), "LURM(1anchor-128)": rows(one_anchor_age, 0.77)},
            "n_interests_sweep": {"100": rows(0.715, 0.791), "1000": rows(0.841, 0.771)},
            "n_interests_sweep_boi": {"100": rows(0.762, 0.7), "1000": rows(0.922, 0.664)},
            "assignment": {"LURM(2ep, hard)": rows(0.841, 0.771), "LURM(2ep, soft)": rows(0.815, 0.792),
                           "BoI (hard)": rows(0.922, 0.664), "BoI (soft)": rows(0.9, 0.67)},
            "boi_survival": {"r2": {"LURM": 0.666, "SMEN (untrained)": 0.614, "RandomProj(1280)": 0.9},
                             "n_components": 64},
            "view_retrieval_top1": {"LURM": 0.753, "SMEN (untrained)": 0.631}, "retrieval_users": 1000,
            "smen_loss_epoch": [2.47, 1.6, 1.41],
            "signal_by_stage": [{"model": "input", "stage": "b_T", "task": "age", "auc": 0.913},
                                {"model": "LURM", "stage": "r month", "task": "age", "auc": 0.855},
                                {"model": "LURM", "stage": "R^", "task": "age", "auc": 0.853},
                                {"model": "SMEN (untrained)", "stage": "R^", "task": "age", "auc": 0.5}]}


def test_ablation_findings_state_inequalities_and_flip_with_them():
    text = analysis.ablation_findings(_ablation_stage(one_anchor_age=0.655))
    assert "LURM is below raw BoI on 1 of 2 tasks, so not the paper's \"almost lossless\" on age" in text
    assert "age LURM 0.845 < BoI 0.922" in text and "books LURM 0.776 > BoI 0.664 (widest gap)" in text
    assert "**LURM(monthly) against month + year (LURM(2ep))**: one scale is below on 1 of 2 tasks, so multi-scale does not help on most" in text
    assert "**LURM(1anchor-128)**: below LURM(2ep) on 2 of 2 tasks, so one anchor loses" in text
    assert "LURM(1anchor-1280) was not trained" in text
    assert "LURM rises on 1 of 2 tasks, raw b_T on 1 of 2" in text and "age: LURM D=100 0.715 < D=1000 0.841" in text
    assert "differ by at most 2.6 AUC points (age: LURM(2ep, hard) 0.841 > LURM(2ep, soft) 0.815), more than" in text
    assert "LURM 0.666 > untrained 0.614" in text and "LURM 0.753 > untrained 0.631 (chance 0.0010)" in text
    assert "epoch 1 2.470 > epoch 3 1.410; still falling" in text
    assert ("b_T 0.913, r month 0.855, R^ 0.853; of the fall from b_T to R^ (6.0 points), 5.8 are there already in the "
            "per-period outputs r (eq. 5), before any time aggregation.") in text
    with_inputs = _ablation_stage(0.655)
    with_inputs["signal_by_stage"][1:1] = [{"model": "input", "stage": "mean b_t month", "task": "age", "auc": 0.86},
                                           {"model": "input", "stage": "mean b_t year", "task": "age", "auc": 0.893}]
    assert ("b_T 0.913, mean b_t month 0.860, mean b_t year 0.893, r month 0.855, R^ 0.853; of the fall from b_T to "
            "R^ (6.0 points), 5.8 are there already in the per-period outputs r (eq. 5), before any time aggregation "
            "(2.0 already in the per-period inputs b_t of eq. (4) averaged, the best scale's).") in (
        analysis.ablation_findings(with_inputs))
    assert "untrained" not in text.split("Where the age")[1]  # the stage chain is the trained model's
    flipped = analysis.ablation_findings(_ablation_stage(one_anchor_age=0.9))
    assert "below LURM(2ep) on 1 of 2 tasks, so one anchor does not lose on most" in flipped
    gained = _ablation_stage(0.655)
    gained["signal_by_stage"][2]["auc"] = 0.95
    assert "R^ 0.950 > b_T 0.913: nothing is lost" in analysis.ablation_findings(gained)


def test_ordering_findings_count_where_the_papers_orderings_hold():
    def m(auc, lo, hi):
        return {"auc": auc, "acc": 0.5, "auc_ci95": [lo, hi], "n_test": 50}
    results = {"tasks": {
        "t1": {"LURM": m(0.90, 0.88, 0.92), "SUMN": m(0.80, 0.78, 0.82), "PTUM": m(0.70, 0.68, 0.72),
               "HAN": m(0.60, 0.5, 0.7), "TextCNN": m(0.65, 0.6, 0.7)},
        "t2": {"LURM": m(0.90, 0.80, 0.95), "SUMN": m(0.85, 0.80, 0.90), "PTUM": m(0.70, 0.68, 0.72)},
        "t3": {"LURM": m(0.60, 0.5, 0.7), "SUMN": m(0.65, 0.6, 0.7), "PTUM": m(0.70, 0.6, 0.8)},
    }}
    text = analysis.ordering_findings(results).splitlines()
    assert text[0] == ("- **LURM > SUMN > PTUM** holds on 2 of 3 tasks by AUC, clear of the 95% intervals on 1 of 3; "
                       "first break: t3: LURM 0.600 < SUMN 0.650.")
    assert text[1] == ("- **HAN > TextCNN** holds on 0 of 1 tasks by AUC, clear of the 95% intervals on 0 of 1; "
                       "first break: t1: HAN 0.600 < TextCNN 0.650.")
    assert "not testable" in analysis.ordering_findings({"tasks": {"t": {"LURM": m(0.9, 0.8, 1.0)}}})
