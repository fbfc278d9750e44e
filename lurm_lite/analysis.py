"""Ablations and visualisation of §3.6-3.7: what notebooks 06-08 compute, unit-tested here.

- **Fig. 3, length ablation**: :func:`length_windows` picks the history lengths that fit a
  dataset's span (2 months ... 5 years, then the whole life); a window of K months before
  the history end starts at :func:`lurm_lite.periods.window_start_ts` (the window
  ``encode_users`` encodes); :func:`boi_in_window` is the model-free reference (raw b_T of
  eq. 4 restricted to the same window) and :func:`rfm_in_window` the activity-only one (recency, frequency, tenure of that window).
- **Evaluation**: :func:`evaluate_representation` runs the same split and probe as notebook
  05 (:func:`lurm_lite.downstream.evaluate`); :func:`metrics_frame` turns
  ``{setting: {task: metrics}}`` into the long table :func:`lurm_lite.plots.metric_vs_setting`
  draws, and :func:`length_trend` summarises a curve.
- **Table 5 / Fig. 4 variants**: :func:`variant_training_config` adapts the sub-sequence
  sampler to a coarse-only SMEN, :func:`recluster` re-runs §2.1.2 for another D or the soft
  assignment, :func:`train_variant` trains SMEN without a checkpoint and encodes every user
  (cached in the run folder, so a rerun of the notebook does not retrain).
- **Fig. 5, anchors**: :func:`anchor_points` flattens the multi-anchor outputs r^i (eq. 5)
  into (user, anchor) points, :func:`anchor_silhouette` scores how well the anchor label
  separates them, :func:`tsne_2d` maps them to 2-D; :func:`interest_alpha` is alpha_ij of
  eq. (6) for every interest, and :func:`anchor_label_mass` / :func:`top_labels_per_anchor`
  say which categories or ground-truth topics each anchor weights most.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from lurm_lite import baselines, clustering, downstream, io
from lurm_lite.boi import BoISequences, build_boi
from lurm_lite.config import ClusteringConfig, DownstreamConfig, SMENConfig, UserTrainingConfig
from lurm_lite.io import load_json, save_npz
from lurm_lite.periods import LIFE, months_per_period
from lurm_lite.runs import RunPaths
from lurm_lite.smen import SMEN, load_smen
from lurm_lite.user_training import boi_fingerprint, encode_users, train_smen

# Fig. 3's lengths in months: 2 months, 6 months, 1, 2, 3, 4, 5 years (then the whole life).
PAPER_LENGTHS_MONTHS = (2, 6, 12, 24, 36, 48, 60)

# ---------------------------------------------------------------------------------------
# Fig. 3: history windows
# ---------------------------------------------------------------------------------------


def length_windows(span_months: int, lengths: Sequence[int] = PAPER_LENGTHS_MONTHS) -> list[int | None]:
    """The Fig. 3 lengths (months) that fit a history of ``span_months``, then None (whole life).

    A length as long as the span or longer would repeat the whole life and is dropped;
    the whole life is always the last entry. Duplicates and non-positive lengths go.
    """
    kept = sorted({int(m) for m in lengths if 0 < int(m) < span_months})
    return [*kept, None]


def length_label(months: int | None) -> str:
    """``2M``, ``6M``, ``1Y``, ``5Y``, ``18M``, or ``life`` (None)."""
    if months is None:
        return LIFE
    return f"{months // 12}Y" if months % 12 == 0 else f"{months}M"


def boi_in_window(history: pd.DataFrame, item_interest: np.ndarray | sp.spmatrix, n_interests: int,
                  user_ids: np.ndarray, start_ts: int | None) -> sp.csr_matrix:
    """Model-free reference of Fig. 3: raw b_T (eq. 4) of the behaviours with ts >= ``start_ts``.

    ``history`` is the history window (``Dataset.history()``), so the window ends at the
    history end; None keeps the whole life (Table 5's BoI row). Rows follow ``user_ids``;
    a user without behaviours in the window gets a zero row.
    """
    part = history if start_ts is None else history[history["ts"].to_numpy() >= start_ts]
    return baselines.boi_features(part, item_interest, n_interests, np.asarray(user_ids))


def rfm_in_window(history: pd.DataFrame, user_ids: np.ndarray, history_end_ts: int,
                  start_ts: int | None) -> np.ndarray:
    """Activity-only reference of Fig. 3: RFM of the behaviours with ts >= ``start_ts``: (n_users, 3).

    Recency, log(1 + frequency) and tenure in months before ``history_end_ts``
    (:func:`lurm_lite.baselines.rfm_features`) of the window's behaviours only, so tenure
    is at most the window's length; None keeps the whole life (the RFM row of notebook 05).
    A user without behaviours in the window gets frequency 0 and recency = tenure = the
    largest tenure in the window.
    """
    part = history if start_ts is None else history[history["ts"].to_numpy() >= start_ts]
    return baselines.rfm_features(part, np.asarray(user_ids), history_end_ts)


# ---------------------------------------------------------------------------------------
# Evaluation on notebook 05's split and probe
# ---------------------------------------------------------------------------------------


def evaluate_representation(X, user_ids: np.ndarray, dataset, config: DownstreamConfig, seed: int,
                            labels: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
                            ) -> dict[str, dict[str, Any]]:
    """Every task of ``dataset`` on the representation X, with notebook 05's split and probe.

    A thin wrapper of :func:`lurm_lite.downstream.evaluate` (same ``seed`` -> the same
    stratified 80/20 split per task, the same MLP probe, the probe on the CPU), so the
    numbers of notebooks 06-08 are comparable with ``results.json``. Pass ``labels`` (from
    ``downstream.all_task_labels``) when evaluating many representations.
    """
    return downstream.evaluate(X, np.asarray(user_ids), dataset, config, seed, device="cpu", labels=labels)


def metrics_frame(per_setting: Mapping[Any, Mapping[str, Mapping[str, Any]]], setting: str = "setting") -> pd.DataFrame:
    """``{setting value: {task: metrics}}`` -> long table, one row per (task, setting).

    Columns ``task``, ``<setting>``, ``auc``, ``acc``, ``auc_lo``, ``auc_hi``, ``n_test``;
    tasks in first-seen order, settings in the mapping's order (what
    :func:`lurm_lite.plots.metric_vs_setting` draws).
    """
    rows = []
    for value, per_task in per_setting.items():
        for task, m in per_task.items():
            lo, hi = m.get("auc_ci95", [np.nan, np.nan])
            rows.append({"task": task, setting: value, "auc": float(m["auc"]), "acc": float(m["acc"]),
                         "auc_lo": float(lo), "auc_hi": float(hi), "n_test": int(m["n_test"])})
    frame = pd.DataFrame(rows, columns=["task", setting, "auc", "acc", "auc_lo", "auc_hi", "n_test"])
    order = {task: i for i, task in enumerate(dict.fromkeys(frame["task"]))}
    return frame.sort_values("task", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def length_trend(frame: pd.DataFrame, setting: str = "length") -> pd.DataFrame:
    """Per task: AUC of the shortest window, the best window, the whole life, and the gain.

    ``frame`` from :func:`metrics_frame` with settings ordered short -> long (``life``
    last). ``gain`` = AUC(life) - AUC(shortest); ``from_best`` = AUC(life) - max AUC;
    ``spearman`` = rank correlation of AUC with the window's position (1: rises steadily).
    """
    rows = []
    for task, part in frame.groupby("task", sort=False):
        auc = part["auc"].to_numpy()
        position = np.arange(len(auc))
        rho = float(pd.Series(auc).corr(pd.Series(position), method="spearman")) if len(auc) > 1 else np.nan
        rows.append({"task": task, "shortest": part[setting].iloc[0], "auc_shortest": auc[0],
                     "best": part[setting].iloc[int(np.argmax(auc))], "auc_best": auc.max(),
                     "auc_life": auc[-1], "gain": auc[-1] - auc[0], "from_best": auc[-1] - auc.max(),
                     "spearman": rho})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------
# Table 5 and Fig. 4: retrained variants
# ---------------------------------------------------------------------------------------


def variant_training_config(train_config: UserTrainingConfig, scales: Sequence[str], epochs: int | None = None
                            ) -> UserTrainingConfig:
    """The sub-sequence sampler's settings for a SMEN whose finest scale is ``scales[0]``.

    ``min_subseq_periods`` and ``max_periods`` count periods of the finest scale (months in
    the run's model). A year-only SMEN (LURM(yearly)) keeps the same spans in time: 6 months
    -> 1 year at least, 120 months -> 10 years at most; otherwise its views would be 6
    years at least, i.e. most lives whole, and the two views of a user nearly identical.
    ``epochs`` overrides the epoch count (None: keep it).
    """
    factor = months_per_period(scales[0]) / months_per_period("month")
    changes: dict[str, Any] = {}
    if factor != 1:
        changes["min_subseq_periods"] = max(1, int(round(train_config.min_subseq_periods / factor)))
        if train_config.max_periods is not None:  # None: no cap, at any scale
            changes["max_periods"] = max(1, int(round(train_config.max_periods / factor)))
    if epochs is not None:
        changes["epochs"] = int(epochs)
    return dataclasses.replace(train_config, **changes)


def recluster(item_embeddings: np.ndarray, n_interests: int, config: ClusteringConfig, seed: int,
              assignment: str = "hard", centroids: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray | sp.csr_matrix]:
    """§2.1.2 again for another D or assignment: (centroids (D, H), hard (n_items,) or soft CSR).

    ``centroids`` given: reuse them (only the assignment changes, as for hard vs soft).
    """
    if assignment not in ("hard", "soft"):
        raise ValueError(f"assignment must be 'hard' or 'soft', not {assignment!r}")
    if centroids is None:
        centroids = clustering.train_centroids(item_embeddings, n_interests, config, seed=seed)
    if assignment == "hard":
        return centroids, clustering.assign_hard(item_embeddings, centroids)
    return centroids, clustering.assign_soft(item_embeddings, centroids, config.soft_top_k)


def boi_for(history: pd.DataFrame, assignment: np.ndarray | sp.spmatrix, n_interests: int,
            granularities: Sequence[str] = ("month", "year")) -> dict[str, BoISequences]:
    """BoI sequences (eq. 4) of the history behaviours under another assignment."""
    return build_boi(history["user_id"].to_numpy(), history["item_id"].to_numpy(), history["ts"].to_numpy(),
                     assignment, n_interests, granularities=tuple(granularities))


def _config_key(smen_config: SMENConfig, train_config: UserTrainingConfig, seed: int, extra: Mapping) -> str:
    return json.dumps({"smen": dataclasses.asdict(smen_config), "train": dataclasses.asdict(train_config),
                       "seed": int(seed), **{k: extra[k] for k in sorted(extra)}}, sort_keys=True, default=str)


def _as_stored(obj: Any) -> Any:
    """``obj`` as a stage JSON holds it (tuples become lists)."""
    return json.loads(json.dumps(obj, default=list))


def run_snapshot(run_root: str | Path, smen_config: SMENConfig, train_config: UserTrainingConfig,
                 seed: int) -> tuple[Path, list[float]] | None:
    """Notebook 04's model after ``train_config.epochs`` epochs, when it is that variant.

    Notebook 04 saves its model after the epochs of notebook 08's reference
    (``train_smen(snapshots=...)``, listed in ``04_smen.json``); since every epoch samples
    from its own seeded RNG, that snapshot is the model a fresh run of that many epochs
    with the same seed, SMEN config and sampler settings trains, and 08 encodes it instead
    of training the reference again. Returns (path, the loss of each of those epochs), or
    None when 04 ran with another seed or other settings or kept no such snapshot (then
    the variant is trained).
    """
    run = RunPaths(run_root)
    stage = run.stage_json("04_smen")
    if not stage.exists():
        return None
    record = load_json(stage)
    path = record.get("snapshots", {}).get(str(train_config.epochs))
    wanted_train = {k: v for k, v in dataclasses.asdict(train_config).items() if k not in ("epochs", "encode_batch_size")}
    stored_train = {k: v for k, v in record.get("train_config", {}).items() if k not in ("epochs", "encode_batch_size")}
    if (path is None or record.get("seed") != seed or _as_stored(record.get("smen_config"))
            != _as_stored(dataclasses.asdict(smen_config)) or _as_stored(stored_train) != _as_stored(wanted_train)
            or not (run.root / path).exists()):
        return None
    return run.root / path, [float(v) for v in load_json(run.smen_loss)["epoch"][:train_config.epochs]]


def train_variant(boi: Mapping[str, BoISequences], smen_config: SMENConfig, train_config: UserTrainingConfig,
                  user_ids: np.ndarray, device: torch.device | str | None, seed: int,
                  cache_path: str | Path | None = None, cache_key: Mapping | None = None,
                  progress: bool = False, trained: tuple[Path, Sequence[float]] | None = None
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """Train one SMEN variant from scratch (§2.2.4) and encode every user: (reps, info).

    ``reps`` is (len(user_ids), M*H) R^ over the whole history, rows in ``user_ids`` order;
    ``info`` holds the sizes, the first and last epoch loss and the training time. No resume
    checkpoint is written; instead, with ``cache_path`` the representations are saved there
    (``.npz``) with a key of the configs, the seed, ``cache_key`` (e.g. D and the
    assignment) and a content hash of the BoI it trains on (``boi_fingerprint``: new
    interests with the same D are another variant), and a later call with the same key
    loads them instead of training. ``trained`` = (model path, per-epoch losses) of a model
    already trained with exactly these settings (:func:`run_snapshot`): it is encoded
    instead of trained, and ``info["shared"]`` names it.
    """
    user_ids = np.asarray(user_ids, dtype=np.int64)
    key = _config_key(smen_config, train_config, seed,
                      {**(cache_key or {}), "boi": boi_fingerprint(dict(boi), smen_config.scales)})
    if cache_path is not None and Path(cache_path).exists():
        with np.load(cache_path, allow_pickle=False) as saved:
            if str(saved["key"]) == key and np.array_equal(saved["user_ids"], user_ids):
                info = json.loads(str(saved["info"]))
                return saved["reps"], {**info, "cached": True}
    start = time.perf_counter()
    if trained is None:
        model, losses = train_smen(dict(boi), smen_config, train_config, device, seed,
                                   checkpoint_path=None, resume=False, progress=progress)
        epoch_losses = losses["epoch"]
    else:
        model, epoch_losses = load_smen(trained[0], io.device(device)), trained[1]
    train_seconds = time.perf_counter() - start
    reps = encode_users(model, dict(boi), user_ids, device, batch_size=train_config.encode_batch_size)
    info = {"scales": list(smen_config.scales), "anchors": smen_config.anchors, "hidden": smen_config.hidden,
            "n_interests": int(model.n_interests), "representation_size": int(reps.shape[1]),
            "epochs": train_config.epochs, "loss_first_epoch": float(epoch_losses[0]),
            "loss_last_epoch": float(epoch_losses[-1]), "train_seconds": round(train_seconds, 1),
            "cached": False, **({"shared": Path(trained[0]).name} if trained is not None else {})}
    if cache_path is not None:
        save_npz(cache_path, user_ids=user_ids, reps=reps, key=np.array(key), info=np.array(json.dumps(info)))
    return reps, info



# ---------------------------------------------------------------------------------------
# Fig. 5: anchors
# ---------------------------------------------------------------------------------------


def anchor_points(outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n_users, M, H) multi-anchor outputs -> points (n_users*M, H) and anchor labels (n_users*M,)."""
    outputs = np.asarray(outputs)
    n, M, H = outputs.shape
    return outputs.reshape(n * M, H), np.tile(np.arange(M), n)


def anchor_silhouette(points: np.ndarray, labels: np.ndarray, metric: str = "cosine") -> float:
    """Mean silhouette (scikit-learn) of the anchor labels: near 1 = anchors apart, near 0 = mixed.

    The cosine metric by default: r^i are ReLU outputs whose scale grows with a user's
    activity, so the direction is what tells anchors apart. All-zero points (users without
    periods) are left out; NaN when fewer than two labels remain.
    """
    from sklearn.metrics import silhouette_score

    points, labels = np.asarray(points, dtype=np.float64), np.asarray(labels)
    kept = np.abs(points).sum(axis=1) > 0
    if len(np.unique(labels[kept])) < 2 or kept.sum() <= len(np.unique(labels[kept])):
        return float("nan")
    return float(silhouette_score(points[kept], labels[kept], metric=metric))


def anchor_knn_purity(points: np.ndarray, labels: np.ndarray, k: int = 10, metric: str = "cosine") -> float:
    """Mean fraction of each point's ``k`` nearest neighbours that share its anchor label.

    A local companion of the silhouette: regions of one anchor next to islands of one user
    (all anchors of a low-activity user nearly coincide) give a low silhouette but a purity
    well above chance (1/M). All-zero points are left out; NaN when too few remain.
    """
    from sklearn.neighbors import NearestNeighbors

    points, labels = np.asarray(points, dtype=np.float64), np.asarray(labels)
    kept = np.abs(points).sum(axis=1) > 0
    points, labels = points[kept], labels[kept]
    k = min(k, len(points) - 1)
    if k < 1:
        return float("nan")
    _, neighbours = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(points).kneighbors(points)
    return float((labels[neighbours[:, 1:]] == labels[:, None]).mean())


def tsne_2d(points: np.ndarray, seed: int, perplexity: float = 30.0) -> np.ndarray:
    """t-SNE (scikit-learn, PCA init) of ``points`` into 2-D: (n, 2). Perplexity capped below n/3."""
    from sklearn.manifold import TSNE

    points = np.asarray(points, dtype=np.float32)
    perplexity = float(min(perplexity, max(2.0, (len(points) - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)


def interest_alpha(model: SMEN) -> np.ndarray:
    """alpha_ij of eq. (6) for every interest j: (D, M), rows sum to 1 (computed in chunks)."""
    ma = model.multi_anchor
    out = []
    with torch.inference_mode():
        for start in range(0, ma.W_e.shape[0], 65_536):
            out.append(ma.alpha(ma.W_e[start:start + 65_536]).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, ma.W_a.shape[0]), np.float32)


def item_label_matrix(labels: Sequence[str] | pd.Series,
                      separator: str | None = "|") -> tuple[sp.csr_matrix, list[str]]:
    """Items' labels -> (n_items, L) CSR of label shares and the L names, sorted.

    With ``separator`` an item listing several labels (MovieLens genres ``"Drama|War"``)
    shares its mass equally among them; each row sums to 1 (empty labels: a zero row).
    """
    parts = [[p for p in (str(v).split(separator) if separator else [str(v)]) if p] for v in labels]
    names = sorted({p for ps in parts for p in ps})
    index = {n: i for i, n in enumerate(names)}
    rows = np.repeat(np.arange(len(parts)), [len(ps) for ps in parts])
    cols = np.array([index[p] for ps in parts for p in ps], dtype=np.int64)
    values = np.concatenate([np.full(len(ps), 1.0 / len(ps)) for ps in parts if ps]) if len(cols) else np.zeros(0)
    return sp.csr_matrix((values.astype(np.float64), (rows, cols)), shape=(len(parts), len(names))), names


def _as_matrix(assignment: np.ndarray | sp.spmatrix, n_cols: int | None = None) -> sp.csr_matrix:
    """Hard labels (n,) -> one-hot CSR (n, n_cols); a CSR passes through."""
    if sp.issparse(assignment):
        return sp.csr_matrix(assignment, dtype=np.float64)
    labels = np.asarray(assignment, dtype=np.int64)
    n_cols = int(labels.max()) + 1 if n_cols is None else n_cols
    return sp.csr_matrix((np.ones(len(labels)), (np.arange(len(labels)), labels)), shape=(len(labels), n_cols))


def anchor_label_mass(alpha: np.ndarray, item_interest: np.ndarray | sp.spmatrix, item_labels: np.ndarray | sp.spmatrix,
                      n_labels: int | None = None, item_weight: np.ndarray | None = None) -> np.ndarray:
    """Alpha-weighted item mass of each label under each anchor: (M, L).

    mass[i, c] = sum over items x of weight(x) * sum_j a(x, j) alpha_ij * l(x, c), with a the
    item -> interest assignment (hard: one-hot; soft: rows summing to 1), alpha from eq. (6)
    ((D, M), rows summing to 1) and l the item -> label shares (hard labels, e.g.
    ground-truth topics, or :func:`item_label_matrix`). ``item_weight`` is e.g. the number
    of history behaviours on the item (None: 1 per item). Since alpha's rows sum to 1,
    summing over the anchors gives each label's total weight.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    A = _as_matrix(item_interest, alpha.shape[0])  # (n_items, D)
    Lm = _as_matrix(item_labels, n_labels)  # (n_items, L)
    w = np.ones(A.shape[0]) if item_weight is None else np.asarray(item_weight, dtype=np.float64)
    item_anchor = np.asarray(A @ alpha) * w[:, None]  # (n_items, M)
    return np.asarray(Lm.T @ item_anchor).T  # (M, L)


def top_labels_per_anchor(mass: np.ndarray, names: Sequence[str], top: int = 3, min_share: float = 0.0
                          ) -> list[list[dict[str, Any]]]:
    """The ``top`` labels of each anchor by lift, from :func:`anchor_label_mass`.

    share = mass[i, c] / mass[i].sum() (what the anchor is made of); lift = share / the
    label's share of all mass (1: the anchor weights the label like everybody else; > 1: it
    specialises in it). Ranking by lift keeps big categories from topping every anchor;
    labels with a share below ``min_share`` are not ranked.
    """
    mass = np.asarray(mass, dtype=np.float64)
    share = mass / np.maximum(mass.sum(axis=1, keepdims=True), 1e-300)
    overall = mass.sum(axis=0) / max(mass.sum(), 1e-300)
    lift = np.where(overall > 0, share / np.maximum(overall, 1e-300), 0.0)
    out = []
    for i in range(mass.shape[0]):
        ranked = [c for c in np.argsort(-lift[i], kind="stable") if share[i, c] >= min_share and share[i, c] > 0]
        out.append([{"label": str(names[c]), "share": float(share[i, c]), "lift": float(lift[i, c])}
                    for c in ranked[:top]])
    return out


def alpha_concentration(alpha: np.ndarray, weight: np.ndarray | None = None) -> dict[str, float]:
    """How decisively interests are shared out among anchors (eq. 6), weighted by ``weight`` (D,).

    ``max_alpha``: mean over interests of max_i alpha_ij (1/M: uniform; 1: one anchor each);
    ``entropy``: mean entropy of alpha_.j divided by log M (1: uniform, 0: one anchor).
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    M = alpha.shape[1]
    w = np.ones(alpha.shape[0]) if weight is None else np.asarray(weight, dtype=np.float64)
    w = w / max(w.sum(), 1e-300)
    entropy = -(alpha * np.log(np.clip(alpha, 1e-300, None))).sum(axis=1) / (np.log(M) if M > 1 else 1.0)
    return {"max_alpha": float(w @ alpha.max(axis=1)), "entropy": float(w @ entropy), "uniform_max_alpha": 1.0 / M}



# ---------------------------------------------------------------------------------------
# Per-scale defaults of notebooks 06-08 (their parameters default to None = these)
# ---------------------------------------------------------------------------------------

ANALYSIS_DEFAULTS: dict[str, dict[str, Any]] = {
    # tiny: seconds per notebook (tests); default: `make demo` on 2 CPU cores; paper: the
    # paper's sweeps and all of Table 5, for a GPU. Measured on 2 cores, synthetic default
    # (D = 1000, ~4,900 trainable users, whole-life fixed-interval timelines): one epoch costs
    # 76 s for a month + year SMEN (M = 10, H = 128; 52 s since TimeAggregation packs its chunks),
    # 61 s monthly only, 11 s yearly only, 12 s for 1anchor-128 and 841 s for 1anchor-1280 (a GRU of H = 1280 does 10x the
    # arithmetic of ten H = 128 anchors). So the default scale leaves 1anchor-MH out of
    # VARIANTS (one variant would cost an hour; add it with -p VARIANTS) and trains every
    # variant, and its equal-budget LURM reference, for 2 epochs: notebook 04's learning curve
    # on that data (quality seed 0) has age AUC 82.4 after 2 epochs and 84.5 after 6, a rise
    # shared by every variant of the same budget.
    "tiny": {"lengths_months": (2, 12, 36), "ablation_epochs": 1, "d_sweep": (25, 50), "tsne_users": 100,
             "variants": ("monthly", "yearly", "1anchor-H", "1anchor-MH")},
    "default": {"lengths_months": PAPER_LENGTHS_MONTHS, "ablation_epochs": 2,
                "d_sweep": (100, 300, 1000, 3000, 10_000), "tsne_users": 100,
                "variants": ("monthly", "yearly", "1anchor-H")},
    "paper": {"lengths_months": PAPER_LENGTHS_MONTHS, "ablation_epochs": 10,
              "d_sweep": (1000, 10_000, 100_000, 200_000), "tsne_users": 100,
              "variants": ("monthly", "yearly", "1anchor-H", "1anchor-MH")},
}


def analysis_default(scale: str, name: str, value: Any = None) -> Any:
    """``value`` unless None, else the scale's default of notebook parameter ``name`` (see above)."""
    if value is not None:
        return value
    if scale not in ANALYSIS_DEFAULTS:
        raise ValueError(f"Unknown scale {scale!r}; choose one of {', '.join(ANALYSIS_DEFAULTS)}.")
    return ANALYSIS_DEFAULTS[scale][name]
