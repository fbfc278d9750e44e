"""SMEN (§2.2, eq. 5-9): the sparse multi-anchor path against a dense reference, the GRU
time aggregation, the multi-scale switch, the projection head, and the model variants."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lurm_lite.boi import BoISequences
from lurm_lite.smen import SMEN, MultiAnchor, ScaleSwitch, collate_rows, load_smen, row_ranges, save_smen
from lurm_lite.testing import dense_multi_anchor, random_boi


def whole_batch(seqs: BoISequences, users=None):
    users = np.arange(seqs.n_users) if users is None else np.asarray(users)
    return collate_rows(seqs, *row_ranges(seqs.user_ptr[users], seqs.user_ptr[users + 1]))


def test_collate_rows_flattens_the_csr_rows_of_each_user():
    seqs = random_boi(6, 40, 5, 6, seed=1, fixed={2: 0})
    users = np.array([3, 2, 0])
    x = whole_batch(seqs, users)
    lengths = np.diff(seqs.user_ptr)[users]
    assert x.lengths.tolist() == lengths.tolist() and x.n_rows == lengths.sum()
    assert x.row_user.tolist() == np.repeat([0, 1, 2], lengths).tolist()
    assert x.row_step.tolist() == [s for n in lengths for s in range(n)]
    # the non-zeros rebuild the rows b_t of the batch exactly
    rebuilt = np.zeros((x.n_rows, 40), np.float32)
    rebuilt[x.nz_row.numpy(), x.interests[x.nz_col].numpy()] = x.nz_value.numpy()
    expected = sp.vstack([seqs.user_rows(k) for k in users]).toarray()
    np.testing.assert_array_equal(rebuilt, expected)
    assert torch.equal(x.interests, torch.unique(x.interests))  # U distinct interests, sorted


def test_alpha_sums_to_one_over_anchors():
    module = MultiAnchor(n_interests=30, hidden=8, anchors=5)
    alpha = module.alpha(module.W_e)  # (D, M)
    assert alpha.shape == (30, 5)
    torch.testing.assert_close(alpha.sum(dim=1), torch.ones(30))
    assert (alpha > 0).all()


@pytest.mark.parametrize("path", ["V", "AnchorBags"])
@pytest.mark.parametrize("anchors", [1, 4])
def test_sparse_multi_anchor_equals_dense_reference_in_values_and_gradients(anchors, path):
    """Both paths of eq. (5): S (alpha (x) W^e) for small U, AnchorBags (embedding_bag) beyond."""
    torch.manual_seed(0)
    seqs = random_boi(7, 60, 4, 8, seed=2, fixed={4: 0})
    x = whole_batch(seqs)
    module = MultiAnchor(n_interests=60, hidden=6, anchors=anchors).double()
    module.V_MAX_BYTES = 2**40 if path == "V" else 0
    weights = torch.randn(x.n_rows, anchors, 6, dtype=torch.float64)  # a loss that weighs every output

    r_sparse = module(x)  # (n_rows, M, H)
    (r_sparse * weights).sum().backward()
    grads = {name: p.grad.to_dense() if p.grad.is_sparse else p.grad for name, p in module.named_parameters()}

    params = {name: p.detach().clone().requires_grad_() for name, p in module.named_parameters()}
    b = torch.from_numpy(seqs.matrix.toarray()).double()  # (n_rows, D)
    r_dense = dense_multi_anchor(b, params["W_e"], params["W_a"], params["W_p"])
    (r_dense * weights).sum().backward()

    torch.testing.assert_close(r_sparse, r_dense, rtol=1e-12, atol=1e-12)
    for name in ("W_e", "W_a", "W_p"):
        torch.testing.assert_close(grads[name], params[name].grad, rtol=1e-10, atol=1e-12)


def test_the_sparse_product_path_is_taken_only_on_the_cpu_and_while_V_fits():
    """cuSPARSE's product is not deterministic (MultiAnchor.forms_V): a CUDA or MPS batch of any
    size takes AnchorBags, so encoding the same users twice there gives the same bits."""
    module = MultiAnchor(n_interests=10_000, hidden=128, anchors=10)
    fits = module.V_MAX_BYTES // (10 * 128 * 4)  # largest U whose V fits
    assert module.forms_V(fits, torch.device("cpu")) and not module.forms_V(fits + 1, torch.device("cpu"))
    for accelerator in ("cuda", "mps"):
        assert not module.forms_V(1, torch.device(accelerator))


def test_W_e_gradient_is_sparse_and_touches_only_the_interests_present():
    seqs = random_boi(5, 1000, 3, 5, seed=3)
    x = whole_batch(seqs)
    model = SMEN(n_interests=1000, hidden=8, anchors=3, scales=("month",))
    model.project(model({"month": x})).square().sum().backward()
    grad = model.multi_anchor.W_e.grad
    assert grad.is_sparse
    touched = torch.unique(grad.coalesce().indices()[0])
    assert torch.equal(touched, x.interests)  # U rows of W^e, not D
    assert model.sparse_parameters() == [model.multi_anchor.W_e]
    assert all(p.grad is not None and not p.grad.is_sparse for p in model.dense_parameters())


def test_gru_gives_the_last_hidden_state_of_each_anchor_sequence_and_zero_for_empty():
    torch.manual_seed(0)
    seqs = random_boi(5, 50, 6, 6, seed=4, fixed={1: 0, 2: 1, 3: 6})  # empty, one period, six
    model = SMEN(n_interests=50, hidden=8, anchors=3, scales=("month",)).eval()
    x = whole_batch(seqs)
    with torch.no_grad():
        r_tilde = model({"month": x})  # (B, M, H)
        r = model.multi_anchor(x)  # (n_rows, M, H)
        for k in range(seqs.n_users):
            rows = r[x.row_user == k]  # (N, M, H)
            if len(rows) == 0:
                assert torch.equal(r_tilde[k], torch.zeros(3, 8))
                continue
            _, h = model.time_aggregation.gru(rows.transpose(0, 1))  # M sequences of length N
            torch.testing.assert_close(r_tilde[k], h[0], rtol=1e-5, atol=1e-6)


def test_packed_gru_equals_one_sequence_at_a_time_in_values_and_gradients():
    """Fixed-interval timelines (steps with no row are input 0) of unequal lengths, run as one
    time-major packed batch with the input gates of the non-empty steps only and the
    hand-written backward pass: the same states as a plain nn.GRU over each (user, anchor)
    sequence alone, with and without autograd, and the same gradients for r and for every GRU
    weight and bias (b_ih also reaches the empty steps)."""
    from lurm_lite.smen import ScaleBatch, TimeAggregation
    torch.manual_seed(0)
    M, H = 3, 4
    steps = [[0, 2, 5], [], [1], [0, 1, 2, 3], [4], [0, 6]]  # row steps of each user (user 1: empty)
    lengths = [7, 0, 2, 4, 5, 7]  # N: up to the window end, past the last row
    row_user = torch.tensor([u for u, st in enumerate(steps) for _ in st])
    row_step = torch.tensor([t for st in steps for t in st])
    x = ScaleBatch(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                   torch.zeros(0, dtype=torch.long), torch.zeros(0), row_user, row_step, torch.tensor(lengths))
    aggregation = TimeAggregation(H).double()
    r = torch.randn(len(row_user), M, H, dtype=torch.double, requires_grad=True)
    packed = aggregation(r, x)  # (B, M, H)
    weights = torch.randn_like(packed)
    (packed * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in aggregation.named_parameters()}
    with torch.no_grad():
        torch.testing.assert_close(aggregation(r, x), packed)
    aggregation.zero_grad()
    r_ref = r.detach().clone().requires_grad_(True)
    expected = torch.zeros(len(steps), M, H, dtype=torch.double)
    for u, n in enumerate(lengths):
        if n == 0:
            continue
        timeline = torch.zeros(M, n, H, dtype=torch.double)
        rows = torch.nonzero(row_user == u).flatten()
        timeline[:, row_step[rows]] = r_ref[rows].transpose(0, 1)  # (M, N, H)
        out, _ = aggregation.gru(timeline)
        expected[u] = out[:, -1]
    (expected * weights).sum().backward()
    torch.testing.assert_close(packed, expected)
    torch.testing.assert_close(r.grad, r_ref.grad)
    for name, p in aggregation.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, msg=f"gradient of {name}")
    assert torch.equal(packed[1], torch.zeros(M, H, dtype=torch.double))


def test_periods_years_apart_are_stepped_through_without_filling_the_gap():
    seqs = random_boi(2, 30, 3, 5, seed=5)
    far = BoISequences(seqs.matrix, seqs.user_ids, seqs.user_ptr, seqs.period * 36, seqs.granularity)
    model = SMEN(n_interests=30, hidden=8, anchors=2, scales=("month",)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model({"month": whole_batch(far)}), model({"month": whole_batch(seqs)}))


def test_switch_mixes_the_two_scales_per_anchor_as_eq_7():
    torch.manual_seed(0)
    switch = ScaleSwitch(hidden=4, anchors=3)
    r1, r2 = torch.randn(5, 3, 4), torch.randn(5, 3, 4)
    out = switch(r1, r2)
    for i in range(3):  # FC_i: its own (2H, H) layer per anchor
        s = torch.sigmoid(torch.cat([r1[:, i], r2[:, i]], dim=1) @ switch.weight[i] + switch.bias[i])
        torch.testing.assert_close(out[:, i], s * r1[:, i] + (1 - s) * r2[:, i])
        torch.testing.assert_close(switch.gate(r1, r2)[:, i], s)  # the s^i notebook 04 shows


def test_projection_head_follows_eq_8_and_9():
    torch.manual_seed(0)
    model = SMEN(n_interests=10, hidden=4, anchors=3)
    R_hat = torch.randn(2, 3, 4)
    head = model.head
    v = torch.relu(torch.stack([R_hat[:, i] @ head.W_h1[i].T for i in range(3)], dim=1))  # (B, M, H)
    mix = (head.W_h3 @ v).flatten(1)  # r_2(W^h3 r_1(v))
    expected = torch.relu(v.flatten(1) + mix) @ head.W_h2.weight.T
    torch.testing.assert_close(model.project(R_hat), expected)


@pytest.mark.parametrize("scales,anchors,hidden", [(("month", "year"), 4, 8), (("month",), 4, 8),
                                                   (("year",), 1, 16), (("month", "year"), 1, 40)])
def test_smen_shapes_for_one_or_two_scales_and_any_number_of_anchors(scales, anchors, hidden):
    batch = {s: whole_batch(random_boi(6, 40, 5, 4, seed=6 + i, granularity=s, fixed={5: 0}))
             for i, s in enumerate(scales)}
    model = SMEN(n_interests=40, hidden=hidden, anchors=anchors, scales=scales)
    assert (model.switch is None) == (len(scales) == 1)
    R_hat = model(batch)
    assert R_hat.shape == (6, anchors, hidden)
    assert torch.equal(R_hat[5], torch.zeros(anchors, hidden))  # no periods at any scale: R^ = 0
    z = model.project(R_hat)
    assert z.shape == (6, anchors * hidden)
    z.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_smen_runs_under_bfloat16_autocast():
    """AMP: the sparse product of eq. (5) stays in float32 (no low-precision sparse kernels)."""
    batch = {s: whole_batch(random_boi(4, 30, 3, 4, seed=8, granularity=s)) for s in ("month", "year")}
    model = SMEN(n_interests=30, hidden=8, anchors=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.multi_anchor(batch["month"]).dtype == torch.float32  # CUDA has no bf16 sparse mm
        z = model.project(model(batch))
    z.float().sum().backward()
    assert torch.isfinite(z.float()).all() and model.multi_anchor.W_e.grad is not None


def test_save_and_load_smen_round_trip(tmp_path):
    model = SMEN(n_interests=20, hidden=4, anchors=2, scales=("month",))
    batch = {"month": whole_batch(random_boi(3, 20, 3, 3, seed=7))}
    loaded = load_smen(save_smen(tmp_path / "smen.pt", model))
    assert not loaded.training and loaded.scales == ("month",)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), model.eval()(batch))


def test_anchor_bags_path_gives_a_sparse_W_e_gradient_under_autocast_and_empty_batches():
    """The embedding_bag path of eq. (5) (large U): float32 under bf16 autocast, W^e's
    gradient sparse over the U interests present, and a batch with no rows gives (0, M, H)."""
    seqs = random_boi(5, 200, 3, 5, seed=9)
    x = whole_batch(seqs)
    module = MultiAnchor(n_interests=200, hidden=8, anchors=3)
    module.V_MAX_BYTES = 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = module(x)
    assert r.dtype == torch.float32 and r.shape == (x.n_rows, 3, 8)
    r.sum().backward()
    assert module.W_e.grad.is_sparse
    assert torch.equal(torch.unique(module.W_e.grad.coalesce().indices()[0]), x.interests)
    empty = whole_batch(seqs, users=np.array([], dtype=np.int64))
    assert module(empty).shape == (0, 3, 8)
