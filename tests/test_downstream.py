"""Downstream evaluation (§3.2-3.5): labels, split, probe, metrics, evaluate_run (results files: test_results.py)."""

from __future__ import annotations

import dataclasses
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import accuracy_score, roc_auc_score

from data_prep.schema import Dataset, date_to_ts
from lurm_lite import downstream
from lurm_lite.config import DownstreamConfig, for_scale
from lurm_lite.evaluate import evaluate_run, main
from lurm_lite.io import load_json, save_npy, save_npz
from lurm_lite.runs import RunPaths

FAST = DownstreamConfig(max_epochs=40, patience=5, bootstrap=200)


# --- labels -----------------------------------------------------------------------------


def hand_built_dataset() -> Dataset:
    """Users 1-3 have history; user 4 acts only in the label window; user 2's age is unknown."""
    items = pd.DataFrame({"item_id": np.arange(3, dtype=np.int32), "title": ["a novel", "a toy book", "a ball"],
                          "category": ["Books", "Books|Toys", "Sports"]})
    hist, label = date_to_ts("2017-06-01"), date_to_ts("2018-03-01")
    behaviors = pd.DataFrame({
        "user_id": np.array([1, 1, 2, 2, 3, 4], dtype=np.int64),
        "item_id": np.array([0, 1, 2, 2, 0, 1], dtype=np.int32),
        "ts": np.array([hist, label, hist, label, hist, label], dtype=np.int64),
    })
    users = pd.DataFrame({"user_id": np.array([1, 2, 3, 4], dtype=np.int64),
                          "age_group": ["25-34", None, "18-24", "35-44"]})
    meta = {"name": "hand", "source": "test", "history_start": None, "history_end": "2018-01-01",
            "label_end": "2018-11-01", "tasks": [
                {"name": "future_Toys", "kind": "binary", "rule": {"future_category": "Toys"}},
                {"name": "future_Books_active", "kind": "binary",
                 "rule": {"future_category": "Books", "population": "active_in_label_window"}},
                {"name": "age", "kind": "multiclass", "rule": {"profile": "age_group"}},
                {"name": "churn", "kind": "binary", "rule": {"activity": "label_window"}}]}
    return Dataset(items=items, behaviors=behaviors, users=users, meta=meta)


def test_labels_follow_the_contract_rules_on_a_hand_built_dataset():
    labels = downstream.all_task_labels(hand_built_dataset())
    # "Books|Toys" counts for Toys; user 4 has no history and is never labelled.
    users, y = labels["future_Toys"]
    assert users.tolist() == [1, 2, 3] and y.tolist() == [1, 0, 0]
    # Only users active in the label window: user 3 drops out.
    users, y = labels["future_Books_active"]
    assert users.tolist() == [1, 2] and y.tolist() == [1, 0]
    # Profile: null label left out, classes 0..K-1 in sorted order of the values.
    users, y = labels["age"]
    assert users.tolist() == [1, 3] and y.tolist() == [1, 0]
    # Label-free: users 1 and 2 act in the label window, user 3 does not; user 4 has no history.
    users, y = labels["churn"]
    assert users.tolist() == [1, 2, 3] and y.tolist() == [1, 1, 0]
    assert all(y.dtype == np.int64 for _, y in labels.values())


# --- tasks too small to score ------------------------------------------------------------


@pytest.mark.parametrize("y, reason", [
    (np.repeat([0, 1], [200, 20]), None),
    (np.repeat([0, 1], [200, 19]), "19 positives and 200 negatives among 219 users; a binary task needs at least 20"),
    (np.repeat([0, 1], [19, 200]), "200 positives and 19 negatives"),
    (np.zeros(300, dtype=np.int64), "all 300 users have the same label"),
    (np.ones(300, dtype=np.int64), "all 300 users have the same label"),
    (np.zeros(0, dtype=np.int64), "no labelled user"),
    (np.repeat([0, 1, 2], [50, 30, 20]), None),
    (np.repeat([0, 1, 2], [50, 12, 30]),
     "its smallest class (index 1 of the sorted label values) has 12 of 92 users; a multiclass task needs at least 20"),
])
def test_skip_reason(y, reason):
    got = downstream.skip_reason(y)
    assert got == reason if reason is None else got.startswith(reason)


