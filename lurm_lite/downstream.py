"""Downstream evaluation of frozen user representations (§3.2-3.5 of the paper).

Stage II of the paper (§3.1, §3.4): the representation model is never fine-tuned; for each
downstream task a small MLP (one hidden layer of 64, Adam lr 1e-3, batch 128) is trained on
the representations of 80% of the task's users and tested on the other 20% (§3.2).

- Labels (§3.2): *category preference identification* labels a user positive when they have
  at least one behaviour in the label window on an item of the target category;
  *user profiling prediction* takes a profile column of ``users.parquet``. The exact rules
  are the data contract's (docs/architecture.md, section 1). Only users with at least one
  history behaviour are labelled, since a representation is made from history alone.
- Too small to score: a task is evaluated only when each of its classes has at least
  ``MIN_CLASS_USERS`` (20) users: 20 positives and 20 negatives for a binary task, 20 users in
  its smallest class for a multiclass one (each class is the positive side of one term of
  the macro one-vs-rest AUC). With fewer, the 20% test part holds a handful of them and
  the AUC is noise. A skipped task (a task whose users all share one label included) gets
  its reason in ``results.json["skipped"]`` and in ``results.md``.
- Split (§3.2): one stratified 80/20 split per task, derived from the task's sorted user ids
  and labels and the seed only, so every method is tested on the same users.
- Metrics (§3.5, Tables 2-5): AUC and ACC; for multiclass tasks the macro one-vs-rest AUC.
  A bootstrap over the test users gives a 95% interval for the AUC.
- Results (Tables 2-5): :mod:`lurm_lite.results` writes ``results.json`` and its table.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import json
import math
import multiprocessing
import os
import signal
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.nn import functional as F

from data_prep import schema
from data_prep.schema import Dataset
from lurm_lite import io
from lurm_lite.config import DownstreamConfig

Features = np.ndarray | sp.spmatrix  # (n_users, d) dense, or sparse CSR (TF-IDF, raw BoI)


# ---------------------------------------------------------------------------------------
# Labels (§3.2)
# ---------------------------------------------------------------------------------------


def task_labels(dataset: Dataset, task: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Labels of one downstream task of ``dataset.json`` (§3.2), as class indices.

    The users and their labels follow the data contract's rules, implemented once in
    ``data_prep.schema.task_labels``:

    - ``{"future_category": X}`` (category preference identification): 1 when the user has
      at least one label-window behaviour on an item whose ``category``, split on ``|``,
      contains X; over every user with a history behaviour, or with
      ``"population": "active_in_label_window"`` only those who also act in the label window.
    - ``{"activity": "label_window"}`` (label-free, churn): 1 when the user has any
      label-window behaviour, over every user with a history behaviour.
    - ``{"profile": COLUMN}`` (user profiling prediction): the users.parquet column of users
      with a history behaviour and a non-null label, encoded here as 0..K-1 in the sorted
      order of its values. A binary profile column with a single value gives one class;
      :func:`evaluate` then skips the task.

    Returns:
        ``(user_ids (n,) int64 ascending, y (n,) int64)``.
    """
    user_ids, values = schema.task_labels(dataset, dict(task))
    if "profile" not in task["rule"]:
        return user_ids, values.astype(np.int64)
    classes, y = np.unique(values, return_inverse=True)
    if task.get("kind") == "binary" and len(classes) > 2:
        raise ValueError(f"Binary task {task['name']!r} needs at most two label values; found {list(classes)}.")
    return user_ids, y.astype(np.int64)


# ---------------------------------------------------------------------------------------
# Tasks too small to score
# ---------------------------------------------------------------------------------------

MIN_CLASS_USERS = 20  # fewest users per class (positives, negatives) for a task to be evaluated


