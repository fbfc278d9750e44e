"""Diagnostics of a user representation: does it keep what BoI holds? (§2.2, §3.6 of the paper)

The paper's central claim (abstract, §2.2.1 and Table 5 of §3.6) is that SMEN compresses
the whole-life Bag-of-Interests b_T (eq. 4, D-dimensional) into R^ (M*H numbers, eq. 7)
"almost losslessly". Downstream AUC (§3.5) tests that only through a few tasks; the
helpers here measure it more directly, and give the yardsticks to read the number against:

- :func:`boi_survival_r2`: how much of b_T can be read back from a representation, as the
  held-out R^2 of a linear (ridge) map from the representation to the top SVD components
  of b_T. 1: everything of b_T's main directions survives; 0: nothing (random noise).
- :func:`random_projection_features`: the fixed, untrained Gaussian random projection of
  the summed monthly b_t, a baseline encoder with no learning at all (Johnson-Lindenstrauss:
  it keeps distances of b_T-like sums, so a learned encoder should beat it downstream).
- :func:`view_retrieval_top1`: same-user retrieval between the two views of the
  contrastive task of §2.2.4 (two continuous sub-sequences of one user's life): the
  fraction of users whose x view's nearest y view (cosine of R^) is their own. It says how
  well the pretext task is solved, independently of the loss value and the batch size.
- :func:`signal_by_stage`: where a label's signal goes inside SMEN: a linear probe on
  b_T and on each stage's output (per-period multi-anchor r of eq. 5 averaged over time,
  GRU states r~ of §2.2.2, R^ of eq. 7), for trained and untrained weights.
- :class:`EpochProbe`: a callback for ``train_smen(..., on_epoch_end=...)`` that records,
  after every epoch, the downstream AUC of a few tasks (§3.2-3.4 probe) and the view
  retrieval: learning curves against training steps.

Shapes: n users, D interests, d representation size (M*H for SMEN).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.decomposition import TruncatedSVD
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from lurm_lite import downstream, io
from lurm_lite.boi import BoISequences
from lurm_lite.config import DownstreamConfig, UserTrainingConfig
from lurm_lite.user_training import (PairSampler, encode_stages, encode_users, inference,  # the trainer's views and
                                     save_model_encoding)  # encoder

RIDGE_ALPHAS = np.logspace(-3, 3, 7)  # the ridge penalties RidgeCV chooses from
RETRIEVAL_BATCH = 256  # users per forward pass of view_retrieval_top1
# Inverse L2 penalty of linear_probe_auc. Chosen on synthetic default (seed 0, age) from
# 0.003 .. 1: every representation (b_T, R^, each SMEN stage) peaked at 0.003-0.01, and the
# ranking of the representations was the same at every value tried.
LINEAR_PROBE_C = 0.01

# ---------------------------------------------------------------------------------------
# How much of b_T survives in a representation
# ---------------------------------------------------------------------------------------


def user_split(n: int, seed: int, test_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of n users: (train_idx, test_idx), both sorted, test ~ fraction * n."""
    if n < 4:
        raise ValueError(f"need at least 4 users for a train/test split, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(max(int(round(test_fraction * n)), 2), n - 2)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def boi_survival_r2(reps: np.ndarray, boi_T: sp.spmatrix, seed: int, n_components: int = 64,
                    test_fraction: float = 0.3) -> float:
    """Held-out R^2 of b_T's top SVD components predicted linearly from ``reps`` (Table 5's question).

    Table 5 (§3.6) judges SMEN's "almost lossless dimensionality reduction" by downstream
    AUC; this asks the question of the input directly:

    1. users are split at random (``seed``) into train and test (``test_fraction``);
    2. a TruncatedSVD with ``n_components`` (capped at D - 1 and n_train - 1) is fitted on
       the training users' b_T (not centred, as TruncatedSVD on sparse input); its
       components of every user are the targets Y (n, k);
    3. the inputs ``reps`` are standardised with the training users' mean and std, and a
       ridge map (``RidgeCV`` over alphas 1e-3 .. 1e3, leave-one-out choice) fitted on the
       training users;
    4. the result is sklearn's ``r2_score(Y_test, prediction, multioutput="variance_weighted")``:
       1 - (sum of squared errors) / (sum of test variances) over all k components, so the
       components that carry most of b_T weigh most.

    Args:
        reps: (n, d) representations, row k for user k (dense; a sparse matrix is densified).
        boi_T: (n, D) whole-life BoI of the same users in the same order (CSR).

    Returns:
        R^2, at most 1; about 0 for a representation unrelated to b_T (can be slightly
        negative on the held-out users).
    """
    X = reps.toarray() if sp.issparse(reps) else np.asarray(reps)
    X = X.astype(np.float64).reshape(len(X), -1)  # (n, d)
    B = sp.csr_matrix(boi_T, dtype=np.float64)  # (n, D)
    if X.shape[0] != B.shape[0]:
        raise ValueError(f"reps has {X.shape[0]} rows but boi_T has {B.shape[0]}: one row per user in both")
    train, test = user_split(X.shape[0], seed, test_fraction)
    k = max(1, min(int(n_components), B.shape[1] - 1, len(train) - 1))
    svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=7, random_state=seed).fit(B[train])
    Y_train, Y_test = svd.transform(B[train]), svd.transform(B[test])  # (n_train, k), (n_test, k)
    scaler = StandardScaler().fit(X[train])
    ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit(scaler.transform(X[train]), Y_train)
    prediction = ridge.predict(scaler.transform(X[test]))  # (n_test, k)
    return float(r2_score(Y_test, prediction, multioutput="variance_weighted"))


