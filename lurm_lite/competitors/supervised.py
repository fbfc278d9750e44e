"""Training and scoring the supervised competitors, TextCNN and HAN, per task (LURM §3.3-3.4).

Unlike LURM, PTUM and SUMN, whose representations are frozen and probed (§3.1 Stage II),
"the user representation encoder and the classifier are trained together" (§3.3), with
Adam, learning rate 0.001 and batch 256 on the 50 most recent behaviours (§3.4).

To compare with the probed methods on the same users, :func:`train_and_score` uses the
probe's split exactly (``downstream.split_indices`` for the 80/20 test split, then
``downstream.validation_split`` for the validation share of the training part, as
``downstream.evaluate_task``) and the probe's metrics (AUC, ACC, bootstrap interval).
Beyond the paper, which does not say how long they train: early stopping on the validation
cross-entropy, as the probe's ``train_probe``, with ``CompetitorConfig``'s
``supervised_max_epochs`` and ``supervised_patience``. On the CPU training runs on one
thread, as the probe (``downstream.one_cpu_thread``): on the busy 2-core development
machine one step of batch 256, L = 50, Tr = 12 at the default sizes took 2.2 s (TextCNN) and
3.2 s (HAN) on one thread against 2.9 s and 7.2 s on two, and the tests' tiny HAN 10x less.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from lurm_lite import downstream, io
from lurm_lite.competitors.han import HAN
from lurm_lite.competitors.sequences import BehaviourSequences, TitleTokens, behaviour_tokens
from lurm_lite.competitors.textcnn import TextCNN
from lurm_lite.config import CompetitorConfig, DownstreamConfig

SUPERVISED_MODELS: dict[str, type[nn.Module]] = {"TextCNN": TextCNN, "HAN": HAN}

EVAL_BATCH_FACTOR = 4  # users per no-grad forward pass: this many training batches


def _batch(seqs: BehaviourSequences, titles: TitleTokens, rows: np.ndarray, device: torch.device
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The model input of users ``rows``: tokens (B, L, Tr) and lengths (B,) on ``device``."""
    tokens = torch.from_numpy(behaviour_tokens(seqs.items[rows], titles)).to(device)  # (B, L, Tr)
    lengths = torch.from_numpy(seqs.lengths[rows]).to(device)  # (B,)
    return tokens, lengths


@torch.no_grad()
def _logits(model: nn.Module, seqs: BehaviourSequences, titles: TitleTokens, rows: np.ndarray, batch_size: int,
            device: torch.device) -> torch.Tensor:
    """(len(rows), K) logits on the CPU in eval mode (no dropout)."""
    model.eval()
    return torch.cat([model(*_batch(seqs, titles, rows[s:s + batch_size], device)).cpu()
                      for s in range(0, len(rows), batch_size)])


