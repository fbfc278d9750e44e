"""Self-supervised Multi-anchor Encoder Network (SMEN), §2.2 of the paper, eq. (5)-(9).

Read top to bottom:

1. the input: ``ScaleBatch`` and ``collate_rows`` turn the CSR rows b_t of a batch of users
   (one granularity) into flat tensors of non-zeros;
2. ``MultiAnchor``, §2.2.1 eq. (5)-(6): each b_t -> M anchor vectors r^1..r^M, computed
   from the non-zeros only, at a cost of O(nonzeros x M x H), independent of D;
3. ``TimeAggregation``, §2.2.2: one GRU shared by the anchors turns each anchor's sequence
   r^i_t1..r^i_tN into r~^i;
4. ``ScaleSwitch``, §2.2.3 eq. (7): the per-anchor switch s^i mixes the month and year
   results r~^i and r~'^i into r^^i; R^ = [r^^1..r^^M] is the user representation;
5. ``ProjectionHead``, §2.2.4 eq. (8)-(9): h(.) used by the contrastive loss only;
6. ``SMEN``: the whole network, plus ``save_smen`` / ``load_smen``.

Symbols: D interests, M anchors, H hidden size, B users in a batch, N periods of a user,
U distinct interests present in a batch, nnz non-zeros of a batch's b rows.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lurm_lite.boi import BoISequences
from lurm_lite.io import load_torch, save_torch

# ---------------------------------------------------------------------------------------
# 1. The input: a batch of BoI sequences of one granularity as flat tensors
# ---------------------------------------------------------------------------------------


@dataclass
class ScaleBatch:
    """The BoI sequences {b_t1..b_tN} of B users at one granularity, as flat tensors.

    The batch has n_rows periods in all (user after user, periods ascending) and nnz
    non-zero b_j among them. Only the U interests present in the batch are named.
    """

    interests: torch.Tensor  # (U,) int64: the distinct interests j present, ascending
    nz_row: torch.Tensor  # (nnz,) int64: the period row of each non-zero, ascending
    nz_col: torch.Tensor  # (nnz,) int64: its interest, as a position in `interests`
    nz_value: torch.Tensor  # (nnz,) float32: b_j
    row_user: torch.Tensor  # (n_rows,) int64: the user (0..B-1) of each row
    row_step: torch.Tensor  # (n_rows,) int64: the row's step t on its user's timeline
    lengths: torch.Tensor  # (B,) int64: N, steps of each user's timeline (0 for an empty one)

    @property
    def n_rows(self) -> int:
        return self.row_user.shape[0]

    @property
    def n_users(self) -> int:
        return self.lengths.shape[0]

    def to(self, device: torch.device | str) -> "ScaleBatch":
        return ScaleBatch(**{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})


def row_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the row ranges lo[b]:hi[b] -> (rows (sum of lengths,), lengths (B,))."""
    lengths = np.maximum(np.asarray(hi, dtype=np.int64) - lo, 0)  # (B,)
    starts = np.cumsum(lengths) - lengths  # (B,) offset of each user in `rows`
    rows = np.arange(lengths.sum(), dtype=np.int64) + np.repeat(np.asarray(lo, dtype=np.int64) - starts, lengths)
    return rows, lengths


def collate_rows(seqs: BoISequences, rows: np.ndarray, lengths: np.ndarray) -> ScaleBatch:
    """Gather the b_t rows of a batch into a ``ScaleBatch``, one row after the other.

    Args:
        seqs: BoI sequences of one granularity (CSR rows b_t, eq. 4).
        rows: (n_rows,) indices into ``seqs.matrix``, user after user, periods ascending.
        lengths: (B,) rows per user; ``rows`` holds lengths[0] rows of user 0, then user 1, ...
            A length of 0 is an empty sequence.

    Rows are consecutive steps (row_step 0, 1, ...): the timeline of the non-empty periods
    only. ``lurm_lite.user_training.collate_views`` builds fixed-interval timelines instead.
    """
    return collate_matrix(seqs.matrix[np.asarray(rows, dtype=np.int64)], lengths)


