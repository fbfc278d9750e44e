"""Where the demo's time goes: by stage, and inside SMEN training by operation.

    python benchmarks/profile_demo.py --run-dir runs/demo --json benchmarks/results/profile_demo.json
    python benchmarks/profile_demo.py --run-dir runs/demo --json OUT --steps 3   # ~2 minutes

Reads a finished run folder of ``make demo`` (or any default-scale run) and reports:

- ``stages``: seconds of each notebook (``chain.json``), its CPU seconds on all cores and
  ``cores_busy`` (their ratio: how much of the machine the stage used), with what the stage JSONs say inside
  it (04: training, encoding, the per-epoch probe of the learning curve; 06: each window;
  08: each variant's training and probe, the diagnostics);
- ``chain_totals``: the same for the whole chain, and ``wall_seconds_every_core_busy`` (CPU
  seconds / cores): the shortest the chain could take on this machine doing the same work;
- ``training_step_ms``: one SMEN training step at the run's settings on the run's BoI, split
  into data collation (``PairSampler.sample``), the multi-anchor module (eq. 5-6, forward +
  backward, every scale), the GRU (§2.2.2, forward + backward), the switch, head and loss
  (eq. 7-9 and 3), the optimiser step, and the rest of a whole step measured end to end
  (``python_and_other``: autograd bookkeeping, Python between kernels). Each part is timed
  on its own on the same batch (forward + backward with its inputs detached), median of
  ``--steps`` batches after a warm-up; ``gru_flops_fraction``: the GRU's arithmetic rate
  (FLOPs counted from the steps it computes) against a plain ``torch.mm`` in the same process;
- ``encode_ms_per_1000_users``: whole-life encoding, collation against the forward pass;
- ``probe_seconds``: one ``downstream.evaluate`` of the run's LURM representations on every
  task, in this process (one thread) and side by side (one worker per core).

Run it alone: the machine is shared by nothing else, or the numbers mean little.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_prep.schema import load_dataset  # noqa: E402
from lurm_lite import downstream  # noqa: E402
from lurm_lite.boi import load_boi  # noqa: E402
from lurm_lite.config import SMENConfig, UserTrainingConfig, for_scale  # noqa: E402
from lurm_lite.contrastive import adam_optimizers, info_nce, optimizer_step  # noqa: E402
from lurm_lite.io import load_json, save_json  # noqa: E402
from lurm_lite.runs import RunPaths  # noqa: E402
from lurm_lite.smen import SMEN  # noqa: E402
from lurm_lite.testing import mm_gflops, timed  # noqa: E402
from lurm_lite.user_training import PairSampler, encoding_batches, load_user_reps  # noqa: E402


def stage_breakdown(run: RunPaths, chain: dict) -> dict:
    """Seconds per notebook (``chain``: the run's chain.json) and, where its JSON records them, per part of it."""
    cpu = chain.get("stage_cpu_seconds", {})  # kept by the runner since stop 24
    stages = {name: {"seconds": seconds, **({"cpu_seconds": cpu[name], "cores_busy": round(cpu[name] / seconds, 2)}
                                            if name in cpu else {})}
              for name, seconds in chain["stage_seconds"].items()}
    smen = load_json(run.stage_json("04_smen"))
    curve = [point.get("probe_seconds", 0.0) for point in smen.get("learning_curve", [])]
    stages.get("04_smen", {}).update({
        "train_seconds (learning-curve probes included)": smen["train_seconds"],
        "learning_curve_probe_seconds": round(sum(curve), 1), "encode_seconds": smen["encode_seconds"]})
    for name in ("06_length_ablation", "08_ablations"):
        if run.stage_json(name).exists() and name in stages:
            stages[name]["parts"] = load_json(run.stage_json(name)).get("seconds", {})
    return stages


def chain_totals(chain: dict) -> dict:
    """The whole chain (``chain``: chain.json): wall and CPU seconds, cores busy, and the wall time were every core busy."""
    if "total_cpu_seconds" not in chain:
        return {"wall_seconds": chain["total_seconds"]}
    cpu, cores = chain["total_cpu_seconds"], chain["cpu_count"]
    return {"wall_seconds": chain["total_seconds"], "cpu_seconds": cpu, "cpu_count": cores,
            "cores_busy": round(cpu / chain["total_seconds"], 2), "wall_seconds_every_core_busy": round(cpu / cores, 1)}


def gru_flops(batch, model: SMEN) -> float:
    """FLOPs of the GRU (§2.2.2) forward over ``batch`` as TimeAggregation runs it: the M
    sequences of each view packed at their own lengths; per step 2 x (3H x H) multiply-adds
    for the state, and 2 x (3H x H) for the input at the non-empty periods only."""
    M, H = model.anchors, model.hidden
    slots = sum(int(x.lengths.sum()) * M + x.n_rows * M for x in batch.values())
    return slots * 2 * (3 * H * H)


def training_step_profile(boi, smen_config: SMENConfig, train_config: UserTrainingConfig, steps: int,
                          seed: int = 0) -> dict:
    """Milliseconds of each part of one SMEN training step (see the module docstring)."""
    torch.manual_seed(seed)
    model = SMEN(boi[smen_config.scales[0]].n_interests, smen_config.hidden, smen_config.anchors,
                 smen_config.scales, sparse=smen_config.sparse_grad)
    optimizers = adam_optimizers(model.dense_parameters(), model.sparse_parameters(), train_config.lr)
    sampler = PairSampler(boi, smen_config.scales, train_config)
    rng = np.random.default_rng(seed)
    users = rng.permutation(sampler.users)[:train_config.batch_size]  # (B,)
    batch = sampler.sample(users, rng)  # {scale: ScaleBatch} of 2B views
    B = len(users)

    def whole_step():
        z = model.project(model(batch))  # (2B, M*H)
        optimizer_step(info_nce(z[:B], z[B:], train_config.tau), optimizers)

    def multi_anchor():
        model.zero_grad(set_to_none=True)
        sum(model.multi_anchor(batch[s]).sum() for s in model.scales).backward()

    r = {s: model.multi_anchor(batch[s]).detach().requires_grad_() for s in model.scales}  # each (n_rows, M, H)

    def gru():
        model.zero_grad(set_to_none=True)
        sum(model.time_aggregation(r[s], batch[s]).sum() for s in model.scales).backward()

    r_tilde = [model.time_aggregation(r[s], batch[s]).detach().requires_grad_() for s in model.scales]  # (2B, M, H)

    def switch_head_loss():
        model.zero_grad(set_to_none=True)
        R_hat = model.switch(*r_tilde) if model.switch is not None else r_tilde[0]  # (2B, M, H)
        z = model.project(R_hat)
        info_nce(z[:B], z[B:], train_config.tau).backward()

    cpu = torch.device("cpu")

    def median_ms(fn) -> float:
        return round(timed(fn, cpu, steps, budget_s=float("inf"))[0], 1)

    def optimiser():
        for optimizer in optimizers:
            optimizer.step()

    parts = {
        "collation": median_ms(lambda: sampler.sample(users, rng)),
        "multi_anchor_fwd_bwd": median_ms(multi_anchor),
        "gru_fwd_bwd": median_ms(gru),
        "switch_head_loss_fwd_bwd": median_ms(switch_head_loss),
    }
    whole_step()  # gradients for every parameter (sparse W^e included) before timing the step alone
    parts["optimizer_step"] = median_ms(optimiser)
    whole = median_ms(whole_step) + parts["collation"]
    parts["python_and_other"] = round(whole - sum(parts.values()), 1)
    gru_gflops = 3 * gru_flops(batch, model) / (parts["gru_fwd_bwd"] / 1000) / 1e9  # backward = 2x forward
    machine = mm_gflops(cpu)
    return {"whole_step_ms": round(whole, 1), "parts_ms": parts,
            "gru_gflops": round(gru_gflops, 1), "mm_gflops": round(machine, 1),
            "gru_flops_fraction": round(gru_gflops / machine, 3),
            "share": {k: round(v / whole, 3) for k, v in parts.items()},
            "batch": {"views": 2 * B, **{f"{s}_steps": int(batch[s].lengths.sum()) for s in model.scales}}}


def encode_profile(boi, model: SMEN, user_ids: np.ndarray, batch_size: int) -> dict:
    """Whole-life encoding of ``user_ids``: collation against the forward pass, per 1000 users."""
    collate = forward = 0.0
    with torch.inference_mode():
        batches = encoding_batches(model, boi, user_ids, torch.device("cpu"), None, None, batch_size)
        while True:
            start = time.perf_counter()
            item = next(batches, None)
            collate += time.perf_counter() - start
            if item is None:
                break
            start = time.perf_counter()
            model(item[1])
            forward += time.perf_counter() - start
    per = 1000 / len(user_ids)
    return {"collation": round(1000 * collate * per, 1), "forward": round(1000 * forward * per, 1)}


def probe_profile(run: RunPaths, config) -> dict:
    """One downstream.evaluate of the run's LURM representations: in-process vs side by side."""
    dataset = load_dataset(run.dataset_dir())
    user_ids, reps = load_user_reps(run.user_reps)
    labels = downstream.all_task_labels(dataset)
    seconds = {}
    for name, workers in (("side_by_side", None), ("in_process", 1), ("side_by_side_warm", None)):
        start = time.perf_counter()
        downstream.evaluate(reps, user_ids, dataset, dataclasses.replace(config, workers=workers), 0, "cpu", labels)
        seconds[name] = round(time.perf_counter() - start, 1)
    seconds["workers"] = downstream.probe_workers(config, "cpu", len(labels))
    seconds["tasks"] = len(labels)
    return seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/demo", help="a finished default-scale run folder")
    parser.add_argument("--json", required=True, help="where to write the profile")
    parser.add_argument("--steps", type=int, default=5, help="batches timed per part (median)")
    args = parser.parse_args(argv)
    run = RunPaths(args.run_dir)
    chain = load_json(run.chain_log)
    stored = load_json(run.stage_json("04_smen"))
    scale = for_scale("default")
    smen_config = dataclasses.replace(scale.smen, **{k: (tuple(v) if isinstance(v, list) else v)
                                                     for k, v in stored["smen_config"].items()})
    train_config = dataclasses.replace(scale.user_training, **stored["train_config"])
    boi = {g: load_boi(run.boi(g)) for g in smen_config.scales}
    torch.manual_seed(0)
    model = SMEN(boi[smen_config.scales[0]].n_interests, smen_config.hidden, smen_config.anchors,
                 smen_config.scales).eval()
    user_ids = boi[smen_config.scales[0]].user_ids[:2000]
    result = {
        "run_dir": str(run.root), "torch_threads": torch.get_num_threads(),
        "stages": stage_breakdown(run, chain),
        "chain_totals": chain_totals(chain),
        "training_step": training_step_profile(boi, smen_config, train_config, args.steps),
        "encode_ms_per_1000_users": encode_profile(boi, model, user_ids, train_config.encode_batch_size),
        "probe_seconds": probe_profile(run, scale.downstream),
    }
    save_json(args.json, result)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
