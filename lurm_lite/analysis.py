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
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from lurm_lite import baselines, clustering, downstream, evaluate, io, periods
from lurm_lite.boi import BoISequences, build_boi
from lurm_lite.competitors import pretraining, sequences, supervised
from lurm_lite.config import (ITEMS_PER_INTEREST, PAPER_LENGTHS_MONTHS, ClusteringConfig, CompetitorConfig,
                              DownstreamConfig, SMENConfig, UserTrainingConfig)
from lurm_lite.io import load_json, save_npz
from lurm_lite.periods import LIFE, months_per_period
from lurm_lite.runs import RunPaths
from lurm_lite.smen import SMEN, load_smen
from lurm_lite.user_training import boi_fingerprint, encode_users, kept_model_encoding, train_smen


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
                            labels: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
                            cache_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Every task of ``dataset`` on the representation X, with notebook 05's split and probe.

    A thin wrapper of :func:`lurm_lite.downstream.evaluate` (same ``seed`` -> the same
    stratified 80/20 split per task, the same MLP probe, the probe on the CPU), so the
    numbers of notebooks 06-08 are comparable with ``results.json``. Pass ``labels`` (from
    ``downstream.all_task_labels``) when evaluating many representations, and the run
    folder's ``probes/`` as ``cache_dir`` to read back what an earlier notebook probed.
    """
    return downstream.evaluate(X, np.asarray(user_ids), dataset, config, seed, device="cpu", labels=labels,
                               cache_dir=cache_dir)



def same_length_comparison(run: RunPaths, dataset, user_ids: np.ndarray, model: SMEN, boi: Mapping[str, BoISequences],
                           competitor_config: CompetitorConfig, config: DownstreamConfig, seed: int,
                           device: str | torch.device, labels: Mapping[str, tuple[np.ndarray, np.ndarray]],
                           months: int = 2, lurm_window: Mapping[str, Any] | None = None
                           ) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Tables 3-4's comparison at equal input (§3.4-3.5): every method fed only the last ``months``.

    The paper gives its competitors "behavior data of two months" on the industrial data and
    finds LURM(2M) ahead of all of them at that length. Here: LURM(2M) (the trained SMEN of
    notebook 04, encoded over the window), PTUM and SUMN as pre-trained in notebook 05
    (``run.pretrained``; a model not there is left out) encoding the window's L most recent
    behaviours, and TextCNN and HAN trained per task on that same input and split.
    ``lurm_window``: LURM's metrics on this window when already computed (notebook 06's
    length windows), so it is not encoded and probed again. Returns
    ``({"LURM(2M)" | "<method>(2M)": {task: metrics}}, {method: seconds})``.
    """
    start_ts = periods.window_start_ts(dataset.history_end_ts, months)
    seqs = sequences.recent_behaviours(dataset.history(), user_ids, competitor_config.sequence_length, since_ts=start_ts)
    titles = sequences.run_title_tokens(run, dataset.items, competitor_config)
    label = f"({months}M)"
    timed = {}

    def clock(name: str, evaluate: Callable[[], dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
        began = time.perf_counter()
        out = evaluate()
        timed[name] = round(time.perf_counter() - began, 1)
        return out

    rows = {f"LURM{label}": lurm_window if lurm_window is not None else clock(f"LURM{label}", lambda: (
        evaluate_representation(encode_users(model, dict(boi), user_ids, device, last_months=months,
                                             history_end_ts=dataset.history_end_ts), user_ids, dataset, config,
                                seed, labels)))}
    for name, (model_class, _) in evaluate.PRETRAINED.items():
        if run.pretrained(name).exists():
            rows[name + label] = clock(name + label, lambda: evaluate_representation(
                pretraining.encode(pretraining.load(model_class, run.pretrained(name), device), seqs, titles, device),
                user_ids, dataset, config, seed, labels))
    for name in evaluate.SUPERVISED:
        rows[name + label] = clock(name + label, lambda: supervised.train_on_tasks(
            name, seqs, titles, dict(labels), competitor_config, config, seed, device)[0])
    return rows, timed


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
    instead of trained (or not even encoded: the R^ that notebook 04 kept beside it,
    ``user_training.kept_model_encoding``), and ``info["shared"]`` names it.
    """
    user_ids = np.asarray(user_ids, dtype=np.int64)
    key = _config_key(smen_config, train_config, seed,
                      {**(cache_key or {}), "boi": boi_fingerprint(dict(boi), smen_config.scales)})
    if cache_path is not None and Path(cache_path).exists():
        with np.load(cache_path, allow_pickle=False) as saved:
            if str(saved["key"]) == key and np.array_equal(saved["user_ids"], user_ids):
                info = json.loads(str(saved["info"]))
                return saved["reps"], {**info, "cached": True}
    start, reps = time.perf_counter(), None
    if trained is None:
        model, losses = train_smen(dict(boi), smen_config, train_config, device, seed,
                                   checkpoint_path=None, resume=False, progress=progress)
        epoch_losses = losses["epoch"]
    else:  # the model is read only when notebook 04 kept no encoding of it
        epoch_losses, reps = trained[1], kept_model_encoding(trained[0], user_ids)
        model = load_smen(trained[0], io.device(device)) if reps is None else None
    train_seconds = time.perf_counter() - start
    if reps is None:
        reps = encode_users(model, dict(boi), user_ids, device, batch_size=train_config.encode_batch_size)
    info = {"scales": list(smen_config.scales), "anchors": smen_config.anchors, "hidden": smen_config.hidden,
            "n_interests": int(boi[smen_config.scales[0]].n_interests), "representation_size": int(reps.shape[1]),
            "epochs": train_config.epochs, "loss_first_epoch": float(epoch_losses[0]),
            "loss_last_epoch": float(epoch_losses[-1]), "train_seconds": round(train_seconds, 1),
            "cached": False, **({"shared": Path(trained[0]).name} if trained is not None else {})}
    if cache_path is not None:
        save_npz(cache_path, user_ids=user_ids, reps=reps, key=np.array(key), info=np.array(json.dumps(info)))
    return reps, info



@dataclass
class Ablation:
    """What every retrained row of notebook 08 shares (Table 5, Fig. 4, hard vs soft; §3.6).

    One probe (:meth:`evaluate`: notebook 05's split and MLP) and one retraining recipe
    (:meth:`variant`: :func:`train_variant` with ``train_config``, the run's sampler settings
    at the ablation's epoch count, cached as ``cache_dir/<slug>.npz``); both time themselves
    into ``timing`` and report through ``log`` (None: silent).
    """

    history: pd.DataFrame  # Dataset.history(): what the BoI rows and the re-clustered BoI count
    labels: Mapping[str, tuple[np.ndarray, np.ndarray]]  # downstream.all_task_labels(dataset)
    user_ids: np.ndarray  # (n_users,) int64 ascending: every user with history (notebook 05's)
    downstream_config: DownstreamConfig
    train_config: UserTrainingConfig  # epochs = AnalysisConfig.ablation_epochs
    device: torch.device | str
    seed: int
    cache_dir: Path | None  # the run folder's ablations/ (None: nothing cached)
    log: Callable[[str], None] | None = print
    timing: dict[str, float] = field(default_factory=dict)
    # the run folder's probes/ (downstream.evaluate's cache_dir): the same X probed again (the run's
    # b_T is Table 5's BoI row, Fig. 4's BoI at the run's D, the hard-assignment BoI and notebook 05's
    # BoI row) is read back, not probed again; None: nothing kept
    probe_cache: Path | None = None

    @property
    def reference(self) -> str:
        """``LURM(<E>ep)``: the run's SMEN config retrained with the variants' budget of E epochs."""
        return f"LURM({self.train_config.epochs}ep)"

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Record the seconds the ``with`` block takes as ``timing[name]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timing[name] = round(time.perf_counter() - start, 1)

    def evaluate(self, name: str, X) -> dict[str, dict[str, Any]]:
        """``{task: metrics}`` of X (n_users, d) by :func:`evaluate_representation`, timed as ``probe <name>``."""
        with self.timed(f"probe {name}"):
            return evaluate_representation(X, self.user_ids, None, self.downstream_config, self.seed, self.labels,
                                           self.probe_cache)

    def boi_row(self, name: str, assignment: np.ndarray | sp.spmatrix, n_interests: int) -> dict[str, dict[str, Any]]:
        """Metrics of the raw whole-life b_T (eq. 4, Table 5's BoI row) under ``assignment``."""
        return self.evaluate(name, boi_in_window(self.history, assignment, n_interests, self.user_ids, None))

    def variant(self, name: str, smen_config: SMENConfig, boi: Mapping[str, BoISequences], slug: str,
                key: Mapping, trained: tuple[Path, Sequence[float]] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """One retrained SMEN variant, or its cache: ((n_users, M*H) R^, info) (:func:`train_variant`).

        ``boi`` holds at least ``smen_config.scales``; the sampler's spans follow the finest
        scale (:func:`variant_training_config`). ``key`` (D, assignment, ...) joins the cache
        key; ``trained`` is notebook 04's snapshot (:func:`run_snapshot`), encoded instead.
        """
        train_config = variant_training_config(self.train_config, smen_config.scales)
        cache = None if self.cache_dir is None else Path(self.cache_dir) / f"{slug}.npz"
        reps, info = train_variant({g: boi[g] for g in smen_config.scales}, smen_config, train_config,
                                   self.user_ids, self.device, self.seed, cache_path=cache, cache_key=key,
                                   trained=trained)
        self.timing[f"train {name}"] = info["train_seconds"]
        if self.log is not None:
            self.log(f"{name}: {info['representation_size']} dims, loss {info['loss_first_epoch']:.3f} -> "
                     f"{info['loss_last_epoch']:.3f}, {info['train_seconds']} s{' (cached)' if info['cached'] else ''}"
                     + (f" (notebook 04's {info['shared']})" if "shared" in info else ""))
        return reps, info


@dataclass
class RunInterests:
    """The run's interests (notebook 03, §2.1.2 and eq. 4): what Table 5's rows share."""

    centroids: np.ndarray  # (D, H_item) unit norm
    item_interest: np.ndarray  # (n_items,) int64, the hard assignment
    assignment: str  # "hard" | "soft": the assignment the run's BoI was built with
    boi: Mapping[str, BoISequences]  # the run's BoI, {"month": ..., "year": ...}

    @property
    def n_interests(self) -> int:
        """D."""
        return int(self.centroids.shape[0])


def variant_configs(base: SMENConfig, variants: Sequence[str]) -> dict[str, tuple[str, SMENConfig]]:
    """Table 5's retrained rows: ``{key: (row name, SMEN config)}`` in the order of ``variants``.

    ``monthly`` / ``yearly``: one granularity, no switch (eq. 7); ``1anchor-H``: M = 1 with
    the run's H; ``1anchor-MH``: M = 1 with H' = M*H, as wide as the multi-anchor R^ (the
    paper's 1anchor-128 / 1anchor-1280).
    """
    M, H = base.anchors, base.hidden
    known = {"monthly": ("LURM(monthly)", dataclasses.replace(base, scales=("month",))),
             "yearly": ("LURM(yearly)", dataclasses.replace(base, scales=("year",))),
             "1anchor-H": (f"LURM(1anchor-{H})", dataclasses.replace(base, anchors=1)),
             "1anchor-MH": (f"LURM(1anchor-{M * H})", dataclasses.replace(base, anchors=1, hidden=M * H))}
    unknown = [v for v in variants if v not in known]
    if unknown:
        raise ValueError(f"Unknown variant(s) {', '.join(map(repr, unknown))}; choose from {', '.join(known)}.")
    return {v: known[v] for v in variants}


def table5_variants(ab: Ablation, base: SMENConfig, interests: RunInterests, variants: Sequence[str],
                    shared: tuple[Path, Sequence[float]] | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Table 5's retrained rows: the equal-budget reference ``ab.reference``, then ``variants``.

    Every row trains on the run's BoI with the run's SMEN config ``base`` changed as
    :func:`variant_configs` says, for ``ab.train_config.epochs`` epochs; ``shared`` (notebook
    04's snapshot, :func:`run_snapshot`) stands in for the reference when it is that model.
    Returns ``({row: (n_users, M'*H') R^}, {row: train_variant info})``, reference first.
    """
    D, assignment = interests.n_interests, interests.assignment
    reps, infos = {}, {}
    reps[ab.reference], infos[ab.reference] = ab.variant(
        ab.reference, base, interests.boi, f"lurm_D{D}_{assignment}",
        {"n_interests": D, "assignment": assignment}, trained=shared)
    for key, (name, smen_config) in variant_configs(base, variants).items():
        reps[name], infos[name] = ab.variant(name, smen_config, interests.boi, f"variant_{key}_D{D}",
                                             {"n_interests": D, "assignment": assignment})
    return reps, infos


def sweep_values(values: Sequence[int], run_d: int, n_items: int, user_set: bool) -> list[int]:
    """Fig. 4's D values that can run, ascending and distinct.

    A preset sweep keeps ``ITEMS_PER_INTEREST`` items per interest (as notebook 03's D, but
    never cutting the run's own D); values the user set need only one item per centroid.
    D < 2 is dropped.
    """
    largest = n_items if user_set else max(run_d, n_items // ITEMS_PER_INTEREST)
    return sorted({int(d) for d in values if 2 <= int(d) <= largest})


def n_interests_sweep(ab: Ablation, values: Sequence[int], embeddings: np.ndarray, clustering_config: ClusteringConfig,
                      base: SMENConfig, interests: RunInterests, reference_reps: np.ndarray
                      ) -> tuple[dict[int, dict], dict[int, dict], dict[str, dict]]:
    """Fig. 4: LURM and the raw b_T against the number of interests D (§3.6).

    For each D of ``values``: k-means on the same item ``embeddings`` (n_items, H_item) with
    ``ab.seed`` (:func:`recluster`), hard assignment, BoI at ``base.scales`` rebuilt, SMEN
    retrained (``ab.variant``, cached as ``lurm_D<D>_hard``). The run's own D with a hard run
    reuses its interests and ``reference_reps`` (the ``ab.reference`` model). Returns
    ``({D: LURM metrics}, {D: b_T metrics}, {"D=<D>": train info})``.
    """
    by_d, boi_by_d, infos = {}, {}, {}
    for d in values:
        if d == interests.n_interests and interests.assignment == "hard":
            assignment, reps = interests.item_interest, reference_reps
        else:
            with ab.timed(f"k-means + BoI D={d}"):
                _, assignment = recluster(embeddings, d, clustering_config, ab.seed)
                boi = boi_for(ab.history, assignment, d, base.scales)
            reps, infos[f"D={d}"] = ab.variant(f"LURM D={d}", base, boi, f"lurm_D{d}_hard",
                                               {"n_interests": d, "assignment": "hard"})
        by_d[d] = ab.evaluate(f"D={d}", reps)
        boi_by_d[d] = ab.boi_row(f"BoI D={d}", assignment, d)
    return by_d, boi_by_d, infos


def assignment_comparison(ab: Ablation, embeddings: np.ndarray, clustering_config: ClusteringConfig,
                          base: SMENConfig, interests: RunInterests, reference_metrics: Mapping[str, dict]
                          ) -> tuple[dict[str, dict], dict[str, Any]]:
    """Hard against soft assignment (§2.1.2, §3.6: the paper saw < 1% difference).

    The run's centroids, every item assigned the other way (soft: shared among its
    ``clustering_config.soft_top_k`` nearest, cosine-weighted, rows summing to 1), BoI
    rebuilt and SMEN retrained (cached as ``lurm_D<D>_<other>``). Rows: ``LURM(<E>ep, hard)``,
    ``LURM(<E>ep, soft)`` (the run's assignment is ``reference_metrics``) and the raw b_T of
    both assignments. Returns (``{row: metrics}``, the retrained variant's info).
    """
    D, run_assignment = interests.n_interests, interests.assignment
    other = "soft" if run_assignment == "hard" else "hard"

    def assign(kind: str) -> np.ndarray | sp.csr_matrix:  # (n_items,) labels or (n_items, D) CSR
        return recluster(embeddings, D, clustering_config, ab.seed, assignment=kind, centroids=interests.centroids)[1]

    assignments = {run_assignment: interests.item_interest if run_assignment == "hard" else assign("soft"),
                   other: assign(other)}
    name = f"LURM({ab.train_config.epochs}ep, {other})"
    reps, info = ab.variant(name, base, boi_for(ab.history, assignments[other], D, base.scales), f"lurm_D{D}_{other}",
                            {"n_interests": D, "assignment": other, "top_k": clustering_config.soft_top_k})
    rows = {f"LURM({ab.train_config.epochs}ep, {run_assignment})": dict(reference_metrics),
            name: ab.evaluate(other, reps)}
    for a in (run_assignment, other):
        rows[f"BoI ({a})"] = ab.boi_row(f"BoI {a}", assignments[a], D)
    return rows, info


def untrained_smen(model: SMEN, seed: int) -> SMEN:
    """``model``'s architecture at the initial weights ``train_smen`` starts from with ``seed``
    (eval mode, on the CPU), drawn without moving the global torch RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SMEN(**model.init_kwargs()).eval()


def stored_training_config(section: UserTrainingConfig, stored: Mapping[str, Any]) -> UserTrainingConfig:
    """``section`` with the fields a stage JSON recorded (notebook 04's ``train_config``): the
    sampler settings of the run's own training, for its views (§2.2.4)."""
    names = {f.name for f in dataclasses.fields(section)}
    return dataclasses.replace(section, **{k: v for k, v in stored.items() if k in names})


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
    A = clustering.assignment_matrix(item_interest, alpha.shape[0])  # (n_items, D)
    Lm = clustering.assignment_matrix(item_labels, n_labels)  # (n_items, L)
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
# Findings: the "What we found" Markdown of notebooks 06-08, rendered from their stage JSON
# ---------------------------------------------------------------------------------------

TASK_GROUPS = ("profile", "category", "activity")


def task_groups(tasks: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """``{task: "profile" | "category" | "activity"}`` from the dataset contract's task rules.

    Profile tasks (age, baby age) are the ones Fig. 3 sees improve with length; category
    tasks (``future_<C>``) ask for preference; ``activity`` for any behaviour at all.
    """
    kinds = {"profile": "profile", "future_category": "category", "activity": "activity"}
    return {t["name"]: next((kinds[k] for k in t["rule"] if k in kinds), "activity") for t in tasks}


def _versus(label_a: str, a: float, label_b: str, b: float) -> str:
    """``"label_a 0.712 < label_b 0.741"``: the sign the numbers have, ``≈`` when they print equal."""
    sign = "≈" if f"{a:.3f}" == f"{b:.3f}" else ("<" if a < b else ">")
    return f"{label_a} {a:.3f} {sign} {label_b} {b:.3f}"


def _of(k: int, n: int) -> str:
    return f"{k} of {n}"


def _by_group(tasks: Sequence[str], groups: Mapping[str, str]) -> dict[str, list[str]]:
    """Tasks per group, groups in :data:`TASK_GROUPS` order, empty groups left out."""
    out = {g: [t for t in tasks if groups.get(t, "activity") == g] for g in TASK_GROUPS}
    return {g: ts for g, ts in out.items() if ts}


def length_findings(stage: Mapping[str, Any]) -> str:
    """Notebook 06's findings (Fig. 3, §3.6) as Markdown, every number from ``06_length_ablation.json``.

    ``stage`` holds ``window_names`` (short -> long, ``life`` last), ``lurm`` /
    ``boi_reference`` / ``rfm_reference`` (``{window: {task: metrics}}``, the references may
    be empty), ``users_with_behaviour``, ``history_span_months``, ``task_groups``, ``dataset``
    and ``source``. Each claim is an inequality between two AUCs of this run, and its wording
    follows the inequality's direction.
    """
    names, lurm = list(stage["window_names"]), stage["lurm"]
    short, life = names[0], names[-1]
    auc = {k: {t: m["auc"] for t, m in per.items()} for k, per in lurm.items()}  # {window: {task: AUC}}
    tasks = list(auc[life])
    groups = _by_group(tasks, stage["task_groups"])
    lines = [f"*Computed from `06_length_ablation.json`: {stage['dataset']}, a history of "
             f"{stage['history_span_months']} months, windows {', '.join(names)}.*", ""]
    if len(names) < 2:
        return "\n".join(lines + ["- The history is one window long: there is no length to compare."])
    for group, members in groups.items():
        helped = [t for t in members if auc[life][t] > auc[short][t]]
        verb = "helps" if 2 * len(helped) > len(members) else "does not help on most"
        shown = members if group == "profile" else [max(members, key=lambda t: abs(auc[life][t] - auc[short][t]))]
        detail = "; ".join(f"{t}: {_versus(f'LURM {short}', auc[short][t], life, auc[life][t])} (best window "
                           f"{max(names, key=lambda w: auc[w][t])})" for t in shown)
        detail += "" if group == "profile" else " (the largest change)"
        lines.append(f"- **{group.capitalize()} tasks: longer history {verb}** (life above {short} on "
                     f"{_of(len(helped), len(members))}). {detail}.")
        if group == "profile":
            far = "5Y" if "5Y" in names else life
            gain = 100 * np.mean([auc[far][t] - auc[short][t] for t in members])
            lines.append(f"  Mean gain from {short} to {far}: {gain:+.1f} AUC points (the paper: +9.75% from "
                         f"2 months to 5 years).")
    reference = {k: {t: m["auc"] for t, m in per.items()} for k, per in stage.get("boi_reference", {}).items()}
    if reference:
        boi_helped = [t for t in tasks if reference[life][t] > reference[short][t]]
        lurm_helped = [t for t in tasks if auc[life][t] > auc[short][t]]
        above = [t for t in tasks if reference[life][t] > auc[life][t]]
        lines.append(f"- **Model-free reference** (raw BoI of the same windows): life above {short} on "
                     f"{_of(len(boi_helped), len(tasks))} tasks (LURM: {_of(len(lurm_helped), len(tasks))}). "
                     f"With the whole life raw BoI is above LURM on {_of(len(above), len(tasks))}"
                     + (": " + "; ".join(_versus("BoI", reference[life][t], "LURM", auc[life][t]) + f" ({t})"
                                         for t in above) + ": there the compression loses signal." if above else "."))
        category = groups.get("category", [])
        falls = [t for t in category if reference[life][t] < reference[short][t]]
        if stage.get("source") == "synthetic" and category and 2 * len(falls) > len(category):
            lines.append(f"  On synthetic data the raw BoI falls with length on {_of(len(falls), len(category))} "
                         "category tasks: its generator's interests drift, so old behaviours say little about "
                         "future categories; SMEN's time-aware GRU keeps the recent part.")
    rfm = {k: {t: m["auc"] for t, m in per.items()} for k, per in stage.get("rfm_reference", {}).items()}
    if rfm:
        best = {t: max(auc[w][t] for w in names) for t in tasks}
        rfm_best = {t: max(rfm[w][t] for w in names) for t in tasks}
        ahead = [t for t in tasks if rfm_best[t] >= best[t]]
        lines.append(f"- **Activity alone** (RFM of the same windows, best window against LURM's best): RFM is at "
                     f"least level on {_of(len(ahead), len(tasks))} tasks"
                     + (": " + "; ".join(_versus("RFM", rfm_best[t], "LURM", best[t]) + f" ({t})" for t in ahead)
                        + ": there the window mostly tells how active the user is." if ahead else "."))
    same = {k: {t: m["auc"] for t, m in per.items()} for k, per in stage.get("same_length", {}).items()}
    lurm_short = next((k for k in same if k.startswith("LURM(")), None)
    others = [k for k in same if k != lurm_short]
    if lurm_short and others:
        tasks_same = [t for t in same[lurm_short] if all(t in same[k] for k in others)]
        ahead = [t for t in tasks_same if all(same[lurm_short][t] > same[k][t] for k in others)]
        best_other = {t: max(others, key=lambda k: same[k][t]) for t in tasks_same}
        lines.append(f"- **Same input {lurm_short[len('LURM'):]}** (Tables 3-4): {lurm_short} is above every sequence model "
                     f"({', '.join(others)}) on {_of(len(ahead), len(tasks_same))} tasks (the paper: on all)"
                     + ("; behind the best of them on " + "; ".join(
                         _versus(lurm_short, same[lurm_short][t], best_other[t], same[best_other[t]][t]) + f" ({t})"
                         for t in [t for t in tasks_same if t not in ahead][:3]) + "."
                        if len(ahead) < len(tasks_same) else "."))
    coverage = stage["users_with_behaviour"]
    lines.append("- **Coverage**: users with a behaviour in the window: "
                 + ", ".join(f"{w} {coverage[w]:.0%}" for w in names)
                 + "; the others get the empty-sequence encoding.")
    return "\n".join(lines)


def anchor_findings(stage: Mapping[str, Any]) -> str:
    """Notebook 07's findings (Fig. 5, §3.7) as Markdown, every number from ``07_anchor_tsne.json``.

    ``stage`` holds ``users``, ``anchors`` (M), ``knn_anchor_purity``, ``silhouette``,
    ``alpha_concentration`` (each ``{"initialised", "trained"}``), ``max_category_lift`` and
    ``top_topics`` (None without a ground truth). Wording follows each inequality.
    """
    M = stage["anchors"]
    purity, silhouette = stage["knn_anchor_purity"], stage["silhouette"]
    top_alpha = {k: v["max_alpha"] for k, v in stage["alpha_concentration"].items()}
    more = purity["trained"] > purity["initialised"]
    lines = [f"*Computed from `07_anchor_tsne.json`: {stage['users']} users x M = {M} anchors.*", "",
             f"- **The anchors {'specialise more' if more else 'do not specialise more'} with training**: 10-NN "
             f"anchor purity {_versus('initialised', purity['initialised'], 'trained', purity['trained'])} "
             f"(chance 1/M = {1 / M:.3f}).",
             f"- Silhouette of the anchor labels (cosine): "
             f"{_versus('initialised', silhouette['initialised'], 'trained', silhouette['trained'])}"
             + ("; near 0, since most of a point's position comes from its user." if abs(silhouette["trained"]) < 0.1
                else "."),
             f"- **alpha shares interests out {'more' if top_alpha['trained'] > top_alpha['initialised'] else 'less'} "
             f"decisively after training**: an interest's mean weight on its top anchor "
             f"{_versus('initialised', top_alpha['initialised'], 'trained', top_alpha['trained'])} "
             f"(uniform 1/M = {1 / M:.3f})."]
    category = stage["max_category_lift"]["trained"]
    if stage.get("top_topics"):
        topic = max(t["lift"] for tops in stage["top_topics"]["trained"] for t in tops)
        finer = topic > category
        lines.append(f"- **Anchors specialise in {'fine topics rather than categories' if finer else 'categories as much as in topics'}** "
                     f"(synthetic ground truth): largest lift of a topic {_versus('', topic, 'of a category', category).strip()}.")
    else:
        lines.append(f"- No anchor gives a category more than {category:.2f}x its overall share (trained).")
    return "\n".join(lines)


def _auc_of(rows: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, float]]:
    """``{row: {task: metrics}}`` -> ``{row: {task: AUC}}``."""
    return {row: {t: float(m["auc"]) for t, m in per.items()} for row, per in rows.items()}


def _row_against(auc: Mapping[str, Mapping[str, float]], row: str, reference: str,
                 groups: Mapping[str, Sequence[str]]) -> tuple[list[str], str]:
    """Tasks where ``row`` is below ``reference``, and the comparisons: every profile task, the
    widest gap of each other group."""
    tasks = [t for members in groups.values() for t in members]
    below = [t for t in tasks if auc[row][t] < auc[reference][t]]
    parts = []
    for group, members in groups.items():
        versus = {t: _versus(row, auc[row][t], reference, auc[reference][t]) for t in members}
        if group == "profile":
            parts.append(f"{group}: " + ", ".join(f"{t} {versus[t]}" for t in members))
        else:
            widest = max(members, key=lambda t: abs(auc[row][t] - auc[reference][t]))
            parts.append(f"{group} ({row} below on {_of(sum(t in below for t in members), len(members))}): "
                         f"{widest} {versus[widest]} (widest gap)")
    return below, "; ".join(parts)


def ablation_findings(stage: Mapping[str, Any]) -> str:
    """Notebook 08's findings (Table 5, Fig. 4, §3.6) as Markdown, every number from ``08_ablations.json``.

    Reads ``table5``, ``reference``, ``n_interests_sweep`` / ``n_interests_sweep_boi``,
    ``assignment``, ``boi_survival``, ``view_retrieval_top1``, ``retrieval_users``,
    ``signal_by_stage``, ``smen_loss_epoch``, ``task_groups`` and the sizes. Each claim is an
    inequality of this run's numbers and its wording follows the inequality's direction.
    """
    auc, ref = _auc_of(stage["table5"]), stage["reference"]
    tasks = list(auc["LURM"])
    groups = _by_group(tasks, stage["task_groups"])
    M, H = stage["anchors"], stage["hidden"]
    lines = [f"*Computed from `08_ablations.json`: {stage['dataset']}, D = {stage['n_interests']:,}, M = {M}, "
             f"H = {H}; the run's LURM trained {stage['run_epochs']} epochs, every retrained row and {ref} "
             f"{stage['ablation_epochs']}.*", ""]
    below, detail = _row_against(auc, "LURM", "BoI", groups)
    lossy = [t for t in below if t in groups.get("profile", [])]
    lines.append(f"- **BoI against LURM (Table 5)**: LURM is below raw BoI on {_of(len(below), len(tasks))} tasks"
                 + (f", so not the paper's \"almost lossless\" on {', '.join(lossy)}" if lossy else "")
                 + f". {detail}.")
    for key in ("LURM(monthly)", "LURM(yearly)"):
        if key in auc:
            worse, detail = _row_against(auc, key, ref, groups)
            lines.append(f"- **{key} against month + year ({ref})**: one scale is below on "
                         f"{_of(len(worse), len(tasks))} tasks, so multi-scale "
                         f"{'helps' if 2 * len(worse) > len(tasks) else 'does not help on most'} here "
                         f"(the paper: it helps). {detail}.")
    for key in (f"LURM(1anchor-{H})", f"LURM(1anchor-{M * H})"):
        if key in auc:
            worse, detail = _row_against(auc, key, ref, groups)
            lines.append(f"- **{key}**: below {ref} on {_of(len(worse), len(tasks))} tasks, so one anchor "
                         f"{'loses' if 2 * len(worse) > len(tasks) else 'does not lose on most'} here "
                         f"(the paper: it loses). {detail}.")
        else:
            lines.append(f"- {key} was not trained at this scale (`-p VARIANTS` adds it).")
    sweep, sweep_boi = _auc_of(stage["n_interests_sweep"]), _auc_of(stage["n_interests_sweep_boi"])
    if len(sweep) >= 2:
        lo, hi = min(sweep, key=int), max(sweep, key=int)
        rises = [t for t in tasks if sweep[hi][t] > sweep[lo][t]]
        rises_boi = [t for t in tasks if sweep_boi[hi][t] > sweep_boi[lo][t]]
        lines.append(f"- **Fig. 4, D from {int(lo):,} to {int(hi):,}**: LURM rises on {_of(len(rises), len(tasks))} "
                     f"tasks, raw b_T on {_of(len(rises_boi), len(tasks))}. " + "; ".join(
                         f"{t}: {_versus(f'LURM D={lo}', sweep[lo][t], f'D={hi}', sweep[hi][t])}, "
                         f"{_versus(f'b_T D={lo}', sweep_boi[lo][t], f'D={hi}', sweep_boi[hi][t])}"
                         for t in groups.get("profile", tasks[:2])) + ".")
    rows = _auc_of(stage.get("assignment") or {})
    lurm_rows = [r for r in rows if r.startswith("LURM")]
    if len(lurm_rows) == 2:
        a, b = lurm_rows
        gap = {t: abs(rows[a][t] - rows[b][t]) for t in tasks}
        t = max(gap, key=gap.get)
        lines.append(f"- **Hard against soft assignment**: the two LURM rows differ by at most "
                     f"{100 * gap[t]:.1f} AUC points ({t}: {_versus(a, rows[a][t], b, rows[b][t])}), "
                     f"{'within' if gap[t] < 0.01 else 'more than'} the paper's 1%.")
    r2, retrieval = stage["boi_survival"]["r2"], stage["view_retrieval_top1"]
    untrained = "SMEN (untrained)"
    lines.append(f"- **What survives of b_T** (R^2 of its top {stage['boi_survival']['n_components']} SVD components): "
                 f"{_versus('LURM', r2['LURM'], 'untrained', r2[untrained])}; "
                 + ", ".join(f"{k} {v:.3f}" for k, v in r2.items() if k not in ("LURM", untrained))
                 + f". Same-user view retrieval: {_versus('LURM', retrieval['LURM'], 'untrained', retrieval[untrained])} "
                 f"(chance {1 / stage['retrieval_users']:.4f}).")
    losses = stage["smen_loss_epoch"]
    lines.append(f"- The run's SMEN loss: {_versus('epoch 1', losses[0], f'epoch {len(losses)}', losses[-1])}"
                 + ("; still falling at the last epoch." if len(losses) > 1 and losses[-1] < losses[-2] else "."))
    records = [r for r in stage.get("signal_by_stage", []) if r["model"] in ("input", "LURM")]
    for task in dict.fromkeys(r["task"] for r in records):
        chain = [(r["stage"], r["auc"]) for r in records if r["task"] == task]  # b_T first, then network order
        stages = dict(chain)
        fall = stages["b_T"] - stages["R^"]  # from the input to the representation (eq. 7)
        per_period = stages["b_T"] - max(v for k, v in chain if k.startswith("r "))  # best r <scale>, eq. (5)
        inputs = [v for k, v in chain if k.startswith("mean b_t ")]  # the per-period inputs of eq. (4), averaged
        in_inputs = (f" ({100 * (stages['b_T'] - max(inputs)):.1f} already in the per-period inputs b_t of eq. (4) "
                     f"averaged, the best scale's)" if inputs else "")
        lines.append(f"- **Where the {task} signal goes** (linear probe): " + ", ".join(f"{k} {v:.3f}" for k, v in chain)
                     + (f"; of the fall from b_T to R^ ({100 * fall:.1f} points), {100 * per_period:.1f} are there "
                        f"already in the per-period outputs r (eq. 5), before any time aggregation{in_inputs}."
                        if fall > 0 else f"; {_versus('R^', stages['R^'], 'b_T', stages['b_T'])}: nothing is lost."))
    return "\n".join(lines)


# The orderings of Table 2 the paper reports (§3.5): among the self-supervised methods LURM >
# SUMN > PTUM, and among the supervised ones HAN > TextCNN.
PAPER_ORDERINGS = (("LURM", "SUMN", "PTUM"), ("HAN", "TextCNN"))


def ordering_findings(results: Mapping[str, Any], orderings: Sequence[Sequence[str]] = PAPER_ORDERINGS) -> str:
    """Whether the paper's orderings of methods (Table 2, §3.5) hold in ``results`` (results.json), as Markdown.

    For each ordering (best first) and each task that has all its methods: does the AUC fall
    along it, and is every step also clear of noise (the upper end of the lower method's
    bootstrap 95% interval below the lower end of the higher one's). An ordering with a
    method missing from the run is said to be untestable.
    """
    lines = []
    for order in orderings:
        title = " > ".join(order)
        tasks = [t for t, per in results["tasks"].items() if all(m in per for m in order)]
        if not tasks:
            lines.append(f"- **{title}**: not testable here (a method is missing from this run).")
            continue
        holds, clear, flips = [], [], []
        for task in tasks:
            per = results["tasks"][task]
            steps = list(zip(order, order[1:]))  # (higher, lower) pairs
            if all(per[a]["auc"] > per[b]["auc"] for a, b in steps):
                holds.append(task)
                if all(per[a]["auc_ci95"][0] > per[b]["auc_ci95"][1] for a, b in steps):
                    clear.append(task)
            else:
                a, b = next((a, b) for a, b in steps if per[a]["auc"] <= per[b]["auc"])
                flips.append(f"{task}: {_versus(a, per[a]['auc'], b, per[b]['auc'])}")
        lines.append(f"- **{title}** holds on {_of(len(holds), len(tasks))} tasks by AUC, clear of the 95% "
                     f"intervals on {_of(len(clear), len(tasks))}"
                     + (f"; first break: {'; '.join(flips[:3])}." if flips else "."))
    return "\n".join(lines)
