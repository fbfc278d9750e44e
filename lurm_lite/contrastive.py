"""In-batch contrastive loss of LURM, shared by items (§2.1.1) and users (§2.2.4).

A mini-batch holds n positive pairs Delta = {x^1, y^1, ..., x^n, y^n}. Every other member
of the 2n-element batch is a negative. With g(x, y) = e_x^T e_y the cosine similarity of
L2-normalised embeddings and temperature tau:

    eq. (2)  l(x^i, y^i) = -log( exp(g(x^i, y^i)/tau) / sum_{y in Delta, y != x^i} exp(g(x^i, y)/tau) )
    eq. (3)  Loss = 1/(2n) * sum_i ( l(x^i, y^i) + l(y^i, x^i) )

This is the NT-Xent loss of SimCLR: the denominator runs over all 2n - 1 members of the
batch other than the anchor itself (its positive included).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def info_nce(x: torch.Tensor, y: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Symmetric in-batch InfoNCE, eq. (2)-(3) of the paper.

    Args:
        x: (n, d) embeddings of x^1..x^n. Normalised here (a no-op when already unit norm).
        y: (n, d) embeddings of y^1..y^n; (x^i, y^i) is the i-th positive pair.
        tau: temperature tau of eq. (2).

    Returns:
        The scalar Loss of eq. (3), averaged over the 2n anchors.
    """
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(f"x and y must both be (n, d); got {tuple(x.shape)} and {tuple(y.shape)}")
    n = x.shape[0]
    z = F.normalize(torch.cat([x, y], dim=0), dim=1)  # (2n, d), members of Delta
    logits = (z @ z.T).float() / tau  # (2n, 2n), g(., .) / tau
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))  # y != x^i in the denominator
    # The positive of row i is row i + n (and of row i + n, row i).
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # (2n,)
    # cross_entropy averages -log softmax over the 2n anchors: the 1/(2n) sum of eq. (3).
    return F.cross_entropy(logits, positive)


class RowAdam(torch.optim.Optimizer):
    """Lazy Adam for tables with sparse gradients: ``torch.optim.SparseAdam``'s rule, faster.

    A step updates only the R rows the gradient names (the interests or words a batch
    used): their moments m, v and weights, with the bias correction of the table's step
    count, exactly as SparseAdam (moments of untouched rows are not decayed). SparseAdam
    does it with sparse-tensor ops (``sparse_mask``, sparse additions) that cost far more
    than the arithmetic on the CPU; here the touched rows are gathered once
    (``index_select``), updated with dense ops and written back (``index_copy_``,
    ``index_add_``). Measured on 2 cores, SMEN's W^e (H = 128) with U rows touched per
    step, a step of SparseAdam -> RowAdam (ms): see ``benchmarks/smen.py``
    (``sparse_optimizer_ms``). State per parameter: ``step`` (int), ``exp_avg``,
    ``exp_avg_sq`` (the table's shape), as SparseAdam's, so a checkpoint of either loads.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if not param.grad.is_sparse:
                    raise RuntimeError("RowAdam is for sparse gradients (nn.Embedding(sparse=True)); use Adam")
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                grad = param.grad.coalesce()  # one value row per touched row
                rows, g = grad.indices()[0], grad.values()  # (R,), (R, H)
                m = state["exp_avg"].index_select(0, rows).lerp_(g, 1 - beta1)  # (R, H) m <- b1 m + (1 - b1) g
                v = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(g, g, value=1 - beta2)  # (R, H)
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                step_size = group["lr"] * math.sqrt(1 - beta2 ** state["step"]) / (1 - beta1 ** state["step"])
                param.index_add_(0, rows, m.div_(v.sqrt_().add_(group["eps"])), alpha=-step_size)
        return loss


def adam_optimizers(dense: list[torch.nn.Parameter], sparse: list[torch.nn.Parameter],
                    lr: float) -> list[torch.optim.Optimizer]:
    """Adam (§3.4, lr 1e-3 in the paper) for ``dense`` parameters and :class:`RowAdam` (lazy
    Adam, SparseAdam's rule) for the embedding tables in ``sparse`` whose gradients are
    sparse (word table W_i, W^e), so a step touches only the rows a batch used."""
    optimizers: list[torch.optim.Optimizer] = [torch.optim.Adam(dense, lr=lr)]
    if sparse:
        optimizers.append(RowAdam(sparse, lr=lr))
    return optimizers


def optimizer_step(loss: torch.Tensor, optimizers: list[torch.optim.Optimizer]) -> None:
    """One training step of ``loss`` (eq. 3) for every optimizer of :func:`adam_optimizers`."""
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()