def collate_matrix(sub, rows_per_user: np.ndarray, row_step: np.ndarray | None = None,
                   lengths: np.ndarray | None = None) -> ScaleBatch:
    """A ``ScaleBatch`` from the b_t rows of B users stacked in one CSR (vectorised).

    Args:
        sub: (n_rows, D) CSR, the rows of user 0, then user 1, ..., periods ascending.
        rows_per_user: (B,) how many rows of ``sub`` each user owns.
        row_step: (n_rows,) position of each row on its user's timeline; None: 0, 1, ...
            (consecutive rows). With fixed-interval timelines (§2.2) empty periods have no
            row, and the steps skip over them.
        lengths: (B,) timeline length N of each user (>= last step + 1); None: rows_per_user.
    """
    rows_per_user = np.asarray(rows_per_user, dtype=np.int64)
    sub = sub.tocsr()
    sub.sum_duplicates()  # canonical: column indices sorted within each row
    interests, nz_col = np.unique(sub.indices, return_inverse=True)  # (U,), (nnz,)
    n_rows = sub.shape[0]
    if row_step is None:
        starts = np.cumsum(rows_per_user) - rows_per_user  # (B,)
        row_step = np.arange(n_rows, dtype=np.int64) - np.repeat(starts, rows_per_user)
    lengths = rows_per_user if lengths is None else np.asarray(lengths, dtype=np.int64)
    return ScaleBatch(
        interests=torch.from_numpy(interests.astype(np.int64)),
        nz_row=torch.from_numpy(np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(sub.indptr))),
        nz_col=torch.from_numpy(nz_col.astype(np.int64).reshape(-1)),
        nz_value=torch.from_numpy(sub.data.astype(np.float32)),
        row_user=torch.from_numpy(np.repeat(np.arange(len(rows_per_user), dtype=np.int64), rows_per_user)),
        row_step=torch.from_numpy(np.asarray(row_step, dtype=np.int64)),
        lengths=torch.from_numpy(lengths),
    )


# ---------------------------------------------------------------------------------------
# 2. Multi-anchor module, §2.2.1
# ---------------------------------------------------------------------------------------


ANCHOR_INIT_SCALE = 10.0  # W^a ~ N(0, (10 / sqrt(H))^2): anchors start on different interests