def test_small_tasks_are_skipped_with_their_reasons():
    rng = np.random.default_rng(7)
    user_ids = np.arange(300, dtype=np.int64)
    labels = {"fine": (user_ids, rng.integers(0, 2, 300)),
              "rare": (user_ids, (np.arange(300) < 5).astype(np.int64)),  # 5 positives
              "constant": (user_ids[:50], np.zeros(50, dtype=np.int64))}
    dataset = Dataset(items=None, behaviors=None, users=None, meta={"name": "stub", "tasks": []})
    X = rng.normal(size=(300, 4))
    with pytest.warns(UserWarning, match="Task 'rare' skipped: 5 positives and 295 negatives"):
        per_task = downstream.evaluate(X, user_ids, dataset, FAST, seed=0, labels=labels)
    assert list(per_task) == ["fine"]
    assert per_task.skipped == {"rare": "5 positives and 295 negatives among 300 users; a binary task needs at "
                                        "least 20 of each", "constant": "all 50 users have the same label"}


# --- split ------------------------------------------------------------------------------


def test_split_is_stratified_seeded_and_the_same_for_every_method(monkeypatch):
    y = np.repeat([0, 1, 2], [50, 30, 20])
    train, test = downstream.split_indices(y, seed=3)
    assert len(test) == 20 and np.bincount(y[test]).tolist() == [10, 6, 4]
    assert np.intersect1d(train, test).size == 0 and len(train) + len(test) == len(y)
    assert np.array_equal(test, downstream.split_indices(y, seed=3)[1])
    assert not np.array_equal(test, downstream.split_indices(y, seed=4)[1])

    # Two methods on one dataset: the probe sees the same test users for each.
    seen = []
    split = downstream.split_indices

    def recording_split(y, seed, fraction):
        seen.append(split(y, seed, fraction)[1])
        return split(y, seed, fraction)

    monkeypatch.setattr(downstream, "split_indices", recording_split)
    rng = np.random.default_rng(0)
    user_ids, y, dataset = _planted_task(rng, 300)
    for X in (rng.normal(size=(300, 4)), sp.random(300, 50, density=0.2, random_state=1, format="csr")):
        downstream.evaluate(X, user_ids, dataset, FAST, seed=0, labels={"task": (user_ids, y)})
    assert len(seen) == 2 and np.array_equal(seen[0], seen[1])


def _planted_task(rng, n):
    """Users 100..100+n, random binary labels, and a dataset stub (labels are passed explicitly)."""
    user_ids = np.arange(100, 100 + n, dtype=np.int64)
    y = rng.integers(0, 2, n)
    dataset = Dataset(items=None, behaviors=None, users=None,
                      meta={"name": "stub", "tasks": [{"name": "task", "kind": "binary", "rule": {}}]})
    return user_ids, y, dataset


def test_evaluate_matches_rows_by_user_id_not_by_position():
    rng = np.random.default_rng(1)
    user_ids, y, dataset = _planted_task(rng, 400)
    X = np.c_[y + rng.normal(0, 0.7, 400), rng.normal(size=(400, 3))]
    labels = {"task": (user_ids, y)}
    ordered = downstream.evaluate(X, user_ids, dataset, FAST, seed=0, labels=labels)
    perm = rng.permutation(400)
    shuffled = downstream.evaluate(X[perm], user_ids[perm], dataset, FAST, seed=0, labels=labels)
    assert ordered == shuffled
    with pytest.raises(ValueError, match="no row in X"):
        downstream.evaluate(X[1:], user_ids[1:], dataset, FAST, seed=0, labels=labels)


def test_tasks_probed_side_by_side_equal_the_in_process_probes(monkeypatch):
    """Worker processes give the same metrics to the bit, in the order of the labels, dense and sparse."""
    rng = np.random.default_rng(3)
    user_ids, y, dataset = _planted_task(rng, 300)
    X = np.c_[y + rng.normal(0, 1.0, 300), rng.normal(size=(300, 5))]
    labels = {"b": (user_ids, y), "a": (user_ids[::2], 1 - y[::2]), "c": (user_ids[1::2], y[1::2])}
    assert downstream.probe_workers(dataclasses.replace(FAST, workers=2), "cpu", n_tasks=3) == 2
    assert downstream.probe_workers(dataclasses.replace(FAST, workers=8), "cpu", n_tasks=3) == 3
    assert downstream.probe_workers(dataclasses.replace(FAST, workers=2), "cpu", n_tasks=1) == 1
    assert downstream.probe_workers(dataclasses.replace(FAST, workers=2), "cuda", n_tasks=3) == 1
    for features in (X, sp.csr_matrix(np.maximum(X, 0))):
        alone = downstream.evaluate(features, user_ids, dataset, dataclasses.replace(FAST, workers=1), seed=0,
                                    labels=labels)
        submitted = []
        monkeypatch.setattr(downstream.ProcessPoolExecutor, "submit",
                            lambda pool, fn, *args, _submit=downstream.ProcessPoolExecutor.submit:
                            submitted.append(args[0]) or _submit(pool, fn, *args))
        side_by_side = downstream.evaluate(features, user_ids, dataset, dataclasses.replace(FAST, workers=2),
                                           seed=0, labels=labels)
        monkeypatch.undo()
        assert len(submitted) == 3  # the probes did run in the pool, reading X from one shared copy
        assert all(isinstance(shared, downstream.SharedFeatures) for shared in submitted)
        assert list(side_by_side) == ["b", "a", "c"] and side_by_side == alone


