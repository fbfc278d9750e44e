"""Quality of LURM across seeds: downstream AUC (Tables 2-5) and how much of BoI survives.

    python benchmarks/quality.py --json benchmarks/results/quality.json [--quick] [--seeds 0 1 2]
                                 [--scale default] [--work-dir DIR] [--device auto]

For each seed S, the notebook chain 01-05 runs into ``WORK/seed_S`` with ``SEED = S``: the
synthetic dataset is generated with S (for ``synthetic``), and the item encoder, k-means,
BoI, SMEN and the 80/20 split of every task are redrawn with it. ``run_chain`` skips the
stages already complete, and every per-seed result below is cached in the run folder, so
a killed benchmark continues where it stopped. Then, on that run:

- the methods of notebook 05 (``results.json``: LURM, BoI, TF-IDF, ...);
- ``LURM(1anchor-128)``: SMEN retrained with M = 1 anchor and H = 128 (Table 5, §3.6),
  the scale's training config, evaluated on the same split;
- ``RandomProj(1280)``: a fixed Gaussian random projection of the summed monthly BoI to
  1280 dims (``lurm_lite.diagnostics.random_projection_features``), no training at all;
- diagnostics: ``boi_survival_r2`` (held-out R^2 of b_T's top 64 SVD components from the
  representation) for LURM, LURM(1anchor-128), RandomProj(1280) and an untrained SMEN of
  the run's config; ``view_retrieval_top1`` (same-user retrieval of the §2.2.4 views) of the
  trained and the untrained SMEN on 1000 users (seen in training: SMEN is self-supervised on
  every user); SMEN's loss per epoch (``smen_loss.json`` of notebook 04).

Output JSON: ``{"dataset", "seeds", "tasks": {TASK: {METHOD: {"auc_mean", "auc_sd"}}},
"diagnostics": {...}, "seconds"}``; ``auc_sd`` is the sample standard deviation over seeds
(null with one seed). A Markdown table (task x method, AUC % mean ± sd) and the gaps
LURM - BoI per task are printed. ``--quick`` runs the first seed only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_prep.schema import load_dataset  # noqa: E402
from lurm_lite import analysis, diagnostics, io  # noqa: E402
from lurm_lite.boi import load_boi  # noqa: E402
from lurm_lite.chain import run_chain  # noqa: E402
from lurm_lite.config import for_scale  # noqa: E402
from lurm_lite.downstream import all_task_labels  # noqa: E402
from lurm_lite.io import load_json, save_json  # noqa: E402
from lurm_lite.results import load_results  # noqa: E402
from lurm_lite.runs import RunPaths  # noqa: E402
from lurm_lite.smen import SMEN, load_smen  # noqa: E402
from lurm_lite.user_training import encode_users, user_reps_of  # noqa: E402

STAGES = ["01", "02", "03", "04", "05"]
ONE_ANCHOR = "LURM(1anchor-128)"
RANDOM_PROJ_DIM = 1280
RANDOM_PROJ = f"RandomProj({RANDOM_PROJ_DIM})"
UNTRAINED = "SMEN(untrained)"
RETRIEVAL_USERS = 1000
CACHE_VERSION = 1  # bump when what a seed computes changes: cached per-seed results are redone

# ---------------------------------------------------------------------------------------
# Aggregation over seeds
# ---------------------------------------------------------------------------------------


def mean_sd(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "sd", "per_seed"}``: sd is the sample standard deviation (ddof 1), None for one value."""
    values = [float(v) for v in values]
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": float(np.mean(values)) if values else None, "sd": sd, "per_seed": values}