class MultiAnchor(nn.Module):
    """§2.2.1, eq. (5)-(6): one BoI feature b -> M anchor representations r^1..r^M.

        k_j      = W^p ReLU(W^e_j)                                   (interest vector)
        alpha_ij = exp(W^a_i . k_j) / sum_l exp(W^a_l . k_j)         eq. (6)
        r^i      = ReLU( sum_j alpha_ij b_j W^e_j )                  eq. (5)

    alpha_ij depends on the interest j only, so it is computed once for the U interests
    present in the batch (O(U M H)). Eq. (5) is then computed from the nnz non-zero b_j only,
    by one of two exact paths, O(nnz M H) either way, independent of D:

    - small U on the CPU: V_j = alpha_.j (x) W^e_j (U, M*H) and r = ReLU(S V), S the sparse
      (n_rows, U) matrix of the b_j; memory O(U M H) for V;
    - U M H * 4 bytes > ``V_MAX_BYTES`` (16 MiB: U > 3276 at M = 10, H = 128), and on CUDA
      (:meth:`forms_V`): :class:`AnchorBags`,
      embedding_bag over the (U, H) rows W^e_j with weights b_j alpha_ij, no U x M x H tensor.

    The rule is measured (benchmarks/smen.py, forward + backward, 1 thread, 256 users x 24
    months x ~50 non-zeros, M = 10, H = 128): S V is ~2x faster while V stays in cache (U =
    1e3), the two are even near U = 3e3, and past that V falls out of cache and S V slows
    with U (U = 9.5e4: S V 4.3-5.4 s, AnchorBags 1.4-1.6 s). AnchorBags still grows with U
    through alpha (O(U M H)) and its per-non-zero gradient kernels; see the numbers in
    benchmarks/smen.py's docstring.
    With ``sparse=True`` the gradient of W^e is a sparse tensor over the U rows looked up
    (see ``lurm_lite.contrastive.adam_optimizers`` for how it is stepped).

    Initialisation (the paper is silent; chosen by measurement): W^e ~ N(0, 1), W^p
    uniform(+-1/sqrt(H)) and W^a ~ N(0, (ANCHOR_INIT_SCALE / sqrt(H))^2). With the usual
    N(0, 1/H) for W^a the logits of eq. (6) have a spread of ~0.4, alpha starts nearly
    uniform (entropy 0.97 log M) and every anchor computes almost the same r^i: R^ is M
    copies of one H-vector. Scaled by 10, each interest starts on one or two anchors
    (entropy 0.32 log M) and the M anchors see different interests. Measured on synthetic
    default, D = 1000: the untrained multi-anchor outputs summed over a user's months score
    age AUC 75.3 -> 83.9, and after 6 epochs of training SMEN scores age 79.6 -> 82.4,
    baby_age 76.6 -> 77.9 (the future-category tasks 81.2 / 78.1 -> 79.0 / 75.4).
    """

    V_MAX_BYTES = 16 * 2**20  # largest V = alpha (x) W^e (U, M*H) float32 formed; beyond, AnchorBags

    def __init__(self, n_interests: int, hidden: int, anchors: int, sparse: bool = True):
        super().__init__()
        self.sparse = sparse
        self.W_e = nn.Parameter(torch.randn(n_interests, hidden))  # (D, H) interest embeddings
        self.W_a = nn.Parameter(torch.randn(anchors, hidden) * ANCHOR_INIT_SCALE * hidden**-0.5)  # (M, H) anchors
        bound = hidden**-0.5
        self.W_p = nn.Parameter(torch.empty(hidden, hidden).uniform_(-bound, bound))  # (H, H)

    def alpha(self, W_e_j: torch.Tensor) -> torch.Tensor:
        """Eq. (6): attention of each anchor i on interest j, softmax over the anchors.

        W_e_j: (U, H) rows W^e_j. Returns alpha (U, M); each row sums to 1.
        """
        # W^a_i . k_j = W^a_i . W^p ReLU(W^e_j) = (W^a W^p)_i . ReLU(W^e_j): forming the (M, H)
        # product W^a W^p once costs O(U H M) for the U interests instead of O(U H^2) for all k_j.
        logits = F.relu(W_e_j) @ (self.W_a @ self.W_p).T  # (U, M) W^a_i . k_j
        return torch.softmax(logits, dim=1)

    def forms_V(self, n_present: int, device: torch.device) -> bool:
        """Whether eq. (5) runs as the sparse product S V for a batch of ``n_present`` (U) interests.

        Only on the CPU, while V (U, M*H) fits ``V_MAX_BYTES``; an accelerator takes
        AnchorBags whatever U. On CUDA this is for reproducibility: cuSPARSE's
        sparse-dense product (COO and CSR alike) sums in a varying order, so the same batch
        gave different bits in five calls on an H200 (torch 2.11), also under
        ``torch.use_deterministic_algorithms``, and two encodings of the same users differed
        by up to 4.6e-7. AnchorBags' forward (``embedding_bag``) gives the same bits every
        time there, at the same speed (benchmarks/smen.py on the H200: 2.2 ms S V at D = 1e3,
        2.8 ms AnchorBags at 1e5).
        """
        M, H = self.W_a.shape
        return device.type == "cpu" and n_present * M * H * 4 <= self.V_MAX_BYTES

    def forward(self, x: ScaleBatch) -> torch.Tensor:
        """Eq. (5) for every row b_t of the batch: returns r (n_rows, M, H).

        Two exact paths (equal to float tolerance, tests/test_smen.py): while V = alpha (x) W^e
        of the U interests present fits in ``V_MAX_BYTES`` on the CPU, one sparse product S V;
        beyond, and on CUDA (:meth:`forms_V`), :class:`AnchorBags`, which never forms V. See
        the class docstring for the measurements.
        """
        M, H = self.W_a.shape
        W_e_j = F.embedding(x.interests, self.W_e, sparse=self.sparse)  # (U, H)
        alpha = self.alpha(W_e_j)  # (U, M)
        dtype = torch.promote_types(W_e_j.dtype, torch.float32)  # sparse kernels: no bf16/fp16 (AMP)
        with torch.autocast(W_e_j.device.type, enabled=False):
            if self.forms_V(W_e_j.shape[0], W_e_j.device):
                V = (alpha[:, :, None] * W_e_j[:, None, :]).reshape(-1, M * H).to(dtype)  # (U, M*H) alpha_ij W^e_j
                b = torch.sparse_coo_tensor(  # (n_rows, U) sparse, entries b_j (sorted: coalesced)
                    torch.stack([x.nz_row, x.nz_col]), x.nz_value.to(dtype), (x.n_rows, V.shape[0]),
                    is_coalesced=True, check_invariants=False,
                )
                r = torch.sparse.mm(b, V)  # (n_rows, M*H) sum_j alpha_ij b_j W^e_j
            else:
                w = x.nz_value.to(dtype)[:, None] * alpha.to(dtype).index_select(0, x.nz_col)  # (nnz, M) b_j alpha_ij
                r = AnchorBags.apply(W_e_j.to(dtype), w, x.nz_row, x.nz_col, x.n_rows)  # (n_rows*M, H)
        return F.relu(r).view(-1, M, H)