def skip_reason(y: np.ndarray) -> str | None:
    """Why a task with class labels ``y`` (0..K-1, as from :func:`task_labels`) is not evaluated, or None.

    Every class needs ``MIN_CLASS_USERS`` users: a binary task that many positives and
    negatives, a multiclass task that many in its smallest class (module docstring).
    """
    if len(y) == 0:
        return "no labelled user (no user with a history behaviour has a label)"
    sizes = np.bincount(y, minlength=2)
    if np.count_nonzero(sizes) < 2:
        return f"all {len(y)} users have the same label"
    if sizes.min() >= MIN_CLASS_USERS:
        return None
    if len(sizes) == 2:
        return (f"{sizes[1]} positives and {sizes[0]} negatives among {len(y)} users; "
                f"a binary task needs at least {MIN_CLASS_USERS} of each")
    smallest = int(np.argmin(sizes))
    return (f"its smallest class (index {smallest} of the sorted label values) has {sizes[smallest]} "
            f"of {len(y)} users; "
            f"a multiclass task needs at least {MIN_CLASS_USERS} users in every class")


class TaskResults(dict):
    """``{task: metrics}`` of the evaluated tasks; ``skipped`` holds ``{task: reason}`` of the others.

    What :func:`evaluate` returns: a plain dict of metrics for every caller that iterates
    it, with the skipped tasks beside it for :func:`lurm_lite.results.collect_results`.
    """

    def __init__(self, metrics: Mapping[str, dict[str, Any]] = (), skipped: Mapping[str, str] | None = None):
        super().__init__(metrics)
        self.skipped = dict(skipped or {})


# ---------------------------------------------------------------------------------------
# Split (§3.2)
# ---------------------------------------------------------------------------------------