def train_and_score(name: str, seqs: BehaviourSequences, titles: TitleTokens, y: np.ndarray,
                    competitor_config: CompetitorConfig, downstream_config: DownstreamConfig, seed: int,
                    device: str | torch.device = "cpu") -> dict[str, Any]:
    """Train ``SUPERVISED_MODELS[name]`` end to end on one task and score it on the probe's test users.

    ``seqs`` rows are the task's users in ascending id order and ``y`` their labels
    0..K-1, as ``downstream.evaluate_task`` receives X and y. Adam
    (``competitor_config.lr``), batches of ``supervised_batch_size`` users, at most
    ``supervised_max_epochs`` epochs, stopping after ``supervised_patience`` epochs without a
    lower validation cross-entropy, the best epoch's weights restored. Seeded (weights,
    dropout, batch order): the same inputs give the same result; the global RNG is untouched.
    On the CPU torch runs on one thread inside (module docstring).

    Returns ``{"auc", "acc", "auc_ci95": [lo, hi], "n_test", "train_seconds", "epochs"}``;
    the AUC is the macro one-vs-rest AUC for K > 2, as the probe's.
    """
    if name not in SUPERVISED_MODELS:
        raise ValueError(f"unknown supervised competitor {name!r}; known: {sorted(SUPERVISED_MODELS)}")
    if len(seqs.user_ids) != len(y):
        raise ValueError(f"{len(seqs.user_ids)} behaviour sequences for {len(y)} labels: one row per labelled user")
    device = io.device(device)
    n_classes = int(y.max()) + 1
    train_idx, test_idx = downstream.split_indices(y, seed, downstream_config.test_fraction)
    fit_idx, val_idx = downstream.validation_split(train_idx, y[train_idx], downstream_config.validation_fraction,
                                                   seed)
    batch_size = competitor_config.supervised_batch_size
    y_t = torch.from_numpy(np.asarray(y, dtype=np.int64))  # (n,)
    with downstream.one_cpu_thread(device), io.deterministic_kernels(device), \
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # initial weights and dropout masks
        model = SUPERVISED_MODELS[name](titles.vocab_size, n_classes, competitor_config).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=competitor_config.lr)
        shuffle = torch.Generator().manual_seed(seed)
        started = time.perf_counter()

        def train_epoch() -> None:
            model.train()
            for batch in torch.randperm(len(fit_idx), generator=shuffle).split(batch_size):
                rows = fit_idx[batch.numpy()]  # (B,) users of this step
                logits = model(*_batch(seqs, titles, rows, device))  # (B, K)
                loss = F.cross_entropy(logits, y_t[rows].to(device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

        def validation_loss() -> float:
            val_logits = _logits(model, seqs, titles, val_idx, batch_size * EVAL_BATCH_FACTOR, device)  # (n_val, K)
            return F.cross_entropy(val_logits, y_t[val_idx]).item()

        epochs = downstream.early_stopping(model, train_epoch, validation_loss, competitor_config.supervised_max_epochs,
                                           competitor_config.supervised_patience)
        train_seconds = time.perf_counter() - started
        test_logits = _logits(model, seqs, titles, test_idx, batch_size * EVAL_BATCH_FACTOR, device)  # (n_test, K)
    proba = torch.softmax(test_logits.double(), dim=1).numpy()  # (n_test, K)
    metrics: dict[str, Any] = downstream.classification_metrics(y[test_idx], proba)
    metrics["auc_ci95"] = downstream.bootstrap_auc_ci(y[test_idx], proba, downstream_config.bootstrap, seed)
    metrics["n_test"] = int(len(test_idx))
    metrics["train_seconds"] = float(train_seconds)
    metrics["epochs"] = int(epochs)
    return metrics


def train_on_tasks(name: str, seqs: BehaviourSequences, titles: TitleTokens,
                   labels: dict[str, tuple[np.ndarray, np.ndarray]], competitor_config: CompetitorConfig,
                   downstream_config: DownstreamConfig, seed: int, device: str | torch.device = "cpu"
                   ) -> tuple[downstream.TaskResults, dict[str, float]]:
    """:func:`train_and_score` on every task of ``labels`` (``{task: (user_ids, y)}``, as
    ``downstream.all_task_labels`` gives them), each on the task's users' rows of ``seqs``.

    Every labelled user must have a row in ``seqs``. A task ``downstream.skip_reason`` refuses
    is skipped with its reason. The tasks train side by side, one process per core, as the
    probes do (``downstream.probe_workers``; each model is seeded and single-threaded, so the
    result does not depend on it). Returns (the per-task metrics with the skipped tasks, the
    training seconds of each trained task).
    """
    device = io.device(device)
    row_of = pd.Index(seqs.user_ids)
    per_task, jobs = downstream.TaskResults(), {}
    for task, (task_users, y) in labels.items():
        reason = downstream.skip_reason(y)
        if reason is not None:
            per_task.skipped[task] = reason
            continue
        rows = row_of.get_indexer(task_users)  # (n_task,)
        if np.any(rows < 0):
            raise ValueError(f"task {task!r} labels users without a behaviour sequence")
        task_seqs = BehaviourSequences(seqs.user_ids[rows], seqs.items[rows], seqs.lengths[rows])
        jobs[task] = (name, task_seqs, titles, y, competitor_config, downstream_config, seed, device)
    workers = downstream.probe_workers(downstream_config, device, len(jobs))
    per_task.update(downstream.side_by_side(train_and_score, jobs, workers))
    return per_task, {task: metrics["train_seconds"] for task, metrics in per_task.items()}