# ---------------------------------------------------------------------------------------
# A fixed random projection: the encoder that learns nothing
# ---------------------------------------------------------------------------------------


def summed_boi(seqs: BoISequences, user_ids: np.ndarray, mean: bool = False) -> sp.csr_matrix:
    """Sum of each user's b_t rows (eq. 4, one granularity), or with ``mean`` their mean over
    the user's non-empty periods: (n, D) CSR float64 in ``user_ids`` order; absent users get a zero row."""
    user_ids = np.asarray(user_ids, dtype=np.int64)
    n_boi, n_rows = seqs.n_users, seqs.matrix.shape[0]
    rows_per_user = np.diff(seqs.user_ptr)  # (n_boi,)
    row_owner = np.repeat(np.arange(n_boi), rows_per_user)  # (n_rows,)
    weight = 1.0 / np.maximum(rows_per_user[row_owner], 1) if mean else np.ones(n_rows)  # (n_rows,)
    owner = sp.csr_matrix((weight, (row_owner, np.arange(n_rows))), shape=(n_boi, n_rows))
    per_user = owner @ sp.csr_matrix(seqs.matrix, dtype=np.float64)  # (n_boi, D)
    pos = np.minimum(np.searchsorted(seqs.user_ids, user_ids), max(n_boi - 1, 0))  # (n,)
    found = (seqs.user_ids[pos] == user_ids) if n_boi else np.zeros(len(user_ids), bool)
    pick = sp.csr_matrix((np.ones(int(found.sum())), (np.flatnonzero(found), pos[found])),
                         shape=(len(user_ids), n_boi))  # (n, n_boi) one 1 per present user
    return sp.csr_matrix(pick @ per_user)  # (n, D)


def random_projection_matrix(n_interests: int, dim: int, seed: int, chunk_rows: int = 8192
                             ) -> Iterator[tuple[slice, np.ndarray]]:
    """The rows of P (D, dim), P = ``default_rng(seed).standard_normal((D, dim))`` / sqrt(dim).

    Yielded ``chunk_rows`` rows at a time as ``(row slice, block float64)``, so a D = 1e5
    projection never sits in memory at once; the blocks are exactly the rows of the one-call
    draw (the generator produces the same stream however it is chunked).
    """
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(dim)
    for start in range(0, n_interests, chunk_rows):
        stop = min(start + chunk_rows, n_interests)
        yield slice(start, stop), rng.standard_normal((stop - start, dim)) * scale