def split_indices(y: np.ndarray, seed: int, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """The 80/20 split of §3.2: ``(train_idx, test_idx)``, stratified by ``y``.

    It depends on ``y`` (in the ascending user-id order of :func:`task_labels`) and ``seed``
    only, so every method sees the same test users. Stratification needs two users per
    class; when a class is rarer the split is drawn unstratified, with a warning.
    """
    return validation_split(np.arange(len(y)), y, test_fraction, seed)


def validation_split(index: np.ndarray, y: np.ndarray, fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``index`` (labels ``y``) split into ``(kept, held_out)``, both sorted, ``fraction`` held out.

    Stratified by ``y`` and seeded. :func:`split_indices` holds out the test part with it and
    :func:`evaluate_task` the validation part of the training rows; the supervised
    competitors (``competitors.supervised``) call it the same way so that they stop early
    on the probe's validation users.
    """
    class_sizes = np.bincount(y)
    class_sizes = class_sizes[class_sizes > 0]
    n_held_out = math.ceil(fraction * len(y))
    can_stratify = class_sizes.min() >= 2 and min(n_held_out, len(y) - n_held_out) >= len(class_sizes)
    if not can_stratify:
        warnings.warn(f"{len(y)} users in {len(class_sizes)} classes (smallest: {class_sizes.min()}) are too few "
                      "for a stratified split: splitting without stratification.", stacklevel=3)
    kept, held_out = train_test_split(index, test_size=fraction, stratify=y if can_stratify else None,
                                      random_state=seed)
    return np.sort(kept), np.sort(held_out)


# ---------------------------------------------------------------------------------------
# Probe (§3.4, "Downstream Model")
# ---------------------------------------------------------------------------------------


class SparseStandardScaler:
    """Standardisation of sparse inputs (TF-IDF, raw BoI) that keeps them sparse.

    - Centring per column, as for dense inputs: without it the probe on all-positive count
      features is dominated by each user's overall activity, and on the default synthetic
      data the whole-life BoI row fell to chance (AUC 0.48) on future-category tasks where
      the centred input reaches 0.66. Centring a 1e5-wide row would densify it, so it is not
      applied to X: ``offset_`` = mean * scale goes to :class:`MLPProbe`, whose first layer
      subtracts ``offset_ @ W`` once per batch (exactly the probe on the centred input).
    - One global factor instead of a std per column: unit variance per column would undo the
      weighting the features carry (TF-IDF's idf, BoI's log counts) and blow up rare columns
      (a word seen by one training user gets multiplied by about sqrt(n_train)). The factor
      gives the centred columns unit variance on average, the scale the first layer's
      initialisation assumes.
    """

    def fit(self, X_train: sp.spmatrix) -> "SparseStandardScaler":
        X_train = sp.csr_matrix(X_train, dtype=np.float64)
        self.mean_ = np.asarray(X_train.mean(axis=0)).ravel()  # (F,)
        variance = np.asarray(X_train.multiply(X_train).mean(axis=0)).ravel() - self.mean_**2  # (F,)
        mean_variance = float(np.maximum(variance, 0.0).mean())
        self.scale_ = 1 / np.sqrt(mean_variance) if mean_variance > 0 else 1.0  # one factor for all columns
        self.offset_ = (self.mean_ * self.scale_).astype(np.float32)  # (F,)
        return self

    def transform(self, X: sp.spmatrix) -> sp.csr_matrix:
        """X * scale, still sparse (the centring happens in the probe)."""
        return sp.csr_matrix(sp.csr_matrix(X, dtype=np.float64) * self.scale_, dtype=np.float32)


def fit_scaler(X_train: Features) -> StandardScaler | SparseStandardScaler:
    """Input standardisation fitted on the training users only (§3.4 probe inputs).

    Dense inputs: sklearn ``StandardScaler`` (training mean and std per column). Sparse inputs
    (TF-IDF, raw BoI): :class:`SparseStandardScaler`, centred per column (folded into the
    probe's first layer) and scaled by one global factor.
    """
    return SparseStandardScaler().fit(X_train) if sp.issparse(X_train) else StandardScaler().fit(X_train)


class MLPProbe(nn.Module):
    """The downstream MLP of §3.4: one hidden layer (64), ReLU, one logit per class.

    Dense input: ``forward`` takes a (B, F) float tensor. Sparse input (``input_offset``
    given): the first layer is an ``nn.EmbeddingBag`` in ``sum`` mode, which computes x @ W
    from a CSR batch ``(indices, offsets, values)`` at O(nonzeros x hidden) cost, so a
    1e5-wide TF-IDF or BoI row is never densified; ``input_offset`` (F,) is the centring of
    :class:`SparseStandardScaler`, subtracted as ``input_offset @ W``. Both variants start
    from the same weights for the same seed (W of the sparse one is the dense one's W^T).
    """

    def __init__(self, n_features: int, n_classes: int, hidden: int = 64,
                 input_offset: np.ndarray | None = None):
        super().__init__()
        linear = nn.Linear(n_features, hidden)  # nn.Linear's initialisation for both variants
        self.sparse_input = input_offset is not None
        if self.sparse_input:
            # W: (F, hidden); from_pretrained draws no random numbers, so `out` below starts equal too
            self.hidden = nn.EmbeddingBag.from_pretrained(linear.weight.detach().T.contiguous(), freeze=False,
                                                          mode="sum")
            self.hidden_bias = nn.Parameter(linear.bias.detach().clone())
            self.register_buffer("input_offset", torch.as_tensor(input_offset, dtype=torch.float32))  # (F,)
        else:
            self.hidden = linear
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        if self.sparse_input:
            indices, offsets, values = x  # a CSR batch: column ids, row starts, values
            centre = self.input_offset @ self.hidden.weight  # (hidden,)
            h = self.hidden(indices, offsets, per_sample_weights=values) - centre + self.hidden_bias  # (B, hidden)
        else:
            h = self.hidden(x)  # (B, hidden)
        return self.out(F.relu(h))  # (B, n_classes) logits


def _probe_input(X: Features, rows: np.ndarray, device: torch.device):
    """Rows of X for :class:`MLPProbe`: a CSR triple for sparse X, a float32 tensor otherwise."""
    if sp.issparse(X):
        block = X[rows]
        return (torch.from_numpy(block.indices.astype(np.int64)).to(device),
                torch.from_numpy(block.indptr[:-1].astype(np.int64)).to(device),
                torch.from_numpy(block.data.astype(np.float32)).to(device))
    return torch.from_numpy(np.ascontiguousarray(X[rows], dtype=np.float32)).to(device)


def train_probe(X_fit: Features, y_fit: np.ndarray, X_val: Features, y_val: np.ndarray, n_classes: int,
                config: DownstreamConfig, seed: int, device: str | torch.device = "cpu",
                input_offset: np.ndarray | None = None) -> MLPProbe:
    """Train the §3.4 probe with Adam (lr, batch size from ``config``); early stopping.

    Inputs are already scaled (:func:`fit_scaler`); sparse inputs come with the scaler's
    ``offset_`` as ``input_offset``. After every epoch the cross-entropy on (``X_val``,
    ``y_val``) is measured; training stops after ``config.patience`` epochs without
    improvement and the weights of the best epoch are restored. Seeded: the same inputs
    give the same probe.
    """
    device = torch.device(device)
    if sp.issparse(X_fit) != (input_offset is not None):
        raise ValueError("sparse probe inputs need the scaler's input_offset, and dense ones must not get one")
    with torch.random.fork_rng(devices=[]):  # seed the initial weights without touching the global RNG
        torch.manual_seed(seed)
        probe = MLPProbe(X_fit.shape[1], n_classes, config.hidden, input_offset).to(device)
    # fused: Adam's update in one kernel per parameter; on one CPU thread a probe step took
    # 3.4 ms with the per-operation Adam and 2.8 ms fused (batch 128, 1280 -> 64 -> 2)
    optimizer = torch.optim.Adam(probe.parameters(), lr=config.lr, fused=device.type in ("cpu", "cuda"))
    shuffle = torch.Generator().manual_seed(seed)
    y_fit_t, y_val_t = torch.from_numpy(y_fit).to(device), torch.from_numpy(y_val)

    def train_epoch() -> None:
        probe.train()
        for batch in torch.randperm(len(y_fit), generator=shuffle).split(config.batch_size):
            logits = probe(_probe_input(X_fit, batch.numpy(), device))  # (B, K)
            loss = F.cross_entropy(logits, y_fit_t[batch.to(device)])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def validation_loss() -> float:
        return F.cross_entropy(_logits(probe, X_val, config.batch_size * 8, device), y_val_t).item()

    early_stopping(probe, train_epoch, validation_loss, config.max_epochs, config.patience)
    return probe


def early_stopping(model: nn.Module, train_epoch: Callable[[], None], validation_loss: Callable[[], float],
                   max_epochs: int, patience: int) -> int:
    """Train ``model`` epoch by epoch, stopping after ``patience`` epochs without a lower validation loss.

    ``train_epoch()`` runs one epoch; ``validation_loss()`` measures after it. At most
    ``max_epochs`` epochs; the weights of the best epoch (a strictly lower loss) are restored
    at the end. Returns the number of epochs run. The probe's and the supervised
    competitors' loop.
    """
    best_loss, best_state, epochs_since_best, epochs = math.inf, copy.deepcopy(model.state_dict()), 0, 0
    for epochs in range(1, max_epochs + 1):
        train_epoch()
        val_loss = validation_loss()
        if val_loss < best_loss:
            best_loss, best_state, epochs_since_best = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            epochs_since_best += 1
            if epochs_since_best >= patience:
                break
    model.load_state_dict(best_state)
    return epochs


@torch.no_grad()
def _logits(probe: MLPProbe, X: Features, batch_size: int, device: torch.device) -> torch.Tensor:
    """(n, K) logits on the CPU, computed ``batch_size`` rows at a time in eval mode."""
    probe.eval()
    starts = range(0, X.shape[0], batch_size)
    return torch.cat([probe(_probe_input(X, np.arange(s, min(s + batch_size, X.shape[0])), device)).cpu()
                      for s in starts] or [torch.zeros(0, probe.out.out_features)])


def predict_proba(probe: MLPProbe, X: Features, batch_size: int = 1024,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """Class probabilities (n, K) float64, rows summing to 1."""
    return torch.softmax(_logits(probe, X, batch_size, torch.device(device)).double(), dim=1).numpy()


# ---------------------------------------------------------------------------------------
# Metrics (§3.5)
# ---------------------------------------------------------------------------------------


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """AUC and ACC of Tables 2-5; macro one-vs-rest AUC when there are more than 2 classes."""
    if proba.shape[1] == 2:
        auc = roc_auc_score(y_true, proba[:, 1])
    else:
        auc = roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=np.arange(proba.shape[1]))
    return {"auc": float(auc), "acc": float(accuracy_score(y_true, proba.argmax(axis=1)))}


def resample_auc(y_true: np.ndarray, proba: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUCs of many resamples of one test set at once: (R,) for ``counts`` (R, n).

    ``counts[r, i]`` is how often test user i is drawn in resample r; the result equals
    ``classification_metrics`` on the resampled users (sklearn's ``roc_auc_score`` with
    ``sample_weight=counts[r]``). Ties count one half. For K > 2 classes it is the macro
    average of the one-vs-rest AUCs. A resample missing a class gets NaN.
    """
    counts = np.atleast_2d(counts).astype(np.float64)
    class_columns = [1] if proba.shape[1] == 2 else range(proba.shape[1])
    per_class = []
    for k in class_columns:
        unique_scores, score_group = np.unique(proba[:, k], return_inverse=True)
        positive = y_true == k
        # (n, G) indicator of each user's score group; weights summed per group: (R, G)
        group_of = sp.csr_matrix((np.ones(len(y_true)), (np.arange(len(y_true)), score_group)),
                                 shape=(len(y_true), len(unique_scores)))
        pos_weight = (group_of.T @ (counts * positive).T).T
        neg_weight = (group_of.T @ (counts * ~positive).T).T
        neg_below = np.cumsum(neg_weight, axis=1) - neg_weight
        pairs_won = (pos_weight * (neg_below + 0.5 * neg_weight)).sum(axis=1)
        n_pairs = pos_weight.sum(axis=1) * neg_weight.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class.append(np.where(n_pairs > 0, pairs_won / n_pairs, np.nan))
    return np.mean(per_class, axis=0)


def bootstrap_auc_ci(y_true: np.ndarray, proba: np.ndarray, n_resamples: int, seed: int,
                     level: float = 0.95, chunk: int = 100) -> list[float]:
    """Percentile bootstrap interval ``[lo, hi]`` of the test AUC (seeded).

    Test users are drawn with replacement ``n_resamples`` times; resamples that miss a
    class (AUC undefined) are skipped. Memory is bounded by ``chunk`` resamples at a time.
    """
    rng = np.random.default_rng(seed)
    n = len(y_true)
    aucs = []
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        draws = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
        counts = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n)
        aucs.append(resample_auc(y_true, proba, counts))
    aucs = np.concatenate(aucs)
    aucs = aucs[~np.isnan(aucs)]
    if len(aucs) == 0:
        return [float("nan"), float("nan")]
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(aucs, tail)), float(np.percentile(aucs, 100 - tail))]


# ---------------------------------------------------------------------------------------
# One method on every task
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def one_cpu_thread(device: str | torch.device) -> Iterator[None]:
    """Run torch on one CPU thread inside the block (restored after) when ``device`` is the CPU.

    The probe is tiny (batch 128, hidden 64): intra-op threads only add synchronisation at
    this size, and on a busy 2-core machine they made it about 10x slower.
    """
    if torch.device(device).type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def evaluate_task(X: Features, y: np.ndarray, config: DownstreamConfig, seed: int,
                  device: str | torch.device = "cpu") -> dict[str, Any]:
    """Split, standardise, train the probe and score it on one task (§3.2-3.4).

    ``X`` rows are the task's users in ascending id order and ``y`` their labels
    (as from :func:`task_labels`). The validation part for early stopping is
    ``config.validation_fraction`` of the training 80%, stratified and seeded too. On the
    CPU the probe runs on one thread (see :func:`one_cpu_thread`).

    Returns ``{"auc", "acc", "auc_ci95": [lo, hi], "n_test"}``.
    """
    n_classes = int(y.max()) + 1
    train_idx, test_idx = split_indices(y, seed, config.test_fraction)
    fit_idx, val_idx = validation_split(train_idx, y[train_idx], config.validation_fraction, seed)
    X = X.tocsr() if sp.issparse(X) else np.asarray(X, dtype=np.float32)
    scaler = fit_scaler(X[train_idx])
    with one_cpu_thread(device):
        probe = train_probe(scaler.transform(X[fit_idx]), y[fit_idx], scaler.transform(X[val_idx]), y[val_idx],
                            n_classes, config, seed, device, input_offset=getattr(scaler, "offset_", None))
        proba = predict_proba(probe, scaler.transform(X[test_idx]), config.batch_size * 8, device)
    metrics = classification_metrics(y[test_idx], proba)
    metrics["auc_ci95"] = bootstrap_auc_ci(y[test_idx], proba, config.bootstrap, seed)
    metrics["n_test"] = int(len(test_idx))
    return metrics


def probe_workers(config: DownstreamConfig, device: str | torch.device, n_tasks: int) -> int:
    """How many processes probe the tasks of one :func:`evaluate` call side by side.

    A probe runs on one CPU thread (:func:`one_cpu_thread`), so on a machine with several
    cores the tasks are probed in worker processes, one per core (``config.workers``; None:
    the cores this process may use), never more than there are tasks. The result is the
    same to the bit as probing them one after the other in this process: each task's probe
    is seeded on its own and runs single-threaded either way (a test checks it). On a GPU
    the probes run in this process.
    """
    if torch.device(device).type != "cpu" or n_tasks < 2:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(config.workers if config.workers is not None else cores, n_tasks))


