"""Competitor representations (§3.3, Table 5): values and the one-row-per-user contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.feature_extraction.text import TfidfVectorizer

from data_prep.schema import date_to_ts
from lurm_lite import baselines
from lurm_lite.boi import build_boi
from lurm_lite.periods import window_start_ts
from lurm_lite.smen import SMEN
from lurm_lite.user_training import encode_users

DAY = 86_400
HISTORY_END = date_to_ts("2018-01-01")
TITLES = np.array(["red apple", "green apple pie", "blue car", "fast red car", "old book"], dtype=object)
INTEREST = np.array([0, 0, 1, 1, 2])  # item -> interest, D = 3
EMBEDDINGS = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)


def history() -> pd.DataFrame:
    """User 7: apple, car, apple (the last one recent); user 3: one old book; user 5 has none."""
    return pd.DataFrame({
        "user_id": np.array([3, 7, 7, 7], dtype=np.int64),
        "item_id": np.array([4, 0, 2, 1], dtype=np.int32),
        "ts": np.array([HISTORY_END - 400 * DAY, HISTORY_END - 300 * DAY, HISTORY_END - 200 * DAY,
                        HISTORY_END - 10 * DAY], dtype=np.int64),
    })


ITEMS = pd.DataFrame({"item_id": np.arange(5), "title": TITLES, "category": ["Food", "Food", "Cars", "Cars", "Books"]})
USERS = np.array([7, 5, 3], dtype=np.int64)  # not sorted, and user 5 has no history


def test_documents_join_titles_in_time_order_and_empty_without_history():
    docs = baselines.user_documents(history(), TITLES, USERS)
    assert docs == ["red apple blue car green apple pie", "", "old book"]


def test_tfidf_is_scikit_learn_on_the_user_documents():
    X = baselines.tfidf_features(history(), ITEMS, USERS)
    expected = TfidfVectorizer().fit_transform(["red apple blue car green apple pie", "", "old book"])
    assert X.format == "csr" and X.dtype == np.float32
    np.testing.assert_allclose(X.toarray(), expected.toarray(), rtol=1e-6)
    assert baselines.tfidf_features(history(), ITEMS, USERS, max_features=2).shape == (3, 2)


@pytest.mark.parametrize("max_features", [None, 40, 7])
def test_tfidf_from_title_counts_is_scikit_learn_on_the_documents_to_the_bit(max_features):
    rng = np.random.default_rng(0)
    words = [f"w{k}" for k in range(60)] + ["Apple", "APPLE", "a", "x1", "naïve", "café-bar"]
    titles = [" ".join(rng.choice(words, rng.integers(0, 6))) for _ in range(80)]  # some empty, repeats, ties
    items = pd.DataFrame({"item_id": np.arange(80), "title": titles})
    n = 2_000
    behaviours = pd.DataFrame({"user_id": np.sort(rng.integers(0, 120, n)), "item_id": rng.integers(0, 80, n),
                               "ts": np.arange(n)})
    users = np.r_[rng.permutation(np.arange(130)), 500]  # unordered; users 120..129 and 500 have no behaviour
    got = baselines.tfidf_features(behaviours, items, users, max_features)
    documents = baselines.user_documents(behaviours, items["title"].to_numpy(), users)
    expected = TfidfVectorizer(max_features=max_features, dtype=np.float32).fit_transform(documents).tocsr()
    assert got.dtype == np.float32 and got.shape == expected.shape and got.has_sorted_indices
    expected.sort_indices()  # the vectorizer leaves each row's columns in first-seen order
    for a, b in ((got.indptr, expected.indptr), (got.indices, expected.indices), (got.data, expected.data)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"no item title .* holds a word .*\(items.title, e.g. 'a'\)"):
        baselines.tfidf_features(behaviours, items.assign(title="a"), users)
    wordless_touched = items.assign(title=np.where(np.isin(items.item_id, behaviours.item_id[:5]), "b", "two words"))
    with pytest.raises(ValueError, match=r"\(items.title, e.g. 'b'\)"):  # the behaviours touch only wordless titles
        baselines.tfidf_features(behaviours[:5], wordless_touched, users)


def test_boi_is_log1p_interest_counts_over_the_whole_life():
    X = baselines.boi_features(history(), INTEREST, 3, USERS).toarray()
    np.testing.assert_allclose(X, np.log1p([[2, 1, 0], [0, 0, 0], [0, 0, 1]]), rtol=1e-6)


def test_mean_item_embedding_averages_each_behaviour():
    X = baselines.mean_item_embedding(history(), EMBEDDINGS, USERS)
    np.testing.assert_allclose(X, [EMBEDDINGS[[0, 2, 1]].mean(0), np.zeros(3), EMBEDDINGS[4]])


def test_rfm_is_recency_log_frequency_and_tenure_in_months():
    X = baselines.rfm_features(history(), USERS, HISTORY_END)
    month = 30.4375
    assert X.shape == (3, 3) and X.dtype == np.float32
    # user 7: last behaviour 10 days, first 300 days before the end, 3 behaviours
    np.testing.assert_allclose(X[0], [10 / month, np.log(4), 300 / month], rtol=1e-6)
    # user 3: one behaviour 400 days before the end
    np.testing.assert_allclose(X[2], [400 / month, np.log(2), 400 / month], rtol=1e-6)
    # user 5, no behaviour: frequency 0, recency = tenure = the largest tenure seen (user 3's)
    np.testing.assert_allclose(X[1], [400 / month, 0, 400 / month], rtol=1e-6)


def test_rfm_ignores_behaviour_order_and_users_not_asked_for():
    shuffled = pd.concat([history().iloc[::-1], pd.DataFrame({"user_id": [99], "item_id": [0], "ts": [0]})])
    np.testing.assert_array_equal(baselines.rfm_features(shuffled, USERS, HISTORY_END),
                                  baselines.rfm_features(history(), USERS, HISTORY_END))
    assert not baselines.rfm_features(history(), np.array([5, 6]), HISTORY_END).any()  # nobody with a behaviour


def test_doc2vec_is_deterministic_and_zero_without_history():
    X = baselines.doc2vec_features(history(), ITEMS, USERS, dim=8, epochs=5, seed=0, min_count=1)
    assert X.shape == (3, 8) and X.dtype == np.float32
    assert X[0].any() and not X[1].any() and X[2].any()
    np.testing.assert_array_equal(X, baselines.doc2vec_features(history(), ITEMS, USERS, 8, 5, 0, min_count=1))


def test_documents_of_very_active_users_are_built_whole():
    n = 12_000  # more words than gensim trains per document: fed in pieces
    many = pd.DataFrame({"user_id": np.full(n, 9, dtype=np.int64), "item_id": np.arange(n, dtype=np.int32) % 5,
                         "ts": np.arange(n, dtype=np.int64)})
    doc = baselines.user_documents(many, TITLES, np.array([9]))[0]
    assert len(doc.split()) == sum(len(TITLES[i].split()) for i in np.arange(n) % 5)
    assert baselines.doc2vec_features(many, ITEMS, np.array([9]), dim=4, epochs=1, seed=0, min_count=1).any()


def small_smen_and_boi():
    torch.manual_seed(0)
    model = SMEN(n_interests=3, hidden=4, anchors=2, scales=("month", "year"), sparse=False)
    h = history()
    boi = build_boi(h["user_id"].to_numpy(), h["item_id"].to_numpy(), h["ts"].to_numpy(), INTEREST, 3)
    return model, boi


def test_lurm_2m_sees_only_the_last_two_months():
    model, boi = small_smen_and_boi()
    X = baselines.lurm_last_months(model, boi, USERS, HISTORY_END, "cpu")
    expected = encode_users(model, boi, USERS, "cpu", last_months=2, history_end_ts=HISTORY_END)
    np.testing.assert_array_equal(X, expected)
    h = history()
    recent = h[h["ts"] >= window_start_ts(HISTORY_END, 2)]  # the 2-month BoI itself, at every scale
    recent_boi = build_boi(recent["user_id"].to_numpy(), recent["item_id"].to_numpy(), recent["ts"].to_numpy(),
                           INTEREST, 3)
    np.testing.assert_allclose(X, encode_users(model, recent_boi, USERS, "cpu", history_end_ts=HISTORY_END),
                               rtol=1e-6, atol=1e-7)
    whole_life = encode_users(model, boi, USERS, "cpu")
    assert X[0].any() and not np.allclose(X[0], whole_life[0])  # user 7: only the recent apple pie counts
    assert not X[2].any() and whole_life[2].any()  # user 3's only behaviour is 400 days old


@pytest.mark.parametrize("method", ["tfidf", "doc2vec", "rfm", "boi", "mean", "lurm_2m"])
def test_rows_follow_the_order_of_the_given_user_ids(method):
    model, boi = small_smen_and_boi()
    build = {
        "tfidf": lambda users: baselines.tfidf_features(history(), ITEMS, users).toarray(),
        "doc2vec": lambda users: baselines.doc2vec_features(history(), ITEMS, users, 8, 5, 0, min_count=1),
        "rfm": lambda users: baselines.rfm_features(history(), users, HISTORY_END),
        "boi": lambda users: baselines.boi_features(history(), INTEREST, 3, users).toarray(),
        "mean": lambda users: baselines.mean_item_embedding(history(), EMBEDDINGS, users),
        "lurm_2m": lambda users: baselines.lurm_last_months(model, boi, users, HISTORY_END, "cpu"),
    }[method]
    X = build(USERS)
    assert X.shape[0] == len(USERS)
    for perm in ([2, 0, 1], [1, 2, 0]):
        np.testing.assert_allclose(build(USERS[perm]), X[perm], rtol=1e-5, atol=1e-7)
