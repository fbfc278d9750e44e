import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lurm_lite.contrastive import info_nce


def _reference_loss(x: np.ndarray, y: np.ndarray, tau: float) -> float:
    """Eq. (2)-(3) written out term by term with math, independent of info_nce."""
    n = len(x)
    delta = [v / np.linalg.norm(v) for v in list(x) + list(y)]  # x^1..x^n, y^1..y^n
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        g = [float(np.dot(delta[i], delta[j])) for j in range(2 * n)]
        denominator = sum(math.exp(g[j] / tau) for j in range(2 * n) if j != i)
        total += -math.log(math.exp(g[positive] / tau) / denominator)
    return total / (2 * n)


def test_info_nce_equals_hand_computed_value_on_three_pairs():
    # Orthogonal unit vectors make every g a 0 or 1, so the loss has a closed form:
    # x^i and y^i identical, all pairs orthogonal -> each anchor sees exp(1/tau) once and
    # exp(0) four times in its denominator of 2n - 1 = 5 terms.
    eye = np.eye(3)
    tau = 0.5
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 4.0))
    loss = info_nce(torch.tensor(eye), torch.tensor(eye), tau=tau)
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    for tau in (0.1, 1.0):
        loss = info_nce(torch.tensor(x), torch.tensor(y), tau=tau)
        assert math.isclose(loss.item(), _reference_loss(x, y, tau), rel_tol=1e-6)


def test_info_nce_is_symmetric_and_scale_invariant():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    torch.testing.assert_close(info_nce(x, y, 0.1), info_nce(y, x, 0.1))
    torch.testing.assert_close(info_nce(3.0 * x, y, 0.1), info_nce(x, y, 0.1))  # g is a cosine


def test_gradient_flows_and_pulls_positives_together():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 6, generator=g, requires_grad=True)
    y = torch.randn(4, 6, generator=g, requires_grad=True)
    loss = info_nce(x, y, 0.1)
    loss.backward()
    assert x.grad is not None and y.grad is not None
    assert torch.all(x.grad.norm(dim=1) > 0) and torch.all(y.grad.norm(dim=1) > 0)
    with torch.no_grad():  # a small step against the gradient lowers the loss
        assert info_nce(x - 0.01 * x.grad, y - 0.01 * y.grad, 0.1) < loss


def test_row_adam_follows_sparse_adam_and_touches_only_the_rows_used():
    """RowAdam is SparseAdam's lazy rule (to float rounding) over steps with uncoalesced gradients;
    rows no batch used keep their weights and moments."""
    from lurm_lite.contrastive import RowAdam

    torch.manual_seed(0)
    reference = torch.nn.Parameter(torch.randn(50, 8))
    ours = torch.nn.Parameter(reference.detach().clone())
    optimizers = [torch.optim.SparseAdam([reference], lr=0.01), RowAdam([ours], lr=0.01)]
    used = torch.zeros(50, dtype=torch.bool)
    for step in range(5):
        rows = torch.randint(0, 40, (30,))  # rows 40..49 never used; repeats within a batch
        used[rows] = True
        for table, optimizer in zip((reference, ours), optimizers):
            lookup = F.embedding(rows, table, sparse=True)  # (30, 8), a sparse gradient for the table
            (lookup.pow(2).sum() + F.embedding(rows[:7], table, sparse=True).sum()).backward()  # two lookups
            optimizer.step()
            optimizer.zero_grad()
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)
    state = optimizers[1].state[ours]
    assert state["step"] == 5 and not state["exp_avg"][~used].any() and not state["exp_avg_sq"][~used].any()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        dense = torch.nn.Parameter(torch.ones(3))
        dense.sum().backward()
        RowAdam([dense]).step()