def test_shared_features_give_the_rows_of_the_matrix_written(tmp_path):
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(40, 6)).astype(np.float32)
    sparse = sp.random(40, 30, density=0.2, format="coo", random_state=1, dtype=np.float32)
    rows = np.array([5, 0, 39, 5, 17])
    for X, folder in ((dense, tmp_path / "dense"), (sparse, tmp_path / "sparse")):
        folder.mkdir()
        shared = pickle.loads(pickle.dumps(downstream.SharedFeatures(X, folder)))  # as a worker receives it
        got = shared.rows(rows)
        if sp.issparse(X):
            assert sp.issparse(got) and got.shape == (5, 30)
            np.testing.assert_array_equal(got.toarray(), X.tocsr()[rows].toarray())
        else:
            np.testing.assert_array_equal(got, X[rows])


def test_probe_results_kept_on_disk_are_read_back_only_for_the_same_inputs(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    user_ids, y, dataset = _planted_task(rng, 200)
    X = np.c_[y + rng.normal(0, 1.0, 200), rng.normal(size=(200, 3))]
    labels = {"b": (user_ids, y), "a": (user_ids[::2], 1 - y[::2])}
    config = dataclasses.replace(FAST, workers=1)
    probed = []
    real_task = downstream.evaluate_task
    monkeypatch.setattr(downstream, "evaluate_task", lambda X, y, *a: probed.append(len(y)) or real_task(X, y, *a))

    def run(features, run_config=config, seed=0):
        probed.clear()
        return downstream.evaluate(features, user_ids, dataset, run_config, seed, labels=labels, cache_dir=tmp_path)

    first = run(X)
    assert probed == [200, 100] and len(list(tmp_path.glob("*.json"))) == 2
    assert run(X.copy()) == first and probed == []  # equal values: read back, to the bit
    assert run(X, dataclasses.replace(config, workers=2)) == first and probed == []  # workers change nothing
    assert downstream.evaluate(X, user_ids, dataset, config, 0, labels=labels) == first  # what a fresh probe gives
    X_other = X.copy()
    X_other[0, 0] += 1e-6
    run(X_other)
    assert probed == [200, 100]  # one value changed: both tasks hold that user
    run(X, dataclasses.replace(config, max_epochs=3))
    assert probed == [200, 100]
    run(X, seed=1)
    assert probed == [200, 100]
    sparse = sp.csr_matrix(np.maximum(X, 0))
    run(sparse)
    assert probed == [200, 100]
    assert run(sp.coo_matrix(sparse)) == run(sparse) and probed == []  # the same values in another format
    kept_b = tmp_path / f"{downstream.probe_key(X, y, config, 0, 'cpu')}.json"  # task b: every row, in order
    assert kept_b.exists()
    kept_b.write_text("{ truncated")  # unreadable: probed again and rewritten
    assert run(X) == first and probed == [200]
    run(X)
    assert probed == []


# --- probe ------------------------------------------------------------------------------


@pytest.mark.parametrize("sparse_input", [False, True])
def test_planted_label_is_found_and_noise_is_at_chance(sparse_input):
    config = DownstreamConfig(max_epochs=40, patience=5, bootstrap=200)
    rng = np.random.default_rng(0)
    n = 1500
    y = rng.integers(0, 2, n)
    noise = rng.normal(size=(n, 16)) if not sparse_input else sp.random(n, 300, density=0.05, random_state=0).toarray()
    planted = noise.copy()
    planted[:, 0] = y + rng.normal(0, 0.3, n)  # the label, lightly blurred
    as_input = sp.csr_matrix if sparse_input else np.asarray
    hit = downstream.evaluate_task(as_input(planted), y, config, seed=0)
    chance = downstream.evaluate_task(as_input(noise), y, config, seed=0)
    assert hit["auc"] > 0.95 and hit["acc"] > 0.85
    assert 0.4 < chance["auc"] < 0.6
    assert hit["n_test"] == chance["n_test"] == 300


def test_multiclass_planted_signal_and_determinism():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 800)
    X = rng.normal(size=(800, 8))
    X[np.arange(800), y] += 2.5
    first = downstream.evaluate_task(X, y, FAST, seed=5)
    assert first["auc"] > 0.9 and first == downstream.evaluate_task(X, y, FAST, seed=5)


