"""How far SMEN's architecture (eq. 5-7) gets on one task when trained end to end on its label.

    python benchmarks/supervised_ceiling.py --run-dir runs/demo --task age --epochs 12 --json OUT

Issue "LURM that keeps what BoI holds": contrastive LURM scores under the raw BoI it
compresses on the profile tasks. This separates the objective from the architecture: a
fresh SMEN of the run's configuration (``smen.pt``: D, H, M, scales) plus a linear head on
R^ (M*H -> K classes) is trained with cross-entropy on the task's label, on the training
users of the probe's 80/20 split (``downstream.split_indices``, the same test users as
notebook 05's MLP probe), over whole-life windows (``encoding_batches``, as the
representation is encoded). Adam 1e-3 for the dense weights and RowAdam for W^e
(``contrastive.adam_optimizers``), batches of ``--batch-size`` users. After every epoch the
test AUC (``downstream.classification_metrics``) is reported beside the MLP probe's AUC of
b_T and of LURM from the run's ``results.json``. If the curve levels off under BoI, the
gap is the architecture's on this data, not the contrastive objective's. Our choice
(the paper trains SMEN self-supervised only); run it alone, about 33 s an epoch on the
demo's data on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_prep.schema import load_dataset  # noqa: E402
from lurm_lite import downstream, io  # noqa: E402
from lurm_lite.boi import load_boi  # noqa: E402
from lurm_lite.contrastive import adam_optimizers, optimizer_step  # noqa: E402
from lurm_lite.io import load_json, save_json  # noqa: E402
from lurm_lite.runs import RunPaths  # noqa: E402
from lurm_lite.smen import SMEN, load_smen  # noqa: E402
from lurm_lite.user_training import encoding_batches, inference  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="a finished run folder (notebooks 01-05)")
    parser.add_argument("--task", default="age")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="split and initial weights")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)
    run = RunPaths(args.run_dir)
    dev = io.device(args.device)
    torch.manual_seed(args.seed)
    dataset = load_dataset(run.dataset_dir())
    reference = load_smen(run.smen, "cpu")
    boi = {s: load_boi(run.boi(s)) for s in reference.scales}
    users, y = downstream.all_task_labels(dataset)[args.task]
    users, y = np.asarray(users, dtype=np.int64), np.asarray(y)
    encoded = np.isin(users, boi[reference.scales[0]].user_ids)  # users with a BoI row
    users, y = users[encoded], y[encoded]
    train, test = downstream.split_indices(y, args.seed)
    model = SMEN(reference.n_interests, reference.hidden, reference.anchors, reference.scales).to(dev)
    head = torch.nn.Linear(reference.anchors * reference.hidden, int(y.max()) + 1).to(dev)  # R^ -> K logits
    optimizers = adam_optimizers(list(model.dense_parameters()) + list(head.parameters()),
                                 model.sparse_parameters(), lr=1e-3)
    rng = np.random.default_rng(args.seed)
    test_order = np.argsort(users[test])  # encoding_batches reads ids in ascending order

    def test_auc() -> float:
        ids = users[test][test_order]
        with inference(model):
            logits = torch.cat([head(model(batch).flatten(1)).cpu()  # (b, K)
                                for _, batch in encoding_batches(model, boi, ids, dev, None, None, 512)])
        proba = torch.softmax(logits.double(), dim=1).numpy()  # (n_test, K)
        return downstream.classification_metrics(y[test][test_order], proba)["auc"]

    curve = []
    for epoch in range(1, args.epochs + 1):
        start, losses = time.perf_counter(), []
        model.train()
        order = rng.permutation(train)
        for first in range(0, len(order), args.batch_size):
            rows = np.sort(order[first:first + args.batch_size])  # (b,) ascending ids
            for _, batch in encoding_batches(model, boi, users[rows], dev, None, None, len(rows)):
                loss = F.cross_entropy(head(model(batch).flatten(1)), torch.from_numpy(y[rows]).to(dev))
                optimizer_step(loss, optimizers)
                losses.append(loss.item())
        curve.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "test_auc": test_auc(),
                      "seconds": round(time.perf_counter() - start, 1)})
        print(curve[-1], flush=True)
    results = load_json(run.results)["tasks"].get(args.task, {})
    out = {"run_dir": str(run.root), "task": args.task, "seed": args.seed, "n_train": int(len(train)),
           "n_test": int(len(test)), "curve": curve,
           "probe_auc": {m: results[m]["auc"] for m in ("BoI", "LURM") if m in results}}
    save_json(args.json, out)
    print(f"{args.task}: supervised SMEN {100 * curve[-1]['test_auc']:.1f} after {args.epochs} epochs; MLP probe "
          + ", ".join(f"{m} {100 * a:.1f}" for m, a in out["probe_auc"].items()))
    return out


if __name__ == "__main__":
    main()