_PROBE_POOLS: dict[int, ProcessPoolExecutor] = {}  # worker count -> pool, kept for the process's life


def _ignore_interrupts() -> None:
    """Worker initializer: Ctrl-C (a SIGINT to the whole process group, e.g. a notebook's
    interrupt) stops the caller waiting for results, not the workers, so the pool survives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _probe_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes started with ``spawn`` (safe after torch's threads
    exist, and the same on Linux, macOS and Windows), reused by later calls: a worker pays
    the import of torch once."""
    if workers not in _PROBE_POOLS:
        _PROBE_POOLS[workers] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                    initializer=_ignore_interrupts)
    return _PROBE_POOLS[workers]


def side_by_side(function: Callable[..., Any], jobs: Mapping[str, tuple], workers: int) -> dict[str, Any]:
    """``function(*args)`` of every ``{task: args}``, in ``workers`` spawned processes when more
    than one (:func:`probe_workers`), else in this process; results in the order of ``jobs``.

    ``function`` and its arguments must pickle (a module-level function, arrays, configs).
    """
    if workers == 1:
        return {task: function(*args) for task, args in jobs.items()}
    with _pool_errors(workers):
        pool = _probe_pool(workers)
        futures = {task: pool.submit(function, *args) for task, args in jobs.items()}
        return {task: future.result() for task, future in futures.items()}