class AnchorBags(torch.autograd.Function):
    """sum_j alpha_ij b_j W^e_j of eq. (5) for every (row, anchor i), with no (U, M, H) tensor.

    ``forward(W_e_j (U, H), w (nnz, M), nz_row (nnz,), nz_col (nnz,), n_rows) -> (n_rows*M, H)``
    where w[k, i] = b_j alpha_ij of the k-th non-zero (row nz_row[k], interest nz_col[k]).

    Forward: one ``F.embedding_bag`` (mode "sum") over the U gathered rows W^e_j, one bag per
    (row, anchor) pair (rows ascending, the M anchors of a row next to each other, so the
    row's W^e_j stay in cache for its M bags), each bag holding the row's interests with
    per-sample weights w[:, i]. Backward, also without a (U, M, H) tensor:

    - dL/dw[k, i] = G[row_k, i] . W^e_j (j = nz_col[k]): embedding_bag's own per-sample-weight
      gradient kernel (``aten::_embedding_bag_per_sample_weights_backward``), nnz M dot products;
    - dL/dW^e_j = sum_{k: nz_col[k] = j} sum_i w[k, i] G[row_k, i]: a second embedding_bag
      over the rows of G (n_rows*M, H), one bag of M rows per non-zero (G read in order),
      then ``index_add_`` into the U rows. embedding_bag's own weight gradient would sort the
      nnz M indices on the CPU (measured ~2x slower).

    Cost O(nnz M H) each way, memory O(nnz M) indices; no term grows with D.
    """

    @staticmethod
    def forward(ctx, W_e_j, w, nz_row, nz_col, n_rows):
        nnz, M = w.shape
        dev = w.device
        anchors = torch.arange(M, device=dev)  # (M,)
        count = torch.bincount(nz_row, minlength=n_rows)  # (n_rows,) non-zeros of each row
        start = torch.cumsum(count, 0) - count  # (n_rows,) its first non-zero
        # Entry (k, i) of bag (row_k, i) sits at slot start*M + i*count + (k - start) of the bags' flat input.
        slot = ((torch.arange(nnz, device=dev) + (M - 1) * start[nz_row])[:, None]
                + count[nz_row][:, None] * anchors).reshape(-1)  # (nnz*M,) in (k, i) order
        bag = (nz_row[:, None] * M + anchors).reshape(-1)  # (nnz*M,) bag row*M + i of entry (k, i)
        indices = torch.empty_like(slot).index_copy_(0, slot, nz_col.repeat_interleave(M))  # (nnz*M,) j
        offset2bag = torch.empty_like(slot).index_copy_(0, slot, bag)  # (nnz*M,)
        weights = torch.empty(nnz * M, dtype=w.dtype, device=dev).index_copy_(0, slot, w.reshape(-1))
        offsets = (start[:, None] * M + anchors * count[:, None]).reshape(-1)  # (n_rows*M,) bag starts
        out = F.embedding_bag(indices, W_e_j, offsets, mode="sum", per_sample_weights=weights)  # (n_rows*M, H)
        ctx.save_for_backward(W_e_j, w, nz_row, nz_col, indices, offsets, offset2bag, slot)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        W_e_j, w, nz_row, nz_col, indices, offsets, offset2bag, slot = ctx.saved_tensors
        G = grad_out.contiguous()  # (n_rows*M, H)
        nnz, M = w.shape
        grad_W = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_weights = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                G, W_e_j, indices, offsets, offset2bag, 0)  # (nnz*M,) mode 0: sum
            grad_w = grad_weights.index_select(0, slot).view(nnz, M)  # (nnz, M) back to (k, i) order
        if ctx.needs_input_grad[0]:
            # per non-zero k: sum_i w[k, i] G[row_k, i], a bag of the M rows row_k*M + i of G, read
            # in order (non-zeros are sorted by row); then summed into the U rows by interest
            rows = nz_row[:, None] * M + torch.arange(M, device=G.device)  # (nnz, M)
            per_nonzero = F.embedding_bag(rows, G, mode="sum", per_sample_weights=w)  # (nnz, H)
            grad_W = torch.zeros_like(W_e_j).index_add_(0, nz_col, per_nonzero)  # (U, H)
        return grad_W, grad_w, None, None, None


# ---------------------------------------------------------------------------------------
# 3. Time aggregation module, §2.2.2
# ---------------------------------------------------------------------------------------


CHRONO_MAX_STEPS = 120  # T_max of the GRU's chrono initialisation: ten years of months


def _running_past(alive: list[int]) -> list[int]:
    """How many sequences run past each step t of a packed batch: alive[t + 1], 0 after the last step;
    those at rows ending:alive[t] of step t end there."""
    return alive[1:] + [0]


