"""Speed of SMEN's multi-anchor module (§2.2.1, eq. 5-6): sparse path vs dense reference.

    python benchmarks/smen.py --json benchmarks/results/smen.json [--quick] [--device auto] [--threads N]

For D = 1e3, 1e4, 1e5 interests, one batch of 256 users x 24 periods with about 50
non-zero b_j per period (interests drawn uniformly: the worst case for the number U of
distinct interests in a batch), M = 10, H = 128 (the paper's sizes):

- ``sparse_ms[D]`` / ``dense_ms[D]``: forward + backward of the multi-anchor module, the
  sparse path of ``lurm_lite.smen.MultiAnchor`` vs ``lurm_lite.testing.dense_multi_anchor``
  (O(n_rows D M H)), same process, after a warm-up, median of reps;
- ``sparse_zipf_ms[D]``: the same for Zipf-distributed interests (P(j) ~ 1/rank^1.1, fewer
  distinct interests U at the same nnz), ``sparse_d_scaling_zipf`` its 1e5 / 1e3 ratio
  (``sparse_d_scaling`` = ``sparse_d_scaling_uniform``);
- ``smen_ms[D]``: forward + backward of the whole SMEN (month + year, GRU, head, loss);
- ``optimizer_step_ms``: the step of all SMEN's parameters after that backward, W^e
  stepped by the kit's ``RowAdam`` (``row_adam``, sparse gradient), by torch's SparseAdam
  (the same rule, ``torch_sparse_adam``) and by dense Adam (``dense_adam``: what
  ``sparse_grad=False`` costs, O(D H) per step);
- ``users_encoded_per_s``: ``encode_users`` throughput at D = 1e5;
- ``train_gflops`` / ``encode_gflops``: the arithmetic rate of the whole-SMEN training step
  (``smen_ms`` at D = 1e5) and of encoding, FLOPs counted from the shapes
  (:func:`smen_forward_flops`; a backward pass counted as twice its forward), against
  ``mm_gflops``, a plain float32 ``torch.mm`` of 4096 x 1024 x 1024 in the same process:
  ``train_flops_fraction`` and ``encode_flops_fraction`` say how near SMEN runs to what
  the machine's matrix kernel reaches.

Targets: ``sparse_d_scaling`` (sparse time at 1e5 / at 1e3) <= 1.5 and
``sparse_vs_dense_at_1e5`` (dense / sparse time) >= 10. ``--quick`` uses 64 users.
``flop_d_scaling_uniform`` / ``_zipf``: the ratio of eq. (5)-(6)'s FLOPs of the same two
batches (:func:`multi_anchor_flops`), i.e. the time ratio at an unchanged GFLOP/s. Eq. (6)
costs an interest as many FLOPs as eq. (5) costs a non-zero, and the uniform batch at D = 1e5
holds U = 0.70 nnz distinct interests (1e3: U = 0.013 nnz), so its FLOP ratio is 1.72: a time
ratio of 1.5 would need the D = 1e5 batch to run 15% more FLOP/s than the D = 1e3 one, on
products M = 10 wide.

Measured alone on the 2-core development machine (``--quick``, default threads), stop 24:
sparse_ms 86.2 / 88.9 / 150.0 ms uniform (sparse_d_scaling 1.74, FLOP ratio 1.72), Zipf
47.4 / 54.4 / 65.0 ms (1.37, FLOP ratio 1.45), train_flops_fraction 0.40, encode_flops_fraction
0.62 (torch.mm 63.6 GFLOP/s; the machine was ~8% slower than at stop 23 throughout). At commit
bf23ecb: sparse_ms 79.2 / 83.7 / 130.3 ms at D = 1e3 / 1e4 / 1e5 with uniform interests
(sparse_d_scaling 1.65; 1.80 at an earlier stop; before AnchorBags, on a lighter-loaded
machine, 59.5 / 217.9 / 1362.8, 22.9), Zipf 52.7 / 51.9 / 60.3 ms (sparse_d_scaling_zipf
1.14); SMEN 377 / 385 / 425 ms; the dense reference 129 / 1226 / 12306 ms
(sparse_vs_dense_at_1e5 94). The D = 1e3 rows run the S V path. At D = 1e5 the U-proportional
cost is mostly eq. (6)'s three (U, H) x (H, M)-shaped products (22 ms of a step at U = 53,833,
3.6 ms at U = 9,996; M = 10 makes them run at 20-26 GFLOP/s) and (U, H) elementwise passes;
computing eq. (5)-(6) in one autograd Function over blocks of 2,048 interests did not make it
faster. Optimizer step (all of SMEN's parameters) RowAdam / torch SparseAdam / dense Adam on
W^e: 8.9 / 9.4 / 9.0, 15.5 / 20.4 / 11.0, 70.4 / 135.0 / 83.5 ms. train_flops_fraction 0.42
(29.0 GFLOP/s against torch.mm's 69.7), encode_flops_fraction 0.67.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lurm_lite import io  # noqa: E402
from lurm_lite.contrastive import adam_optimizers, info_nce  # noqa: E402
from lurm_lite.smen import SMEN, collate_rows, row_ranges  # noqa: E402
from lurm_lite.testing import dense_multi_anchor, mm_gflops, random_boi, timed  # noqa: E402
from lurm_lite.user_training import encode_users, encoding_batches  # noqa: E402

M, H, PERIODS, NNZ = 10, 128, 24, 50


def multi_anchor_flops(x) -> float:
    """FLOPs of eq. (5)-(6)'s forward pass over the ScaleBatch ``x``, however computed.

    Eq. (6): the logits W^a_i . k_j of the U interests present, 2 U H M, after the M x H x H
    product W^a W^p; eq. (5): the M weighted sums of each row's non-zero b_j W^e_j, 2 nnz M H.
    A backward pass is twice each, so a forward + backward pass costs 3x this. An interest
    costs eq. (6) as many FLOPs as a non-zero costs eq. (5): the ratio of this for two
    batches of the same nnz is 1 + (U_1 - U_2) / (nnz + U_2), the arithmetic floor of the
    time ratio if both ran at the same GFLOP/s.
    """
    U, nnz = x.interests.numel(), x.nz_value.numel()
    return 2 * U * H * M + 2 * M * H * H + 2 * nnz * M * H


def smen_forward_flops(batch: dict, n_users: int) -> float:
    """FLOPs of one SMEN forward pass (plus the loss of eq. 3) over ``batch`` ({scale: ScaleBatch}).

    Multiply-adds count 2. Per scale: alpha of eq. (6) for the U interests present
    (2 U H M + the M x H x H product W^a W^p), V = alpha (x) W^e (U M H), the sparse
    product of eq. (5) (2 nnz M H) and the GRU (12 H^2 per step of each of the B M
    sequences: three gates, input and hidden products). Then the switch of eq. (7)
    (2 B M 2H H), the head of eq. (8)-(9) (2 B (M H^2 + M^2 H + (M H)^2)) and the (2n x 2n)
    similarities of eq. (3) over M H dimensions. Element-wise work is left out.
    """
    flops = 0.0
    for x in batch.values():
        U, steps = x.interests.numel(), int(x.lengths.sum())
        flops += multi_anchor_flops(x) + U * M * H + 12 * H * H * steps * M
    flops += 2 * n_users * M * 2 * H * H
    flops += 2 * n_users * (M * H * H + M * M * H + (M * H) ** 2)
    flops += 2 * n_users * n_users * M * H
    return flops


ZIPF = 1.1  # exponent of the skewed interests: P(j) ~ 1 / rank^1.1


def scale_batches(n_users: int, D: int, seed: int, zipf: float | None = None):
    """{month: 24 periods a user, year: 2 periods a user} BoI and their ScaleBatch."""
    everyone = {k: PERIODS for k in range(n_users)}
    month = random_boi(n_users, D, PERIODS, NNZ, seed, "month", fixed=everyone, zipf=zipf)
    year = random_boi(n_users, D, 2, 4 * NNZ, seed + 1, "year", fixed={k: 2 for k in range(n_users)})
    boi = {"month": month, "year": year}
    batch = {g: collate_rows(s, *row_ranges(s.user_ptr[:-1], s.user_ptr[1:])) for g, s in boi.items()}
    return boi, batch


def bench_d(D: int, n_users: int, dev: torch.device, reps: int) -> dict:
    boi, batch = scale_batches(n_users, D, seed=D)
    x = batch["month"].to(dev)
    torch.manual_seed(0)
    model = SMEN(D, H, M, ("month", "year"), sparse=True).to(dev)
    module = model.multi_anchor
    g = torch.randn(x.n_rows, M, H, device=dev)  # upstream gradient

    def sparse_step():
        module.zero_grad(set_to_none=True)
        (module(x) * g).sum().backward()

    b = torch.from_numpy(boi["month"].matrix.toarray()).to(dev)  # (n_rows, D) dense b_t
    W = {n: p.detach().clone().requires_grad_() for n, p in module.named_parameters()}

    def dense_step():
        for p in W.values():
            p.grad = None
        (dense_multi_anchor(b, W["W_e"], W["W_a"], W["W_p"]) * g).sum().backward()

    out = {"n_rows": x.n_rows, "nnz": int(x.nz_value.numel()), "distinct_interests_U": int(x.interests.numel())}
    out["sparse_ms"], out["sparse_reps"] = timed(sparse_step, dev, reps)
    _, zbatch = scale_batches(n_users, D, seed=D, zipf=ZIPF)
    xz = zbatch["month"].to(dev)
    gz = torch.randn(xz.n_rows, M, H, device=dev)

    def zipf_step():
        module.zero_grad(set_to_none=True)
        (module(xz) * gz).sum().backward()

    out["sparse_zipf_ms"], _ = timed(zipf_step, dev, reps)
    out["multi_anchor_gflop"], out["zipf_multi_anchor_gflop"] = 3 * multi_anchor_flops(x) / 1e9, 3 * multi_anchor_flops(xz) / 1e9
    out["zipf_nnz"], out["zipf_distinct_interests_U"] = int(xz.nz_value.numel()), int(xz.interests.numel())
    out["dense_ms"], out["dense_reps"] = timed(dense_step, dev, reps)

    # whole SMEN forward + backward, then the optimizer step: SparseAdam vs dense Adam on W^e
    full = {g_: v.to(dev) for g_, v in batch.items()}
    half = n_users // 2

    def smen_fwd_bwd(m):
        m.zero_grad(set_to_none=True)
        z = m.project(m(full))
        info_nce(z[:half], z[half:2 * half], 0.1).backward()

    out["smen_ms"], _ = timed(lambda: smen_fwd_bwd(model), dev, reps)
    out["smen_train_gflop"] = 3 * smen_forward_flops(full, n_users) / 1e9  # forward + backward (2x)
    for name, sparse in (("row_adam", True), ("torch_sparse_adam", True), ("dense_adam", False)):
        torch.manual_seed(0)
        m = SMEN(D, H, M, ("month", "year"), sparse=sparse).to(dev)
        optimizers = adam_optimizers(m.dense_parameters(), m.sparse_parameters(), lr=1e-3)  # W^e: RowAdam
        if name == "torch_sparse_adam":
            optimizers[1] = torch.optim.SparseAdam(m.sparse_parameters(), lr=1e-3)
        smen_fwd_bwd(m)
        out[f"step_{name}_ms"], _ = timed(lambda opts=optimizers: [o.step() for o in opts], dev, reps)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--quick", action="store_true", help="64 users instead of 256, fewer reps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = io.device(args.device)
    n_users, reps = (64, 3) if args.quick else (256, 5)
    t0 = time.perf_counter()
    per_d = {}
    for D in (1_000, 10_000, 100_000):
        per_d[D] = bench_d(D, n_users, dev, reps)
        print(f"D={D:>6}: sparse {per_d[D]['sparse_ms']:.1f} ms, dense {per_d[D]['dense_ms']:.1f} ms, "
              f"SMEN {per_d[D]['smen_ms']:.1f} ms, step RowAdam {per_d[D]['step_row_adam_ms']:.1f} ms, SparseAdam "
              f"{per_d[D]['step_torch_sparse_adam_ms']:.1f} ms, Adam {per_d[D]['step_dense_adam_ms']:.1f} ms", flush=True)

    n_encode = 2048 if not args.quick else 512
    boi, _ = scale_batches(n_encode, 100_000, seed=1)
    torch.manual_seed(0)
    model = SMEN(100_000, H, M, ("month", "year")).to(dev)
    encode = lambda: encode_users(model, boi, boi["month"].user_ids, dev, batch_size=512)  # noqa: E731
    encode_ms, _ = timed(encode, dev, reps=2)
    windows = encoding_batches(model, boi, boi["month"].user_ids, dev, None, None, 512)  # what encode_users runs
    encode_gflop = sum(smen_forward_flops(batch, len(boi["month"].user_ids[part])) for part, batch in windows) / 1e9
    peak = mm_gflops(dev, reps)
    train_gflops = per_d[100_000]["smen_train_gflop"] / (per_d[100_000]["smen_ms"] / 1000)

    results = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "batch": {"users": n_users, "periods_per_user": PERIODS, "nonzeros_per_period": NNZ, "M": M, "H": H},
        "sparse_ms": {D: r["sparse_ms"] for D, r in per_d.items()},
        "dense_ms": {D: r["dense_ms"] for D, r in per_d.items()},
        "smen_ms": {D: r["smen_ms"] for D, r in per_d.items()},
        "optimizer_step_ms": {name: {D: r[f"step_{name}_ms"] for D, r in per_d.items()}
                              for name in ("row_adam", "torch_sparse_adam", "dense_adam")},
        "sparse_zipf_ms": {D: r["sparse_zipf_ms"] for D, r in per_d.items()},
        "sparse_d_scaling": per_d[100_000]["sparse_ms"] / per_d[1_000]["sparse_ms"],
        "sparse_d_scaling_uniform": per_d[100_000]["sparse_ms"] / per_d[1_000]["sparse_ms"],
        "sparse_d_scaling_zipf": per_d[100_000]["sparse_zipf_ms"] / per_d[1_000]["sparse_zipf_ms"],
        # the same ratios of eq. (5)-(6)'s FLOPs (multi_anchor_flops): what the time ratio would be at one GFLOP/s
        "flop_d_scaling_uniform": per_d[100_000]["multi_anchor_gflop"] / per_d[1_000]["multi_anchor_gflop"],
        "flop_d_scaling_zipf": per_d[100_000]["zipf_multi_anchor_gflop"] / per_d[1_000]["zipf_multi_anchor_gflop"],
        "sparse_vs_dense_at_1e5": per_d[100_000]["dense_ms"] / per_d[100_000]["sparse_ms"],
        "users_encoded_per_s": n_encode / (encode_ms / 1000),
        "mm_gflops": peak,
        "train_gflops": train_gflops,
        "encode_gflops": encode_gflop / (encode_ms / 1000),
        "train_flops_fraction": train_gflops / peak,
        "encode_flops_fraction": encode_gflop / (encode_ms / 1000) / peak,
        "details": per_d,
        "quick": args.quick,
        "wall_s": time.perf_counter() - t0,
    }
    io.save_json(args.json, results)
    print(f"sparse_d_scaling {results['sparse_d_scaling']:.2f} (zipf {results['sparse_d_scaling_zipf']:.2f}; target <= 1.5; "
          f"FLOP ratios {results['flop_d_scaling_uniform']:.2f} / {results['flop_d_scaling_zipf']:.2f}), sparse_vs_dense_at_1e5 "
          f"{results['sparse_vs_dense_at_1e5']:.1f} (target >= 10), users_encoded_per_s "
          f"{results['users_encoded_per_s']:.0f}; training {train_gflops:.1f} GFLOP/s "
          f"({results['train_flops_fraction']:.0%} of torch.mm's {peak:.1f}), encoding "
          f"{results['encode_gflops']:.1f} GFLOP/s ({results['encode_flops_fraction']:.0%}); wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