@contextlib.contextmanager
def _pool_errors(workers: int) -> Iterator[None]:
    """A worker that died (e.g. out of memory) as a clear error; the next call starts a new pool."""
    try:
        yield
    except BrokenProcessPool as error:
        _PROBE_POOLS.pop(workers, None)
        raise RuntimeError(f"a worker process died ({error}); set DownstreamConfig.workers = 1 "
                           "to train and probe in this process") from error


class InBackground:
    """``function(*args)`` started in the pool of ``workers`` (> 1) processes that
    :func:`side_by_side` uses, while this process goes on; :meth:`result` waits for it.
    What is sent to the pool meanwhile (probes, the supervised competitors' trainings) runs
    on the other workers: a single-threaded job (gensim's Doc2Vec) then leaves no core idle."""

    def __init__(self, function: Callable[..., Any], args: tuple, workers: int):
        if workers < 2:
            raise ValueError("a background job needs a pool of at least 2 workers (see probe_workers)")
        self.workers = workers
        with _pool_errors(workers):
            self.future = _probe_pool(workers).submit(function, *args)

    def result(self) -> Any:
        with _pool_errors(self.workers):
            return self.future.result()


# ---------------------------------------------------------------------------------------
# Probe results kept on disk: a representation probed again is read back
# ---------------------------------------------------------------------------------------


