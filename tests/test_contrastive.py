import math

import numpy as np
import torch

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
