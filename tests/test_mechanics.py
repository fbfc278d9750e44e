"""Notebook 04's toy walk-through (lurm_lite.mechanics): toy users -> b_t -> ScaleBatch -> r on its timeline."""

import numpy as np
import pytest
import torch

from lurm_lite import mechanics

USERS = {"reader": {"2016-11": {0: 3, 2: 1}, "2017-01": {0: 2}},
         "runner": {"2015-09": {4: 1}, "2017-03": {4: 3, 1: 1}}}


def test_toy_boi_counts_each_month_as_eq_4():
    boi = mechanics.toy_boi(USERS, n_interests=5)
    month = boi["month"]
    assert month.user_ids.tolist() == [0, 1] and np.diff(month.user_ptr).tolist() == [2, 2]
    assert [str(np.datetime64(int(p), "M")) for p in month.period] == ["2016-11", "2017-01", "2015-09", "2017-03"]
    np.testing.assert_allclose(month.matrix.toarray()[0], np.log1p([3, 0, 1, 0, 0]), rtol=1e-6)
    np.testing.assert_allclose(month.matrix.toarray()[3], np.log1p([0, 1, 0, 0, 3]), rtol=1e-6)
    np.testing.assert_allclose(boi["year"].matrix.toarray()[1], np.log1p([2, 0, 0, 0, 0]), rtol=1e-6)  # reader 2017
    with pytest.raises(ValueError, match="interest 7"):
        mechanics.toy_boi({"x": {"2017-01": {7: 1}}}, n_interests=5)


def test_toy_batch_puts_every_user_on_a_fixed_interval_timeline_to_the_window_end():
    batch = mechanics.toy_batch(mechanics.toy_boi(USERS, 5), ("month", "year"), end="2017-06")
    x = batch["month"]
    assert x.lengths.tolist() == [7, 21]  # 2016-11..2017-05 and 2015-09..2017-05
    assert x.row_user.tolist() == [0, 0, 1, 1] and x.row_step.tolist() == [0, 2, 0, 18]
    assert x.interests.tolist() == [0, 1, 2, 4]
    assert batch["year"].lengths.tolist() == [2, 3] and batch["year"].row_step.tolist() == [0, 1, 0, 2]


def test_timeline_grid_places_each_row_at_its_step_and_zeros_elsewhere():
    batch = mechanics.toy_batch(mechanics.toy_boi(USERS, 5), ("month",), end="2017-06")
    x = batch["month"]
    r = torch.arange(4 * 2 * 3, dtype=torch.float32).view(4, 2, 3) + 1  # (n_rows, M, H), no zero entry
    grid = mechanics.timeline_grid(r, x)
    assert grid.shape == (2, 21, 2, 3)
    torch.testing.assert_close(grid[1, 18], r[3])
    torch.testing.assert_close(grid[0, 2], r[1])
    assert int((grid.abs().sum(dim=(2, 3)) > 0).sum()) == 4  # only the four non-empty months


def test_toy_smen_is_seeded_and_tables_name_interests_and_anchors():
    a, b = mechanics.toy_smen(5, hidden=4, anchors=3, seed=1), mechanics.toy_smen(5, hidden=4, anchors=3, seed=1)
    torch.testing.assert_close(a.multi_anchor.W_e, b.multi_anchor.W_e)
    assert not a.training and a.anchors == 3 and a.hidden == 4
    assert not any(p.requires_grad for p in a.parameters())
    names = [f"{j} name" for j in range(5)]
    table = mechanics.boi_table(mechanics.toy_boi(USERS, 5)["month"], list(USERS), names)
    assert list(table.columns) == ["0 name", "1 name", "2 name", "4 name"]  # interest 3 is never used
    assert table.loc[("runner", "2017-03"), "4 name"] == pytest.approx(np.log1p(3), abs=1e-3)  # shown to 3 decimals
    alpha = np.full((5, 3), 1 / 3)
    assert mechanics.alpha_table(alpha, names, [4]).columns.tolist() == ["anchor 0", "anchor 1", "anchor 2"]


def test_anchor_separation_scores_separate_anchors_above_mixed_ones():
    rng = np.random.default_rng(0)
    anchor = np.repeat(np.arange(3), 30)  # (90,)
    centres = np.eye(8)[:3] * 5
    separate = centres[anchor] + rng.normal(size=(90, 8)) * 0.3
    mixed = rng.normal(size=(90, 8))
    measures, tsne = mechanics.anchor_separation({"mixed": mixed, "separate": separate}, anchor, seed=0,
                                                 perplexity=10)
    assert set(measures) == {"silhouette", "silhouette_tsne", "knn_anchor_purity"}
    assert measures["knn_anchor_purity"]["separate"] == pytest.approx(1.0)
    assert measures["knn_anchor_purity"]["mixed"] < 0.6
    assert measures["silhouette"]["separate"] > 0.5 > measures["silhouette"]["mixed"]
    assert tsne["separate"].shape == (90, 2)


def test_top_interests_per_anchor_ranks_by_alpha_times_weight():
    alpha = np.array([[0.9, 0.1], [0.5, 0.5], [0.0, 1.0]])  # (D=3, M=2)
    weight = np.array([1.0, 10.0, 1.0])  # interest 1 is where the behaviours are
    table = mechanics.top_interests_per_anchor(alpha, weight, ["0 Books", "1 Toys", "2 Home"], top=2)
    column = table.iloc[:, 0]
    assert column["anchor 0"] == "1 Toys (85%); 0 Books (15%)"  # masses 5 and 0.9
    assert column["anchor 1"] == "1 Toys (82%); 2 Home (16%)"  # masses 5, 1 and 0.1 of 6.1