def test_scaling_is_fitted_on_the_training_users_only(monkeypatch):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    X = rng.normal(size=(500, 3))
    train, test = downstream.split_indices(y, seed=0)
    X[test] += 1000.0  # test users far away: any leak moves the fitted mean
    fitted = []
    fit = downstream.fit_scaler
    monkeypatch.setattr(downstream, "fit_scaler", lambda rows: fitted.append(fit(rows)) or fitted[-1])
    downstream.evaluate_task(X, y, FAST, seed=0)
    np.testing.assert_allclose(fitted[0].mean_, X[train].mean(axis=0))
    np.testing.assert_allclose(fitted[0].scale_, X[train].std(axis=0))

    sparse_train = sp.random(200, 40, density=0.1, random_state=0, format="csr")
    scaler = downstream.fit_scaler(sparse_train)
    scaled = scaler.transform(sparse_train)
    assert sp.issparse(scaled) and scaled.nnz == sparse_train.nnz  # never densified
    dense = sparse_train.toarray()
    centred = (dense - dense.mean(axis=0)) * scaler.scale_
    # X * factor kept sparse, minus the offset = the centred input, with unit mean column variance
    np.testing.assert_allclose(scaled.toarray() - scaler.offset_, centred, rtol=1e-5, atol=1e-6)
    assert np.isclose(centred.var(axis=0).mean(), 1.0)


def test_sparse_probe_computes_exactly_the_probe_on_the_densified_centred_input():
    """EmbeddingBag + folded centring (sparse) equals nn.Linear on the centred dense input."""
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 400)
    X = sp.random(400, 60, density=0.1, random_state=1, format="csr", dtype=np.float64)
    X = (X + sp.csr_matrix(np.outer(y, np.eye(60)[0]) * 2.0)).tocsr()  # column 0 carries the label
    fit, val = np.arange(300), np.arange(300, 400)
    scaler = downstream.fit_scaler(X[fit])
    dense = scaler.transform(X).toarray() - scaler.offset_  # what the sparse probe sees, densified
    config = DownstreamConfig(max_epochs=15, patience=3)
    sparse_probe = downstream.train_probe(scaler.transform(X[fit]), y[fit], scaler.transform(X[val]), y[val], 2,
                                          config, seed=3, input_offset=scaler.offset_)
    dense_probe = downstream.train_probe(dense[fit], y[fit], dense[val], y[val], 2, config, seed=3)
    np.testing.assert_allclose(downstream.predict_proba(sparse_probe, scaler.transform(X[val])),
                               downstream.predict_proba(dense_probe, dense[val]), atol=1e-4)
    with pytest.raises(ValueError, match="input_offset"):
        downstream.train_probe(scaler.transform(X[fit]), y[fit], scaler.transform(X[val]), y[val], 2, config, seed=3)


# --- metrics ----------------------------------------------------------------------------


def _scores(rng, n, k):
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, np.round(proba, 2) / np.round(proba, 2).sum(axis=1, keepdims=True)  # rounding makes ties