def random_projection_features(boi_month: BoISequences, user_ids: np.ndarray, dim: int, seed: int,
                               relu: bool = False) -> np.ndarray:
    """A fixed (untrained) Gaussian random projection of the summed monthly BoI: (n, dim) float32.

    x_u = sum_t b_t (eq. 4, the user's monthly rows), then z_u = x_u P with P (D, dim) of
    i.i.d. N(0, 1/dim) entries drawn by ``np.random.default_rng(seed).standard_normal((D, dim))
    / sqrt(dim)``. The 1/dim variance makes E||z_u||^2 = ||x_u||^2 (Johnson-Lindenstrauss):
    distances and inner products of the sums are kept up to O(1/sqrt(dim)) relative error,
    and nothing is learned. With ``relu`` the output is max(z, 0), a random-feature layer.
    Users absent from ``boi_month`` (no history) get zeros. Rows follow ``user_ids``.
    """
    if dim < 1:
        raise ValueError(f"dim must be positive, got {dim}")
    X = summed_boi(boi_month, user_ids).tocsc()  # (n, D), column slices below
    Z = np.zeros((X.shape[0], dim), dtype=np.float64)  # (n, dim)
    for rows, block in random_projection_matrix(boi_month.n_interests, dim, seed):
        part = X[:, rows]
        if part.nnz:
            Z += part @ block
    if relu:
        np.maximum(Z, 0.0, out=Z)
    return Z.astype(np.float32)


# ---------------------------------------------------------------------------------------
# Where the signal goes: a linear probe on each stage of SMEN
# ---------------------------------------------------------------------------------------


def linear_probe_auc(X, y: np.ndarray, seed: int, test_fraction: float = 0.2) -> float:
    """Test AUC of a linear probe: how much of the label ``y`` a representation holds linearly.

    The split of §3.2 (``downstream.split_indices(y, seed, test_fraction)``, the same test
    users as the MLP probe of notebook 05); inputs standardised on the training users (a
    sparse X is only scaled, not centred, so it stays sparse; the intercept absorbs the
    mean); an L2 logistic regression (``LINEAR_PROBE_C``, multinomial for K > 2 classes);
    AUC as in Tables 2-5 (``downstream.classification_metrics``: macro one-vs-rest for K > 2).

    Unlike the MLP probe it has no early stopping and no seed-dependent initialisation, so
    two representations of the same users compare without probe noise; and since every
    stage of SMEN after eq. (5) is a smooth map of the one before, a linear read-out is the
    stricter test of what a stage has kept in an accessible form.

    Args:
        X: (n, d) dense or sparse, row k for the k-th label of ``y``.
        y: (n,) int labels 0..K-1.
    """
    X = X.tocsr() if sp.issparse(X) else np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    if X.shape[0] != len(y):
        raise ValueError(f"X has {X.shape[0]} rows but y has {len(y)} labels")
    train, test = downstream.split_indices(y, seed, test_fraction)
    scaler = StandardScaler(with_mean=not sp.issparse(X)).fit(X[train])
    probe = LogisticRegression(C=LINEAR_PROBE_C, max_iter=2000).fit(scaler.transform(X[train]), y[train])
    proba = probe.predict_proba(scaler.transform(X[test]))  # (n_test, K)
    return downstream.classification_metrics(y[test], proba)["auc"]


def linear_probe_auc_one_thread(X, y: np.ndarray, seed: int) -> float:
    """:func:`linear_probe_auc` with its BLAS on one thread, for probes run side by side.

    Measured on the demo's R^ (4,992 users x 1,280, age): 2.05 s on one thread against 3.7 s
    on the two cores' default threads, so one fit per core is faster both ways.
    """
    with threadpool_limits(1):
        return linear_probe_auc(X, y, seed)