def aggregate_aucs(per_seed: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, dict]]:
    """``[{task: {method: auc}}]`` (one per seed) -> ``{task: {method: {"auc_mean", "auc_sd"}}}``.

    A (task, method) missing from some seeds is averaged over the seeds that have it; the
    sd is the sample standard deviation (ddof 1), None when one seed has it.
    """
    values: dict[str, dict[str, list[float]]] = {}
    for seed_result in per_seed:
        for task, methods in seed_result.items():
            for method, auc in methods.items():
                values.setdefault(task, {}).setdefault(method, []).append(float(auc))
    out: dict[str, dict[str, dict]] = {}
    for task, methods in values.items():
        for method, aucs in methods.items():
            summary = mean_sd(aucs)
            out.setdefault(task, {})[method] = {"auc_mean": summary["mean"], "auc_sd": summary["sd"]}
    return out


def gaps(per_seed: Sequence[Mapping[str, Mapping[str, float]]], method: str, reference: str) -> dict[str, dict]:
    """AUC(method) - AUC(reference) per task, paired within each seed.

    Returns ``{task: {"mean", "sd", "per_seed", "n_seeds"}}`` over the seeds that have both.
    """
    diffs: dict[str, list[float]] = {}
    for seed_result in per_seed:
        for task, methods in seed_result.items():
            if method in methods and reference in methods:
                diffs.setdefault(task, []).append(float(methods[method]) - float(methods[reference]))
    return {task: {**mean_sd(d), "n_seeds": len(d)} for task, d in diffs.items()}


def _pct(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}" + (f" ± {100 * sd:.2f}" if sd is not None else "")


def markdown_table(tasks: Mapping[str, Mapping[str, Mapping[str, Any]]], methods: Sequence[str] | None = None) -> str:
    """Tasks as rows, methods as columns, cells ``AUC % mean ± sd`` (no ± with one seed)."""
    if methods is None:
        methods = list(dict.fromkeys(m for per_task in tasks.values() for m in per_task))
    lines = ["| task | " + " | ".join(methods) + " |", "| --- |" + " --- |" * len(methods)]
    for task, per_method in tasks.items():
        cells = [_pct(per_method[m]["auc_mean"], per_method[m]["auc_sd"]) if m in per_method else "-"
                 for m in methods]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# One seed
# ---------------------------------------------------------------------------------------


def _smen_history(run: RunPaths) -> dict[str, list]:
    """SMEN's loss history of notebook 04: ``smen_loss.json``, else the checkpoint's ``history``."""
    if run.smen_loss.exists():
        return load_json(run.smen_loss)
    if run.smen_checkpoint.exists():
        return torch.load(run.smen_checkpoint, map_location="cpu", weights_only=False)["history"]
    return {"step": [], "epoch": []}


def _cache_key(run: RunPaths, scale: str, seed: int) -> dict[str, Any]:
    """What a cached per-seed result depends on: the request and the run's model and results files."""
    return {"version": CACHE_VERSION, "scale": scale, "seed": int(seed),
            "smen_mtime_ns": run.smen.stat().st_mtime_ns, "results_mtime_ns": run.results.stat().st_mtime_ns}