def features_digest(X: Features) -> str:
    """SHA-256 of a representation matrix's values: dense (n, d), or sparse in canonical CSR form
    (the same values in COO or CSR with unsorted indices give the same digest)."""
    digest = hashlib.sha256(f"{'sparse' if sp.issparse(X) else 'dense'}{X.shape}".encode())
    if sp.issparse(X):
        X = X.tocsr(copy=True)  # canonical order below without touching the caller's matrix
        X.sum_duplicates()
        io.update_digest(digest, X.indptr.astype(np.int64), X.indices.astype(np.int64), X.data)
    else:
        io.update_digest(digest, np.asarray(X))
    return digest.hexdigest()


@functools.cache
def _probe_code_version() -> str:
    """What else decides :func:`evaluate_task`'s result: this module's source and the libraries' versions."""
    import scipy
    import sklearn

    versions = f"torch {torch.__version__} numpy {np.__version__} scipy {scipy.__version__} sklearn {sklearn.__version__}"
    return hashlib.sha256(Path(__file__).read_bytes() + versions.encode()).hexdigest()


def probe_key(X: Features, y: np.ndarray, config: DownstreamConfig, seed: int, device: str | torch.device) -> str:
    """The name a probe result is kept under: a digest of everything :func:`evaluate_task` is given.

    X's and y's values, every setting of ``config`` but ``workers`` (the result is the same to
    the bit however many processes probe, see :func:`probe_workers`), the seed, the device
    type, and the probe's code and library versions; so a key that matches is the result the
    probe would compute again (the probe is seeded and deterministic).
    """
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "workers"}
    digest = hashlib.sha256(json.dumps([features_digest(X), settings, int(seed), torch.device(device).type,
                                        _probe_code_version()], sort_keys=True).encode())
    io.update_digest(digest, np.asarray(y))
    return digest.hexdigest()