def signal_by_stage(models: Mapping[str, Any], boi: Mapping[str, BoISequences], user_ids: np.ndarray,
                    boi_T: sp.spmatrix, labels: Mapping[str, tuple[np.ndarray, np.ndarray]], seed: int,
                    device: torch.device | str | None = "cpu") -> pd.DataFrame:
    """Linear-probe AUC of each task on b_T and on every stage of each SMEN (§2.2.1-2.2.3).

    The paper calls SMEN "almost lossless" (Table 5); when R^ scores under b_T this says
    at which stage the signal went: the stage outputs of :func:`encode_stages` (the
    per-period multi-anchor r of eq. 5 averaged over periods, the GRU states r~, R^ of
    eq. 7) over each user's whole history, each read by :func:`linear_probe_auc` with the
    same split (the fits side by side, one per core: :func:`linear_probe_auc_one_thread`,
    ``downstream.side_by_side``). Pass the trained model and the same architecture with its initial weights
    to separate what the architecture loses from what training loses or adds.

    Beside b_T, the input rows hold ``mean b_t <scale>``: the user's per-period b_t of eq. (4)
    at each scale the models read (when ``boi`` has it), averaged over the non-empty periods
    (:func:`summed_boi` with ``mean``), as ``r <scale>`` averages eq. (5)'s outputs over them.
    What b_T holds and this mean does not is lost to the per-period features themselves,
    before any weight: e.g. log(1 + a whole-life count) is no function of the monthly
    log(1 + count) rows averaged.

    Args:
        models: ``{name: SMEN}``, each on ``device``; or, for a model already read, its
            :func:`encode_stages` output ``{stage: (n, M*H)}`` over ``user_ids`` (notebook 08
            encodes its untrained SMEN once, for this and for the BoI survival).
        boi: ``{scale: BoISequences}`` the models encode (only the finest scale is read).
        user_ids: (n,) ids of the rows of ``boi_T``.
        boi_T: (n, D) whole-life b_T of eq. (4) of ``user_ids`` (Table 5's BoI row).
        labels: ``{task: (task_users, y)}`` as from ``downstream.task_labels``; every task
            user must be in ``user_ids``.

    Returns:
        One row per (model, stage, task): columns ``model``, ``stage``, ``task``, ``auc``; the
        input comes first with model ``"input"``: stage ``"b_T"``, then ``"mean b_t <scale>"``.
    """
    user_ids = np.asarray(user_ids, dtype=np.int64)
    row_of = pd.Index(user_ids)
    task_rows = {}
    for task, (task_users, y) in labels.items():
        rows = row_of.get_indexer(np.asarray(task_users, dtype=np.int64))
        if (rows < 0).any():
            raise ValueError(f"task {task}: user {np.asarray(task_users)[rows < 0][0]} is not in user_ids")
        task_rows[task] = (rows, np.asarray(y))
    jobs = {("input", "b_T", task): (boi_T[rows], y, seed) for task, (rows, y) in task_rows.items()}
    stages = {name: model if isinstance(model, Mapping) else encode_stages(model, dict(boi), user_ids, device)
              for name, model in models.items()}  # {name: {stage: (n, M*H)}}
    read = [stage.split(" ", 1)[1] for outputs in stages.values() for stage in outputs if stage.startswith("r ")]
    for scale in dict.fromkeys(s for s in read if s in boi):  # the scales the models read, finest first
        per_period = summed_boi(boi[scale], user_ids, mean=True)  # (n, D) mean of the user's b_t rows
        jobs.update({("input", f"mean b_t {scale}", task): (per_period[rows], y, seed)
                     for task, (rows, y) in task_rows.items()})
    for name, outputs in stages.items():
        for stage, X in outputs.items():  # each (n, M*H)
            jobs.update({(name, stage, task): (X[rows], y, seed) for task, (rows, y) in task_rows.items()})
    workers = downstream.probe_workers(DownstreamConfig(), "cpu", len(jobs))
    aucs = downstream.side_by_side(linear_probe_auc_one_thread, jobs, workers)
    records = [{"model": name, "stage": stage, "task": task, "auc": auc} for (name, stage, task), auc in aucs.items()]
    return pd.DataFrame(records, columns=["model", "stage", "task", "auc"])


# ---------------------------------------------------------------------------------------
# Same-user view retrieval (the pretext task of §2.2.4)
# ---------------------------------------------------------------------------------------