def run_seed(seed: int, scale: str, work_dir: Path, device: str, log=print) -> dict[str, Any]:
    """Chain 01-05, the two extra methods and the diagnostics of one seed (cached in the run folder)."""
    start = time.perf_counter()
    run = RunPaths(work_dir / f"seed_{seed}")
    run_chain(dataset="synthetic", scale=scale, run_dir=run.root, device=device, seed=seed, only=STAGES, log=log)
    chain_seconds = time.perf_counter() - start
    cache = run.root / "quality" / "seed_result.json"
    key = _cache_key(run, scale, seed)
    if cache.exists() and load_json(cache).get("key") == key:
        log(f"[quality] seed {seed}: cached result {cache}")
        return load_json(cache)["result"]

    config = for_scale(scale)
    timing: dict[str, float] = {"chain": round(chain_seconds, 1)}
    results = load_results(run.results)
    dataset = load_dataset(run.dataset_dir())
    history = dataset.history()
    user_ids = np.unique(history["user_id"].to_numpy()).astype(np.int64)  # notebook 05's users
    labels = all_task_labels(dataset)
    boi = {g: load_boi(run.boi(g)) for g in ("month", "year")}
    D = boi["month"].n_interests
    item_interest = np.load(run.item_interest)
    model = load_smen(run.smen, "cpu")
    compute = io.device(device)

    def timed(name, fn):
        t0 = time.perf_counter()
        value = fn()
        timing[name] = round(time.perf_counter() - t0, 1)
        return value

    # the representations
    reps = {"LURM": user_reps_of(run.user_reps, user_ids)}
    one_anchor = dataclasses.replace(config.smen, anchors=1, hidden=128)
    reps[ONE_ANCHOR], info = timed("train " + ONE_ANCHOR, lambda: analysis.train_variant(
        {g: boi[g] for g in one_anchor.scales}, one_anchor, config.user_training, user_ids, compute, seed,
        cache_path=run.root / "quality" / "variant_1anchor-128.npz", cache_key={"slug": "1anchor-128"}))
    reps[RANDOM_PROJ] = timed("random projection", lambda: diagnostics.random_projection_features(
        boi["month"], user_ids, RANDOM_PROJ_DIM, seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        untrained = SMEN(**model.init_kwargs()).eval()  # the run's config, initial weights
    reps[UNTRAINED] = timed("encode untrained", lambda: encode_users(
        untrained, boi, user_ids, compute, batch_size=config.user_training.encode_batch_size))

    # downstream AUC: notebook 05's methods + the two added here, on the same split
    auc = {task: {method: m["auc"] for method, m in per_method.items()}
           for task, per_method in results["tasks"].items()}
    for method in (ONE_ANCHOR, RANDOM_PROJ):
        evaluated = timed("probe " + method, lambda: analysis.evaluate_representation(
            reps[method], user_ids, dataset, config.downstream, seed, labels, run.probes))
        for task, m in evaluated.items():
            auc.setdefault(task, {})[method] = m["auc"]

    # diagnostics
    boi_T = analysis.boi_in_window(history, item_interest, D, user_ids, None)  # (n, D) whole-life b_T
    r2 = {name: timed("r2 " + name, lambda: diagnostics.boi_survival_r2(reps[name], boi_T, seed))
          for name in ("LURM", ONE_ANCHOR, RANDOM_PROJ, UNTRAINED)}
    retrieval = {name: timed("retrieval " + name, lambda: diagnostics.view_retrieval_top1(
        m, boi, user_ids, config.user_training, seed, compute, RETRIEVAL_USERS))
        for name, m in (("LURM", model.to(compute)), (UNTRAINED, untrained.to(compute)))}
    losses = _smen_history(run)
    result = {
        "dataset": results["dataset"], "auc": auc, "boi_survival_r2": r2, "view_retrieval_top1": retrieval,
        "retrieval_users": int(min(RETRIEVAL_USERS, len(user_ids))),
        "smen_loss_epoch": [float(v) for v in losses.get("epoch", [])],
        "one_anchor_info": info, "n_users": int(len(user_ids)), "n_interests": int(D),
        "seconds": {**timing, "total": round(time.perf_counter() - start, 1)},
    }
    save_json(cache, {"key": key, "result": result})
    return result


# ---------------------------------------------------------------------------------------
# All seeds
# ---------------------------------------------------------------------------------------


def summarise(per_seed: Mapping[int, Mapping[str, Any]], seconds: float) -> dict[str, Any]:
    """The benchmark's JSON from the per-seed results (``run_seed``'s dicts, by seed)."""
    seeds = list(per_seed)
    results = [per_seed[s] for s in seeds]
    aucs = [r["auc"] for r in results]

    def by_name(key: str) -> dict[str, dict]:
        names = list(dict.fromkeys(n for r in results for n in r[key]))
        return {n: mean_sd([r[key][n] for r in results if n in r[key]]) for n in names}

    loss_last = [r["smen_loss_epoch"][-1] for r in results if r["smen_loss_epoch"]]
    loss_first = [r["smen_loss_epoch"][0] for r in results if r["smen_loss_epoch"]]
    diagnostics_out = {
        "boi_survival_r2": by_name("boi_survival_r2"),
        "view_retrieval_top1": by_name("view_retrieval_top1"),
        "retrieval_users": results[0]["retrieval_users"],
        "smen_loss_first_epoch": mean_sd(loss_first),
        "smen_loss_last_epoch": mean_sd(loss_last),
        "smen_loss_epoch_per_seed": {str(s): r["smen_loss_epoch"] for s, r in zip(seeds, results)},
        "gap_lurm_minus_boi": gaps(aucs, "LURM", "BoI"),
        "auc_per_seed": {str(s): r["auc"] for s, r in zip(seeds, results)},
        "seconds_per_seed": {str(s): r["seconds"] for s, r in zip(seeds, results)},
        "one_anchor_info": {str(s): r["one_anchor_info"] for s, r in zip(seeds, results)},
        "n_users": {str(s): r["n_users"] for s, r in zip(seeds, results)},
        "n_interests": {str(s): r["n_interests"] for s, r in zip(seeds, results)},
    }
    return {"dataset": results[0]["dataset"], "seeds": [int(s) for s in seeds], "tasks": aggregate_aucs(aucs),
            "diagnostics": diagnostics_out, "seconds": round(seconds, 1)}


def report(summary: Mapping[str, Any]) -> str:
    """The printed report: the AUC table, the LURM - BoI gaps and the diagnostics."""
    d = summary["diagnostics"]
    first = ["LURM", "BoI", ONE_ANCHOR, RANDOM_PROJ]
    methods = [m for m in first if any(m in t for t in summary["tasks"].values())]
    methods += [m for m in dict.fromkeys(m for t in summary["tasks"].values() for m in t) if m not in methods]
    lines = [f"## {summary['dataset']}, seeds {summary['seeds']}: AUC % (mean ± sd over seeds)", "",
             markdown_table(summary["tasks"], methods), "LURM - BoI (AUC points, paired by seed):"]
    for task, g in d["gap_lurm_minus_boi"].items():
        lines.append(f"  {task:<24} {_pct(g['mean'], g['sd'])}")
    lines.append("BoI survival R^2 (b_T's top SVD components from the representation, held out):")
    for name, s in d["boi_survival_r2"].items():
        lines.append(f"  {name:<24} {s['mean']:.3f}" + (f" ± {s['sd']:.3f}" if s["sd"] is not None else ""))
    n_retrieval = d["retrieval_users"]
    lines.append(f"Same-user view retrieval top-1 ({n_retrieval} users; chance {1 / n_retrieval:.4f}):")
    for name, s in d["view_retrieval_top1"].items():
        lines.append(f"  {name:<24} {s['mean']:.3f}" + (f" ± {s['sd']:.3f}" if s["sd"] is not None else ""))
    lines.append(f"SMEN loss, first -> last epoch: {d['smen_loss_first_epoch']['mean']:.4f} -> "
                 f"{d['smen_loss_last_epoch']['mean']:.4f}")
    lines.append(f"{summary['seconds']:.0f} s in all")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="where to write the results JSON")
    parser.add_argument("--quick", action="store_true", help="the first seed only")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scale", default="default", choices=["tiny", "default", "paper"])
    parser.add_argument("--work-dir", default=None, help="run folders WORK/seed_S (default runs/quality-SCALE)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    seeds = args.seeds[:1] if args.quick else args.seeds
    work_dir = Path(args.work_dir or ROOT / "runs" / f"quality-{args.scale}").resolve()

    def log(message: str) -> None:
        print(message, flush=True)

    start = time.perf_counter()
    per_seed = {}
    for seed in seeds:
        log(f"[quality] seed {seed}: {work_dir / f'seed_{seed}'}")
        per_seed[seed] = run_seed(seed, args.scale, work_dir, args.device, log)
    summary = summarise(per_seed, time.perf_counter() - start)
    json.dumps(summary, allow_nan=False)  # a NaN fails here rather than becoming invalid JSON
    save_json(args.json, summary)
    print(report(summary))
    print(f"wrote {args.json}")
    return summary


if __name__ == "__main__":
    main()