def _kept_result(path: Path) -> dict[str, Any] | None:
    """A probe result written by :func:`_evaluate_tasks`, or None when missing or unreadable."""
    try:
        metrics = io.load_json(path)
    except (OSError, ValueError):  # missing, or not JSON (a file written by something else)
        return None
    return metrics if isinstance(metrics, dict) and {"auc", "acc", "auc_ci95", "n_test"} <= set(metrics) else None


class SharedFeatures:
    """A representation matrix written once to ``folder`` for the worker processes, which
    memory-map it and take their task's rows (:meth:`rows`): pickled to the workers with each
    task instead, the demo's 5,000 x 1,280 R^ cost ~0.5 s of transfers per :func:`evaluate`.
    Dense X is one ``.npy``; sparse X its CSR arrays. Only the folder's path is pickled."""

    def __init__(self, X: Features, folder: str | os.PathLike):
        self.folder, self.sparse, self.shape = Path(folder), sp.issparse(X), X.shape
        if self.sparse:
            X = X.tocsr()
            for name in ("data", "indices", "indptr"):
                np.save(self.folder / f"{name}.npy", getattr(X, name))
        else:
            np.save(self.folder / "X.npy", np.asarray(X))

    def rows(self, rows: np.ndarray) -> Features:
        """X[rows], read from the memory-mapped files: the same values as the matrix written."""
        if not self.sparse:
            return np.load(self.folder / "X.npy", mmap_mode="r")[rows]
        data, indices, indptr = (np.load(self.folder / f"{name}.npy", mmap_mode="r")
                                 for name in ("data", "indices", "indptr"))
        return sp.csr_matrix((data, indices, indptr), shape=self.shape, copy=False)[rows]


def _evaluate_shared_rows(features: SharedFeatures, rows: np.ndarray, y: np.ndarray, config: DownstreamConfig,
                          seed: int, device: str | torch.device) -> dict[str, Any]:
    """:func:`evaluate_task` on the rows ``rows`` of a :class:`SharedFeatures` (in a worker process)."""
    return evaluate_task(features.rows(rows), y, config, seed, device)