def test_metrics_equal_scikit_learn():
    rng = np.random.default_rng(4)
    y, proba = _scores(rng, 300, 2)
    m = downstream.classification_metrics(y, proba)
    assert m["auc"] == pytest.approx(roc_auc_score(y, proba[:, 1]))
    assert m["acc"] == pytest.approx(accuracy_score(y, proba.argmax(1)))
    y, proba = _scores(rng, 300, 5)
    m = downstream.classification_metrics(y, proba)
    assert m["auc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert m["acc"] == pytest.approx(accuracy_score(y, proba.argmax(1)))


@pytest.mark.parametrize("k", [2, 4])
def test_resample_auc_equals_scikit_learn_on_each_resample(k):
    rng = np.random.default_rng(5)
    y, proba = _scores(rng, 120, k)
    draws = rng.integers(0, 120, size=(5, 120))
    counts = np.stack([np.bincount(d, minlength=120) for d in draws])
    fast = downstream.resample_auc(y, proba, counts)
    for r, d in enumerate(draws):
        expected = downstream.classification_metrics(y[d], proba[d])["auc"]
        assert fast[r] == pytest.approx(expected, abs=1e-12)


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_users():
    rng = np.random.default_rng(6)
    widths = []
    for n in (100, 2000):
        y, proba = _scores(rng, n, 2)
        lo, hi = downstream.bootstrap_auc_ci(y, proba, n_resamples=300, seed=0)
        assert lo < downstream.classification_metrics(y, proba)["auc"] < hi
        assert downstream.bootstrap_auc_ci(y, proba, n_resamples=300, seed=0) == [lo, hi]
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2
    one_class = downstream.bootstrap_auc_ci(np.array([0, 0, 0, 1]), np.eye(2)[[0, 0, 0, 1]], 50, seed=0)
    assert one_class[0] == one_class[1] == 1.0  # resamples without a positive are skipped


# --- evaluate_run -----------------------------------------------------------------------


def test_evaluate_run_skips_methods_without_artifacts_and_writes_valid_results(tiny_dataset, tmp_path):
    from data_prep.schema import load_dataset

    dataset = load_dataset(tiny_dataset)
    run = RunPaths(tmp_path / "run").make()
    rng = np.random.default_rng(0)
    save_npy(run.item_embeddings, rng.normal(size=(len(dataset.items), 8)).astype(np.float32))
    user_ids = np.unique(dataset.history()["user_id"])
    save_npz(run.user_reps, user_ids=user_ids, reps=rng.normal(size=(len(user_ids), 12)).astype(np.float32))
    config = for_scale("tiny").downstream
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results, seconds = evaluate_run(run.root, tiny_dataset, ["RFM", "MeanItemEmb", "BoI", "LURM(2M)", "LURM"],
                                        config, seed=0, device="cpu", progress=False)
    skipped = [str(w.message) for w in caught if "Skipping method" in str(w.message)]
    assert len(skipped) == 2 and "centroids.npy" in skipped[0] and "03_interests_boi" in skipped[0]
    assert "smen.pt" in skipped[1]
    # tiny synthetic: baby_age's smallest class has 13 users, so it is skipped; every other task is scored
    assert results["skipped"] == {"baby_age": "its smallest class (index 0 of the sorted label values) has 13 of "
                                              "122 users; a multiclass task needs at least 20 users in every class"}
    assert set(results["tasks"]) == {t["name"] for t in dataset.tasks} - {"baby_age"}
    assert all(set(methods) == {"RFM", "MeanItemEmb", "LURM"} for methods in results["tasks"].values())
    assert set(seconds) == {"RFM", "MeanItemEmb", "LURM"} and all(s["seconds"] >= 0 for s in seconds.values())
    assert load_json(run.results) == results
    rows = [line.split(" |")[0] for line in run.results.with_suffix(".md").read_text().splitlines()[4:]]
    assert rows[:3] == ["| RFM", "| MeanItemEmb", "| LURM"] and "| BoI" not in rows  # no row for a skipped method

    main(["--run-dir", str(run.root), "--dataset", str(tiny_dataset), "--scale", "tiny", "--methods", "LURM",
          "--seed", "1"])
    assert load_json(run.results)["split_seed"] == 1


def test_doc2vec_trained_in_a_worker_gives_the_in_process_results_in_the_tables_order(tiny_dataset, tmp_path,
                                                                                      monkeypatch):
    from lurm_lite import evaluate

    config = for_scale("tiny").downstream
    methods = ["TF-IDF", "Doc2Vec", "RFM"]
    alone, _ = evaluate_run(tmp_path / "alone", tiny_dataset, methods, dataclasses.replace(config, workers=1),
                            seed=0, device="cpu", progress=False)
    started = []
    monkeypatch.setattr(downstream.InBackground, "__init__",
                        lambda self, fn, args, workers, _init=downstream.InBackground.__init__:
                        started.append(args[0].__name__) or _init(self, fn, args, workers))
    beside, seconds = evaluate_run(tmp_path / "beside", tiny_dataset, methods, dataclasses.replace(config, workers=2),
                                   seed=0, device="cpu", progress=False)
    assert started == ["doc2vec_features"]  # it did train in the pool
    assert beside == alone and list(beside["tasks"]["age"]) == methods
    assert seconds["Doc2Vec"]["seconds"] >= seconds["Doc2Vec"]["train_seconds"] > 0
    # read after the supervised competitors, whose trainings fill the other cores meanwhile
    assert evaluate._evaluation_order(evaluate.METHODS, {"Doc2Vec": None}) == [
        "TF-IDF", "TextCNN", "HAN", "Doc2Vec", "PTUM", "SUMN", "RFM", "MeanItemEmb", "BoI", "LURM(2M)", "LURM"]
    assert evaluate._evaluation_order(["Doc2Vec", "RFM"], {"Doc2Vec": None}) == ["Doc2Vec", "RFM"]
    assert evaluate._evaluation_order(evaluate.METHODS, {}) == list(evaluate.METHODS)