def _recurrence(gates_x: torch.Tensor, b_ih: torch.Tensor, W_hh: torch.Tensor, b_hh: torch.Tensor, alive: list[int],
                saved: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The GRU's recurrence over a time-major packed batch; the last state of each sequence.

    ``gates_x`` (slots, 3H): W_ih x_t of every (step, sequence) slot (b_ih is added here), step after step,
    the ``alive[t]`` sequences still running at step t first (``alive`` non-increasing, the
    sequences sorted longest first). torch's GRU, gates ordered r, z, n:
    r = sigmoid(x_r + h_r), z = sigmoid(x_z + h_z), n = tanh(x_n + r * h_n),
    h_t = (1 - z) * n + z * h_{t-1}, with (h_r, h_z, h_n) = W_hh h_{t-1} + b_hh and h_0 = 0.
    ``saved``: buffers of (r, z, n) (slots, 3H), of W_hh h_{t-1} + b_hh (slots, 3H) and of
    h_{t-1} (slots, H), filled for the backward pass (None when no gradient is needed).
    Returns (alive[0], H): the state of each sequence after its last step.
    """
    H = W_hh.shape[1]
    # b_ir, b_iz join b_hr, b_hz in the state's product; b_in is added to n's input (r scales h_n only)
    bias_h = torch.cat([b_ih[:2 * H] + b_hh[:2 * H], b_hh[2 * H:]])  # (3H,)
    b_in = b_ih[2 * H:]  # (H,)
    h = gates_x.new_zeros(alive[0], H)  # (alive[0], H) h_0
    last = gates_x.new_empty(alive[0], H)
    offset = 0
    for t, (n, ending) in enumerate(zip(alive, _running_past(alive))):
        step = slice(offset, offset + n)
        h_prev = h[:n]  # (n, H)
        if saved is None:
            rzn, gates_h = gates_x.new_empty(n, 3 * H), torch.addmm(bias_h, h_prev, W_hh.t())  # (n, 3H) each
        else:
            rzn, gates_h = saved[0][step], torch.addmm(bias_h, h_prev, W_hh.t(), out=saved[1][step])
            saved[2][step] = h_prev
        rz, new = rzn[:, :2 * H], rzn[:, 2 * H:]
        torch.sigmoid(torch.add(gates_x[step, :2 * H], gates_h[:, :2 * H], out=rz), out=rz)
        torch.addcmul(gates_x[step, 2 * H:], rz[:, :H], gates_h[:, 2 * H:], out=new)
        torch.tanh(new.add_(b_in), out=new)
        h = torch.lerp(new, h_prev, rz[:, H:])  # (n, H) (1 - z) * n + z * h_prev
        last[ending:n] = h[ending:]
        offset += n
    return last


def _packed_input_gates(gates_rows: torch.Tensor, slot: torch.Tensor, slots: int) -> torch.Tensor:
    """(slots, 3H) input products of a packed batch: ``gates_rows`` (n, 3H) = W_ih r_t at the n
    ``slot`` (n,) of the non-empty periods, 0 at every other (an empty period's r is 0)."""
    buffer = gates_rows.new_empty if len(slot) == slots else gates_rows.new_zeros  # every slot written: no fill
    return buffer(slots, gates_rows.shape[1]).index_copy_(0, slot, gates_rows)


class _PackedGRU(torch.autograd.Function):
    """:func:`_recurrence` over the input gates of the non-empty periods, with its backward
    pass through time written out.

    Inputs: ``gates_rows`` (n, 3H) = W_ih r_t of the n non-empty (period, sequence) pairs,
    their ``slot`` (n,) in the packed batch, b_ih (3H,) (added at every slot), W_hh (3H, H),
    b_hh (3H,), ``alive`` (as :func:`_recurrence`). The backward pass
    walks the steps in reverse with one (n_t, 3H) x (3H, H) product per step for the state's
    gradient, and forms W_hh's gradient as one (3H, slots) x (slots, H) product at the end,
    instead of a small product per step.
    """

    @staticmethod
    def forward(ctx, gates_rows: torch.Tensor, slot: torch.Tensor, b_ih: torch.Tensor, W_hh: torch.Tensor,
                b_hh: torch.Tensor, alive: list[int]) -> torch.Tensor:
        slots, H = sum(alive), W_hh.shape[1]
        saved = (gates_rows.new_empty(slots, 3 * H), gates_rows.new_empty(slots, 3 * H),
                 gates_rows.new_empty(slots, H))  # (r, z, n), W_hh h_{t-1} + b_hh, h_{t-1}
        last = _recurrence(_packed_input_gates(gates_rows, slot, slots), b_ih, W_hh, b_hh, alive, saved)
        ctx.save_for_backward(*saved, slot, W_hh)
        ctx.alive = alive
        return last

    @staticmethod
    def backward(ctx, d_last: torch.Tensor):
        rzn, gates_h, h_prev_all, slot, W_hh = ctx.saved_tensors
        alive, H = ctx.alive, W_hh.shape[1]
        d_last = d_last.contiguous()
        d_gates_x = torch.empty_like(rzn)  # (slots, 3H) gradient of W_ih x_t + b_ih at each slot
        d_gates_h = torch.empty_like(rzn)  # (slots, 3H) gradient of W_hh h_{t-1} + b_hh
        d_h_buffer = torch.empty_like(d_last)  # (alive[0], H); rows :alive[t] hold the gradient of h_t
        ends = np.cumsum(alive).tolist()
        running_past = _running_past(alive)
        for t in reversed(range(len(alive))):
            n, ending = alive[t], running_past[t]
            step = slice(ends[t] - n, ends[t])
            d_h_buffer[ending:n] = d_last[ending:n]  # the sequences whose last step is t
            d_h = d_h_buffer[:n]  # (n, H)
            r, z, new = rzn[step, :H], rzn[step, H:2 * H], rzn[step, 2 * H:]
            d_r, d_z, d_new = d_gates_x[step, :H], d_gates_x[step, H:2 * H], d_gates_x[step, 2 * H:]
            torch.mul(d_h, 1 - z, out=d_new).mul_(1 - new * new)  # through n's tanh
            torch.sub(h_prev_all[step], new, out=d_z).mul_(d_h).mul_(z * (1 - z))  # through z's sigmoid
            torch.mul(d_new, gates_h[step, 2 * H:], out=d_r).mul_(r * (1 - r))  # through r's sigmoid
            d_gates_h[step, :2 * H] = d_gates_x[step, :2 * H]
            torch.mul(d_new, r, out=d_gates_h[step, 2 * H:])
            torch.addmm(d_h * z, d_gates_h[step], W_hh, out=d_h_buffer[:n])  # gradient of h_{t-1}
        return (d_gates_x.index_select(0, slot), None, d_gates_x.sum(0), d_gates_h.t() @ h_prev_all,
                d_gates_h.sum(0), None)


class TimeAggregation(nn.Module):
    """§2.2.2: a GRU shared by the M anchors maps r^i_t1..r^i_tN to r~^i (last hidden state).

    The timeline is the one the batch carries (``ScaleBatch.row_step``, ``lengths``): with
    ``lurm_lite.user_training.collate_views`` a fixed-interval one (§2.2: "T is divided into
    N parts at a fixed time interval"), from the first non-empty period to the window end,
    where an empty period is the input r = ReLU(0) = 0 and still moves the GRU's state: a
    gap of years and a quiet tail before the window end are seen. An empty sequence
    (N = 0) gives the GRU's initial state, r~^i = 0.

    Memory (the paper is silent; chosen by measurement): the GRU's update gate z (h_t =
    (1 - z) n_t + z h_{t-1}) gets the chrono initialisation of Tallec & Ollivier (ICLR 2018),
    b_z = log U(1, T_max - 1) with T_max = ``CHRONO_MAX_STEPS``, so that at the start of
    training each hidden unit keeps its state for 1..T_max steps instead of ~2: the final
    state can then still hold what a user did years before the window end. With PyTorch's
    default (b_z ~ 0) the month-scale GRU forgot all but the last months: on a planted-label
    log (tests/test_quality.py, 6 epochs) a month-only SMEN scored AUC 0.62 and the
    month + year SMEN 0.84; with chrono 0.81 and 0.89 (raw BoI 0.97).

    Speed on the CPU (a choice, measured; the paper is silent): the B*M sequences are sorted
    by length and run as one time-major packed batch, step t holding the sequences still
    running, so no step past a sequence's end is computed. The input gates W_ih r_t + b_ih
    are computed for the non-empty periods only (one product over the batch's rows); an
    empty period's are b_ih. The recurrence is ``_PackedGRU``, whose backward pass forms
    W_hh's gradient in one product over all steps. It equals ``nn.GRU`` over each sequence
    in values and gradients (tests). Measured on 2 cores, a synthetic-default training batch
    (512 views, 8,119 month steps of which 3,459 non-empty, 10 anchors), forward + backward,
    median of 5: 1.57 s for nn.GRU in length-sorted chunks of 512 padded to their longest
    (the path before), 1.19 s with this recurrence in autograd ops, 1.11 s with _PackedGRU;
    the forward pass alone (encoding) 0.51 s against 0.36 s. On timelines with no empty
    period (benchmarks/smen.py's batch: 256 users x 24 non-empty months) it is not faster:
    0.88 s against 1.00 s forward + backward, 0.30 s against 0.33 s forward; the logs this kit
    reads (reviews, ratings) leave most months empty.

    Why a fixed interval rather than the non-empty periods with the elapsed time as an
    extra input (~2.5x fewer GRU steps on the demo data): measured on the planted-label log
    of tests/test_quality.py (6 epochs, probe AUC), fixed 0.89 against 0.85 for the
    elapsed-time variant (x_t = r_t + W phi(gap_t), plus one end step fed the time since
    the last behaviour); without the chrono initialisation 0.84 against 0.75.
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.gru = nn.GRU(hidden, hidden, batch_first=True)  # its weights; the recurrence is _PackedGRU
        with torch.no_grad():  # chrono initialisation of the update gate z (see the docstring)
            b_z = torch.log(torch.empty(hidden).uniform_(1, CHRONO_MAX_STEPS - 1))  # (H,)
            self.gru.bias_ih_l0[hidden:2 * hidden] = b_z / 2  # torch's GRU: z = sigmoid(b_iz + b_hz + ...)
            self.gru.bias_hh_l0[hidden:2 * hidden] = b_z / 2

    def forward(self, r: torch.Tensor, x: ScaleBatch) -> torch.Tensor:
        """r (n_rows, M, H) rows of the batch ``x`` -> r~ (B, M, H)."""
        _, M, H = r.shape
        B, dev = x.n_users, r.device
        lengths = x.lengths.repeat_interleave(M)  # (B*M,) N of each (user, anchor) sequence
        r_tilde = r.new_zeros(B * M, H)  # (B*M, H); stays 0 for empty sequences
        if x.n_rows == 0:
            return r_tilde.view(B, M, H)
        order = torch.argsort(lengths, descending=True, stable=True)
        order = order[lengths[order] > 0]  # (S,) the non-empty sequences, longest first
        S = len(order)
        sorted_lengths = lengths[order]  # (S,)
        rank = torch.empty(B * M, dtype=torch.long, device=dev)
        rank[order] = torch.arange(S, device=dev)  # (B*M,) position of each sequence in `order`
        T = int(sorted_lengths[0])
        alive = S - torch.bincount(sorted_lengths, minlength=T + 1).cumsum(0)[:T]  # (T,) sequences running at step t
        first_slot = alive.cumsum(0) - alive  # (T,) slot of step t's first sequence
        sequence = x.row_user[:, None] * M + torch.arange(M, device=dev)  # (n_rows, M) sequence of each r^i_t
        slot = (first_slot[x.row_step][:, None] + rank[sequence]).reshape(-1)  # (n_rows*M,) slot in the packed batch
        gru, slots, alive = self.gru, int(alive.sum()), alive.tolist()
        with torch.autocast(dev.type, enabled=False):  # the recurrence in the weights' dtype, also under AMP
            rows = r.reshape(-1, H).to(gru.weight_ih_l0.dtype)  # (n_rows*M, H)
            gates_rows = F.linear(rows, gru.weight_ih_l0)  # (n_rows*M, 3H) W_ih r_t
            if torch.is_grad_enabled():
                last = _PackedGRU.apply(gates_rows, slot, gru.bias_ih_l0, gru.weight_hh_l0, gru.bias_hh_l0, alive)
            else:
                last = _recurrence(_packed_input_gates(gates_rows, slot, slots), gru.bias_ih_l0, gru.weight_hh_l0,
                                   gru.bias_hh_l0, alive)  # (S, H)
        r_tilde = r_tilde.index_copy(0, order, last.to(r_tilde.dtype))
        return r_tilde.view(B, M, H)


# ---------------------------------------------------------------------------------------
# 4. Multi-scale aggregation module, §2.2.3
# ---------------------------------------------------------------------------------------


class ScaleSwitch(nn.Module):
    """Eq. (7): r^^i = s^i ⊙ r~^i + (1 - s^i) ⊙ r~'^i, s^i = sigmoid(FC_i([r~^i, r~'^i])).

    FC_i is one fully-connected layer 2H -> H per anchor i, batched as a (M, 2H, H) weight.
    """

    def __init__(self, hidden: int, anchors: int):
        super().__init__()
        bound = (2 * hidden) ** -0.5
        self.weight = nn.Parameter(torch.empty(anchors, 2 * hidden, hidden).uniform_(-bound, bound))  # (M, 2H, H)
        self.bias = nn.Parameter(torch.empty(anchors, hidden).uniform_(-bound, bound))  # (M, H)

    def gate(self, r_tilde: torch.Tensor, r_tilde_prime: torch.Tensor) -> torch.Tensor:
        """The switch s^i([r~^i, r~'^i]) of eq. (7), in (0, 1): (B, M, H) from r~, r~' (B, M, H) each."""
        both = torch.cat([r_tilde, r_tilde_prime], dim=-1)  # (B, M, 2H)
        return torch.sigmoid(torch.einsum("bmk,mkh->bmh", both, self.weight) + self.bias)  # (B, M, H)

    def forward(self, r_tilde: torch.Tensor, r_tilde_prime: torch.Tensor) -> torch.Tensor:
        """r~ (B, M, H) of the finer scale, r~' (B, M, H) of the coarser -> R^ (B, M, H)."""
        s = self.gate(r_tilde, r_tilde_prime)  # (B, M, H)
        return s * r_tilde + (1 - s) * r_tilde_prime


# ---------------------------------------------------------------------------------------
# 5. Projection head, §2.2.4
# ---------------------------------------------------------------------------------------


class ProjectionHead(nn.Module):
    """Eq. (8)-(9): the non-linear head h(.) on which the contrastive loss is computed.

        v              = ReLU([W^h1_1 r^^1, ..., W^h1_M r^^M])        W^h1_i (H, H)
        mix(v, W^h3)   = r_2(W^h3 r_1(v))                             W^h3 (M, M), r_1: v -> (M, H)
        h(v)           = W^h2 ReLU(v + mix(v, W^h3))                  W^h2 (M*H, M*H)
    """

    def __init__(self, hidden: int, anchors: int):
        super().__init__()
        self.W_h1 = nn.Parameter(torch.empty(anchors, hidden, hidden).uniform_(-(hidden**-0.5), hidden**-0.5))
        self.W_h2 = nn.Linear(anchors * hidden, anchors * hidden, bias=False)
        self.W_h3 = nn.Parameter(torch.empty(anchors, anchors).uniform_(-(anchors**-0.5), anchors**-0.5))

    def forward(self, R_hat: torch.Tensor) -> torch.Tensor:
        """R^ (B, M, H) -> h (B, M*H)."""
        v = F.relu(torch.einsum("bmh,mkh->bmk", R_hat, self.W_h1))  # (B, M, H) W^h1_i r^^i
        mix = torch.einsum("ij,bjh->bih", self.W_h3, v)  # (B, M, H) W^h3 r_1(v)
        return self.W_h2(F.relu(v + mix).flatten(1))  # (B, M*H)


# ---------------------------------------------------------------------------------------
# 6. SMEN
# ---------------------------------------------------------------------------------------


class SMEN(nn.Module):
    """§2.2: multi-anchor module, GRU and multi-scale switch, shared by all scales.

    ``forward(batch)`` takes ``{scale: ScaleBatch}`` for every scale of ``scales`` (the same
    B users in the same order) and returns R^ (B, M, H), the user representation
    (flattened to M*H downstream). With one scale there is no switch: R^ = r~.
    ``project(R^)`` is the head h(.) of eq. (8)-(9), used by training only.
    """

    def __init__(self, n_interests: int, hidden: int = 128, anchors: int = 10,
                 scales: tuple[str, ...] = ("month", "year"), sparse: bool = True):
        super().__init__()
        if len(scales) not in (1, 2):
            raise ValueError(f"SMEN aggregates one or two scales (eq. 7); got {scales}")
        self.n_interests, self.hidden, self.anchors, self.scales = n_interests, hidden, anchors, tuple(scales)
        self.multi_anchor = MultiAnchor(n_interests, hidden, anchors, sparse=sparse)
        self.time_aggregation = TimeAggregation(hidden)
        self.switch = ScaleSwitch(hidden, anchors) if len(scales) == 2 else None
        self.head = ProjectionHead(hidden, anchors)

    def encode_scale(self, x: ScaleBatch) -> torch.Tensor:
        """One scale: b_t rows -> r (multi-anchor, eq. 5-6) -> r~ (GRU, §2.2.2): (B, M, H)."""
        return self.time_aggregation(self.multi_anchor(x), x)

    def forward(self, batch: dict[str, ScaleBatch]) -> torch.Tensor:
        """R^ (B, M, H), eq. (7) (or r~ of the only scale)."""
        r_tilde = [self.encode_scale(batch[scale]) for scale in self.scales]  # each (B, M, H)
        if self.switch is None:
            return r_tilde[0]
        return self.switch(r_tilde[0], r_tilde[1])

    def project(self, R_hat: torch.Tensor) -> torch.Tensor:
        """h(.) of eq. (8)-(9): R^ (B, M, H) -> (B, M*H)."""
        return self.head(R_hat)

    def sparse_parameters(self) -> list[nn.Parameter]:
        """Parameters with sparse gradients (W^e when ``sparse``): give them to SparseAdam."""
        return [self.multi_anchor.W_e] if self.multi_anchor.sparse else []

    def dense_parameters(self) -> list[nn.Parameter]:
        sparse = {id(p) for p in self.sparse_parameters()}
        return [p for p in self.parameters() if id(p) not in sparse]

    def init_kwargs(self) -> dict:
        return {"n_interests": self.n_interests, "hidden": self.hidden, "anchors": self.anchors,
                "scales": self.scales, "sparse": self.multi_anchor.sparse}


def save_smen(path: str | Path, model: SMEN) -> Path:
    """Write a trained SMEN (constructor arguments as plain data + weights) atomically.

    Only tensors and plain data (numbers, strings, tuples, dicts) go in, so :func:`load_smen` reads it
    with ``weights_only=True``.
    """
    return save_torch(path, {"kwargs": model.init_kwargs(), "state_dict": model.state_dict()})


def load_smen(path: str | Path, device: torch.device | str = "cpu") -> SMEN:
    """Read a model written by ``save_smen``, in eval mode on ``device``.

    Loaded with ``weights_only=True`` (:func:`lurm_lite.io.load_torch`): a file holding
    other Python objects raises :class:`lurm_lite.io.UnsafeArtifact` instead of running them.
    """
    saved = load_torch(path, map_location=device)
    model = SMEN(**saved["kwargs"])
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval()