def view_retrieval_top1(model, boi: Mapping[str, BoISequences], user_ids: np.ndarray,
                        train_config: UserTrainingConfig, seed: int, device: torch.device | str | None = "cpu",
                        n_users: int = 1000) -> float:
    """Top-1 accuracy of retrieving a user's second view from the first (§2.2.4's positives).

    Among the trainable users of ``PairSampler`` (at least one period at the finest scale)
    whose id is in ``user_ids``, up to ``n_users`` are drawn (seeded); for each, the
    sampler of ``lurm_lite.user_training`` draws the two views x and y of the contrastive
    task with ``train_config``. Both are encoded to R^ (eq. 7, flattened to M*H) in eval
    mode, ``RETRIEVAL_BATCH`` users per forward pass; then every x view is compared by
    cosine similarity with the y views of *all* drawn users (not only those of its batch),
    and the result is the fraction whose nearest y view is the user's own. Chance is 1/n.

    Only the sampler's interface is used (``PairSampler(boi, scales, config)``, ``.users``
    positions in ``boi[scales[0]]``, ``.sample(positions, rng)`` -> 2B views, x then y), so
    the views are exactly the training views, however the sampler builds them. The caller
    chooses the users (held-out ones, for a model trained on the others). ``model`` must be
    on ``device`` already. One
    ``np.random.default_rng(seed)`` draws users and views: no global RNG is touched.
    """

    dev = io.device(device)
    sampler = PairSampler(dict(boi), model.scales, train_config)
    base = boi[model.scales[0]]
    positions = np.asarray(sampler.users, dtype=np.int64)
    positions = positions[np.isin(base.user_ids[positions], np.asarray(user_ids, dtype=np.int64))]
    rng = np.random.default_rng(seed)
    if len(positions) > n_users:
        positions = np.sort(rng.choice(positions, size=n_users, replace=False))
    if len(positions) < 2:
        raise ValueError(f"view retrieval needs at least two trainable users; found {len(positions)}")
    xs, ys = [], []
    with inference(model):
        for start in range(0, len(positions), RETRIEVAL_BATCH):
            k = positions[start:start + RETRIEVAL_BATCH]  # (B,)
            batch = {s: x.to(dev) for s, x in sampler.sample(k, rng).items()}  # 2B views
            R = model(batch).flatten(1).float()  # (2B, M*H)
            R = torch.nn.functional.normalize(R, dim=1)
            xs.append(R[:len(k)].cpu())
            ys.append(R[len(k):].cpu())
    X, Y = torch.cat(xs), torch.cat(ys)  # (n, M*H) each, unit norm
    hits = 0
    for start in range(0, len(X), 1024):  # (chunk, n) similarities at a time
        best = (X[start:start + 1024] @ Y.T).argmax(dim=1)
        hits += int((best == torch.arange(start, start + len(best))).sum())
    return hits / len(X)


# ---------------------------------------------------------------------------------------
# Learning curves: a probe after every epoch of train_smen
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _global_rngs_kept() -> Iterator[None]:
    """Restore Python's, numpy's and torch's (CPU and CUDA) global RNG states after the block."""
    states = io.rng_states()
    try:
        yield
    finally:
        io.set_rng_states(states)


