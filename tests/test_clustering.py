import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from lurm_lite.clustering import (
    _normalise,
    _split_counts,
    assign_hard,
    assign_soft,
    cluster_report,
    collapse_warning,
    example_interests,
    interest_labels,
    interest_members,
    report_summary,
    topic_recovery,
    mean_cosine_to_centroid,
    train_centroids,
    two_level_centroids,
)
from lurm_lite.config import ClusteringConfig


def _blobs(n_blobs, per_blob, dim, spread, seed=0):
    """Unit vectors scattered around ``n_blobs`` random directions on the sphere."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_blobs, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_blobs), per_blob)
    points = centres[labels] + spread * rng.normal(size=(len(labels), dim)) / np.sqrt(dim)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32), labels


def test_kmeans_recovers_well_separated_blobs():
    points, labels = _blobs(n_blobs=10, per_blob=200, dim=16, spread=0.2)
    config = ClusteringConfig(niter=20, sample_size=1500, init="kmeans++")
    centroids = train_centroids(points, 10, config, seed=0)
    assert centroids.shape == (10, 16) and centroids.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    predicted = assign_hard(points, centroids)
    assert predicted.dtype == np.int64
    assert normalized_mutual_info_score(labels, predicted) > 0.99
    assert adjusted_rand_score(labels, predicted) > 0.99


def test_hard_assignment_is_the_nearest_centroid_by_cosine():
    rng = np.random.default_rng(1)
    points, centroids = rng.normal(size=(300, 8)), rng.normal(size=(20, 8))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    np.testing.assert_array_equal(assign_hard(points, centroids), (unit(points) @ unit(centroids).T).argmax(1))


def test_soft_assignment_weights_top_k_by_cosine_and_rows_sum_to_one():
    centroids = np.eye(4, dtype=np.float32)
    points = np.array([[3.0, 1.0, 0.0, 0.0],  # cosines 0.949, 0.316 with c_0, c_1
                       [-4.0, -3.0, -2.0, -1.0]], dtype=np.float32)  # no positive cosine: all on c_3
    soft = assign_soft(points, centroids, top_k=2)
    assert soft.shape == (2, 4) and soft.dtype == np.float32
    np.testing.assert_allclose(soft.toarray(), [[0.75, 0.25, 0, 0], [0, 0, 0, 1.0]], atol=1e-6)

    points, _ = _blobs(n_blobs=5, per_blob=50, dim=8, spread=1.0, seed=2)
    soft = assign_soft(points, train_centroids(points, 12, ClusteringConfig(niter=5), seed=0), top_k=3)
    np.testing.assert_allclose(np.asarray(soft.sum(axis=1)).ravel(), 1.0, atol=1e-6)
    assert np.all(np.diff(soft.indptr) <= 3)


def test_split_counts_is_proportional_bounded_and_exact():
    sizes = np.array([1000, 10, 1, 0, 3, 500])
    counts = _split_counts(sizes, 100)
    assert counts.sum() == 100
    assert np.all(counts <= sizes) and np.all(counts[sizes > 0] >= 1) and counts[3] == 0
    assert counts[0] > counts[5] > counts[1]
    np.testing.assert_array_equal(_split_counts(np.array([2, 2, 5]), 9), [2, 2, 5])


def test_large_d_path_objective_within_two_percent_of_flat_kmeans():
    points, _ = _blobs(n_blobs=150, per_blob=40, dim=24, spread=0.8, seed=3)
    config = ClusteringConfig(niter=15, sample_size=len(points), large_d_threshold=10**9)
    flat = train_centroids(points, 400, config, seed=0)
    two_level = two_level_centroids(points, 400, config, seed=0)
    assert two_level.shape == (400, 24)
    flat_objective = mean_cosine_to_centroid(points, flat, assign_hard(points, flat))
    two_level_objective = mean_cosine_to_centroid(points, two_level, assign_hard(points, two_level))
    assert two_level_objective > 0.98 * flat_objective

    # The IVF assignment of the large-D path agrees with exact search on nearly every item.
    fast = assign_hard(points, two_level, nprobe=8)
    exact = assign_hard(points, two_level)
    assert (fast == exact).mean() > 0.97
    assert mean_cosine_to_centroid(points, two_level, fast) > 0.995 * two_level_objective


def test_train_centroids_takes_the_large_d_path_from_the_threshold():
    points = _normalise(_blobs(n_blobs=20, per_blob=30, dim=8, spread=0.5, seed=4)[0])
    config = ClusteringConfig(niter=5, large_d_threshold=50, coarse_clusters=6)
    centroids = train_centroids(points, 60, config, seed=0)
    np.testing.assert_allclose(centroids, two_level_centroids(points, 60, config, seed=0), atol=1e-6)


def test_too_few_items_for_d_is_a_clear_error():
    with pytest.raises(ValueError, match=r"choose D <= 5 \(notebook 03: -p N_INTERESTS 1\)"):
        train_centroids(np.ones((5, 4), np.float32), 10, ClusteringConfig(), seed=0)


def test_cluster_report_counts_sizes_and_empty_clusters():
    report = cluster_report(np.array([0, 0, 2, 2, 2, 4]), 5)
    np.testing.assert_array_equal(report["sizes"], [2, 0, 3, 0, 1])
    assert report["n_empty"] == 2 and report["empty_clusters"].tolist() == [1, 3]
    assert report["size_max"] == 3 and report["n_items"] == 6
    assert report["largest_share"] == pytest.approx(0.5)
    assert report["imbalance"] == pytest.approx(5 * (4 + 9 + 1) / 36)
    soft = assign_soft(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), top_k=1)
    np.testing.assert_allclose(cluster_report(soft, 3)["sizes"], [1, 1, 1])


def test_example_interests_show_what_exists_when_clusters_are_few_or_small():
    rng = np.random.default_rng(0)
    sizes = np.array([0, 5, 1, 0, 9, 2, 4])
    chosen = example_interests(sizes, 3, rng)
    assert sorted(chosen.tolist()) == [1, 4, 6] and chosen.dtype == np.int64  # the three of >= 3 items
    assert example_interests(np.array([0, 2, 0, 1]), 3, rng).tolist() == [1, 3]  # none sizeable: largest first
    assert sorted(example_interests(np.array([7, 0, 1, 2]), 3, rng).tolist()) == [0, 2, 3]  # one sizeable, topped up
    assert example_interests(np.array([300]), 3, rng).tolist() == [0]  # every item in one interest
    assert example_interests(np.zeros(4, np.int64), 3, rng).size == 0
    picks = {tuple(sorted(example_interests(np.full(10, 5), 3, np.random.default_rng(s)))) for s in range(5)}
    assert len(picks) > 1  # drawn at random among the sizeable ones


def _catalogue():
    """Six items in three interests: thrillers, a mixed Drama|War / War pair, ids-only titles."""
    items = pd.DataFrame({
        "title": ["Dark Murder Thriller", "Murder at Night thriller", "Night Garden",  # interest 0
                  "War Stories 1944", "The War Garden",  # interest 1
                  "item B0001"],  # interest 2: a fallback title, key in one title only
        "category": ["Books", "Books", "Home", "Drama|War", "War", None],
    })
    return items, np.array([0, 0, 0, 1, 1, 2])


def test_interest_labels_name_the_dominant_category_and_distinctive_words():
    items, item_interest = _catalogue()
    labels = interest_labels(item_interest, items, top_words=2, n_interests=4)
    # interest 0: Books 2 items vs Home 1; murder, night and thriller each in 2 of its 3 titles
    # and in 2 titles overall (equal scores, alphabetical); garden in 1 of 3 ranks below
    assert labels[0] == "0 Books: murder, night"
    # interest 1: War 1.5 items vs Drama 0.5; 'war' is the category's own word, 'garden' is in
    # 2 titles overall (df 2), 'stories' and 'the' in one title only (left out), 1944 is digits
    assert labels[1] == "1 War: garden"
    assert labels[2] == "2"  # no category, 'item' in one title only, 'b0001' a key: nothing to say
    assert labels[3] == "3 (empty)"
    assert len(interest_labels(item_interest, items)) == 3  # D from the hard assignment


def test_interest_labels_leave_out_stop_words():
    items = pd.DataFrame({"title": ["Salt and Pepper", "Salt and Vinegar", "Pepper Mill", "Red Car", "Blue Car", "Car Set"],
                          "category": ["Food"] * 3 + ["Toys"] * 3})
    # interest 0: 'and', 'pepper', 'salt' each in 2 of its titles and 2 overall: 'and' would come first
    assert interest_labels(np.array([0, 0, 0, 1, 1, 1]), items)[0] == "0 Food: pepper, salt"


def test_interest_labels_with_behaviour_weights_and_soft_assignment():
    items, item_interest = _catalogue()
    weight = np.array([1, 1, 10, 1, 1, 1])  # the Home item is where the behaviours are
    assert interest_labels(item_interest, items, item_weight=weight)[0].startswith("0 Home: ")
    soft = sp.csr_matrix(np.eye(3)[item_interest])  # one-hot as a soft matrix: the same labels
    assert interest_labels(soft, items) == interest_labels(item_interest, items)
    half = np.eye(3)[item_interest] * 0.5
    half[:, 2] += 0.5  # every item half in interest 2: it now holds all categories, Books the largest
    labels = interest_labels(sp.csr_matrix(half), items, top_words=1)
    assert labels[2].startswith("2 Books: ") and labels[0].startswith("0 Books")


def test_interest_labels_on_empty_and_ids_only_titles():
    items = pd.DataFrame({"title": ["", "item 12", "item 13", "item 14"], "category": ["", "", "Toys", "Toys"]})
    assert interest_labels(np.array([0, 0, 1, 1]), items) == ["0", "1 Toys"]  # 'item' in 3 of 4 titles: left out


def test_report_summary_collapse_warning_and_members():
    report = cluster_report(np.array([0, 0, 0, 1]), 2)
    summary = report_summary(report)
    assert summary["largest_share"] == 0.75 and "sizes" not in summary and "empty_clusters" not in summary
    assert "75%" in collapse_warning(report) and collapse_warning(cluster_report(np.array([0, 1]), 2)) is None
    assert collapse_warning(cluster_report(np.array([0, 0]), 1)) is None  # D = 1: nothing to warn about
    items, item_interest = _catalogue()
    members = interest_members(item_interest, items, 1)
    assert list(members.index) == [3, 4] and list(members["category"]) == ["Drama|War", "War"]


def test_topic_recovery_scores_learned_clusters_above_random_embeddings():
    points, labels = _blobs(n_blobs=5, per_blob=60, dim=16, spread=0.2, seed=3)
    config = ClusteringConfig(n_interests=5, niter=10, init="kmeans++")
    assignment = assign_hard(points, train_centroids(points, 5, config, seed=0))
    recovery = topic_recovery(points, assignment, labels, config, seed=0)
    assert recovery["nmi_learned"] > 0.8 and recovery["nmi_random_embeddings"] < 0.3