def _evaluate_tasks(X: Features, jobs: Mapping[str, tuple[np.ndarray, np.ndarray]], config: DownstreamConfig,
                    seed: int, device: str | torch.device, cache_dir: str | os.PathLike | None = None
                    ) -> dict[str, dict[str, Any]]:
    """:func:`evaluate_task` of every ``{task: (rows, y)}`` on X[rows], side by side when the cores
    allow (the workers read X from one :class:`SharedFeatures`).

    With ``cache_dir``, each task's result is kept there as ``<probe_key>.json`` (written
    atomically) and read back instead of probing again when the same X, y, settings and
    seed come back: notebook 06's whole-life window and notebook 08's BoI and LURM rows are
    notebook 05's, and a killed notebook resumes without redoing the probes it finished.
    """
    paths = {task: Path(cache_dir) / f"{probe_key(X[rows], y, config, seed, device)}.json"
             for task, (rows, y) in jobs.items()} if cache_dir is not None else {}
    kept = {task: result for task, path in paths.items() if (result := _kept_result(path)) is not None}
    todo = {task: job for task, job in jobs.items() if task not in kept}
    workers = probe_workers(config, device, len(todo))
    if workers == 1:  # each task's X[rows] made when it is probed: one copy in memory at a time, not all of them
        probed = {task: evaluate_task(X[rows], y, config, seed, device) for task, (rows, y) in todo.items()}
    else:
        with tempfile.TemporaryDirectory(prefix="lurm_probe_", ignore_cleanup_errors=True) as folder:
            shared = SharedFeatures(X, folder)
            probed = side_by_side(_evaluate_shared_rows, {task: (shared, rows, y, config, seed, device)
                                                          for task, (rows, y) in todo.items()}, workers)
    for task, metrics in probed.items():
        if task in paths:
            io.save_json(paths[task], metrics)
    return {task: kept[task] if task in kept else probed[task] for task in jobs}


def all_task_labels(dataset: Dataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """:func:`task_labels` of every task in ``dataset.meta["tasks"]``, by task name."""
    return {task["name"]: task_labels(dataset, task) for task in dataset.tasks}


def evaluate(X: Features, user_ids: np.ndarray, dataset: Dataset, config: DownstreamConfig | None = None, seed: int = 0,
             device: str | torch.device = "cpu",
             labels: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
             cache_dir: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Evaluate one representation on every downstream task (§3.2-3.5).

    Args:
        X: (n_users, d) representations, dense or sparse; row k belongs to ``user_ids[k]``.
            Never changed: the representation model is frozen (§3.1, Stage II).
        user_ids: (n_users,) ids of the rows of X, in any order; must cover every labelled user.
        dataset: the dataset whose ``tasks`` are evaluated.
        labels: ``all_task_labels(dataset)`` when already computed (it is the same for
            every method).
        cache_dir: where each task's result is kept and read back when the same
            representation is probed again (a run folder's ``probes/``; None: nothing kept).

    The tasks are probed side by side, one process per CPU core (:func:`probe_workers`).

    Returns:
        A :class:`TaskResults`: ``{task: {"auc", "acc", "auc_ci95": [lo, hi], "n_test"}}`` of
        the evaluated tasks, and in ``.skipped`` ``{task: reason}`` of the tasks with fewer
        than ``MIN_CLASS_USERS`` users in a class (:func:`skip_reason`), each also warned.
    """
    config = config or DownstreamConfig()
    labels = all_task_labels(dataset) if labels is None else labels
    row_of = pd.Index(np.asarray(user_ids))
    if not row_of.is_unique:
        raise ValueError("user_ids must be unique: each row of X is one user.")
    X = X.tocsr() if sp.issparse(X) else X
    results, jobs = TaskResults(), {}
    for task, (task_users, y) in labels.items():
        reason = skip_reason(y)
        if reason is not None:
            warnings.warn(f"Task {task!r} skipped: {reason}.", stacklevel=2)
            results.skipped[task] = reason
            continue
        rows = row_of.get_indexer(task_users)
        if (rows < 0).any():
            raise ValueError(f"Task {task!r}: {(rows < 0).sum()} labelled users have no row in X, "
                             f"e.g. user {task_users[rows < 0][0]}.")
        jobs[task] = (rows, y)
    results.update(_evaluate_tasks(X, jobs, config, seed, device, cache_dir))
    return results