class EpochProbe:
    """A ``train_smen(..., on_epoch_end=...)`` callback: downstream AUC (and retrieval) per epoch.

    After each epoch the callback encodes ``user_ids`` with the current model
    (``encode_users``, R^ over the whole life, on ``device``: the training device,
    ``encode_batch_size`` users at a time) and runs the §3.2-3.4 probe (``downstream.evaluate``,
    on the CPU, split and probe seeded by ``seed``, the same every epoch so the curve follows
    the representation only) on the named ``tasks`` of ``dataset``; keep it to one or two
    tasks, it runs every epoch. The probe's bootstrap is cut to one resample: only the AUC is
    reported. With ``retrieval_users`` (and ``train_config``, the sampler's settings) it adds
    :func:`view_retrieval_top1` on up to ``retrieval_n_users`` of them: pass users held out
    of training to measure generalisation.

    The labels are computed once, here. Every random draw is seeded explicitly, and the
    global Python, numpy and torch RNG states are restored after each call, so a training
    run with the probe follows the same path as one without, and a resumed run matches an
    uninterrupted one.

    Calling it returns ``{"auc": {task: auc}, "retrieval_top1": float (if asked),
    "probe_seconds": float}``; ``train_smen`` stores it in ``history["eval"]`` with the epoch
    and step (see :func:`learning_curve_frame`). The last epoch's encoding is kept
    (:meth:`encoding_after`): it is the trained model's R^ of ``user_ids``, which notebook 04
    would otherwise compute again (13.6 s on the demo run); so is that of each epoch in
    ``keep_epochs`` (notebook 04 keeps the one of its snapshot for notebook 08).
    """

    def __init__(self, boi: Mapping[str, BoISequences], user_ids: np.ndarray, dataset,
                 downstream_config: DownstreamConfig, tasks: Sequence[str], seed: int,
                 device: torch.device | str | None = "cpu", retrieval_users: np.ndarray | None = None,
                 train_config: UserTrainingConfig | None = None, retrieval_n_users: int = 1000,
                 encode_batch_size: int = 512, keep_epochs: Collection[int] = ()):
        if retrieval_users is not None and train_config is None:
            raise ValueError("retrieval_users needs train_config (the sampler's settings of the views)")
        by_name = {task["name"]: task for task in dataset.tasks}
        unknown = [t for t in tasks if t not in by_name]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; the dataset has {sorted(by_name)}")
        self.labels = {t: downstream.task_labels(dataset, by_name[t]) for t in tasks}
        self.user_ids = np.asarray(user_ids, dtype=np.int64)
        self.config = dataclasses.replace(downstream_config, bootstrap=1)
        self.boi, self.dataset, self.seed, self.device = dict(boi), dataset, seed, device
        self.retrieval_users, self.train_config, self.retrieval_n_users = retrieval_users, train_config, retrieval_n_users
        self.encode_batch_size = encode_batch_size
        self.keep_epochs = frozenset(int(e) for e in keep_epochs)
        self._encodings: dict[int, np.ndarray] = {}  # {epochs trained: (n, M*H) R^}: the last call's, keep_epochs'

    def __call__(self, epoch: int, model) -> dict:
        start = time.perf_counter()
        with _global_rngs_kept():
            reps = encode_users(model, self.boi, self.user_ids, self.device, batch_size=self.encode_batch_size)  # (n, M*H)
            self._encodings = {e: r for e, r in self._encodings.items() if e in self.keep_epochs}
            self._encodings[epoch + 1] = reps
            metrics = downstream.evaluate(reps, self.user_ids, self.dataset, self.config, self.seed, device="cpu",
                                          labels=self.labels)
            out: dict[str, Any] = {"auc": {t: float(m["auc"]) for t, m in metrics.items()}}
            if self.retrieval_users is not None:
                out["retrieval_top1"] = view_retrieval_top1(model, self.boi, self.retrieval_users, self.train_config,
                                                            self.seed, self.device, self.retrieval_n_users)
        out["probe_seconds"] = round(time.perf_counter() - start, 2)
        return out

    def encoding_after(self, epochs: int) -> np.ndarray | None:
        """(n, M*H) R^ of ``user_ids`` encoded after epoch ``epochs`` (1-based), if that was the
        last call or is in ``keep_epochs``; None otherwise (e.g. a resumed run whose training had
        already passed that epoch)."""
        return self._encodings.get(epochs)

    def save_encodings(self, snapshots: Mapping[int, str | Path]) -> list[Path]:
        """Keep the encoding after each epoch E of ``snapshots`` (``{E: model path}``, as given to
        ``train_smen``) beside its model (``user_training.save_model_encoding``) when this probe
        has it (:meth:`encoding_after`) and the model was written; returns the files written."""
        kept = {epochs: self.encoding_after(epochs) for epochs in snapshots}
        return [save_model_encoding(snapshots[epochs], self.user_ids, reps)
                for epochs, reps in kept.items() if reps is not None and Path(snapshots[epochs]).exists()]


def learning_curve_frame(history: Mapping[str, Any]) -> pd.DataFrame:
    """``history["eval"]`` of ``train_smen`` with :class:`EpochProbe` -> one row per (epoch, metric).

    Columns ``epoch``, ``step``, ``metric`` (``auc <task>`` or ``retrieval_top1``), ``value``;
    empty when there is no evaluation.
    """
    rows = []
    for entry in history.get("eval", []):
        for task, auc in entry.get("auc", {}).items():
            rows.append({"epoch": entry["epoch"], "step": entry["step"], "metric": f"auc {task}", "value": auc})
        if "retrieval_top1" in entry:
            rows.append({"epoch": entry["epoch"], "step": entry["step"], "metric": "retrieval_top1",
                         "value": entry["retrieval_top1"]})
    return pd.DataFrame(rows, columns=["epoch", "step", "metric", "value"])
