"""Evaluate a run folder on its dataset's downstream tasks: the Tables 2-5 comparison (§3.2-3.5).

Reads the artifacts of the earlier notebooks from the run folder (names from
:class:`lurm_lite.runs.RunPaths`), computes the competitor representations itself
(:mod:`lurm_lite.baselines`; PTUM and SUMN pre-trained once per run folder, checkpointed,
:mod:`lurm_lite.competitors`), trains one frozen-representation probe per method and task
(:mod:`lurm_lite.downstream`), trains the supervised TextCNN and HAN per task on the same
split, and writes ``results.json`` and ``results.md``.

A method whose artifacts are missing is skipped with a warning that names the file and the
notebook that writes it; the others are still evaluated.

    python -m lurm_lite.evaluate --run-dir runs/demo --dataset runs/demo/dataset [--seed 0]
"""

from __future__ import annotations

import argparse
import functools
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from data_prep.schema import Dataset, load_dataset
from lurm_lite import baselines, downstream, io, results
from lurm_lite.boi import load_boi
from lurm_lite.competitors import pretraining, ptum, sequences, sumn, supervised
from lurm_lite.config import CompetitorConfig, DownstreamConfig, for_scale
from lurm_lite.runs import MissingPrerequisite, RunPaths
from lurm_lite.smen import load_smen
from lurm_lite.user_training import user_reps_of

# Rows of the results table, in the paper's order (Table 2: TF-IDF, Doc2Vec, TextCNN, HAN, PTUM,
# SUMN, then LURM's rows). RFM (not in the paper) is the activity-only floor: a task it answers
# well is about activity, not preference; MeanItemEmb and BoI are LURM's own inputs.
METHODS = ("TF-IDF", "Doc2Vec", "TextCNN", "HAN", "PTUM", "SUMN", "RFM", "MeanItemEmb", "BoI", "LURM(2M)", "LURM")


@dataclass
class _Inputs:
    """What the representation builders may read: the run's artifacts and the dataset."""

    run: RunPaths
    dataset: Dataset
    history: pd.DataFrame  # history-window behaviours, sorted by (user_id, ts)
    user_ids: np.ndarray  # (n,) ascending ids of the users with history: the rows to build
    config: DownstreamConfig
    competitors: CompetitorConfig
    seed: int
    device: str | torch.device
    timings: dict[str, dict[str, Any]]  # {method: {part: seconds}}, filled as methods run
    background: dict[str, downstream.InBackground]  # {method: its representation, being built in a worker}

    @functools.cached_property
    def sequences(self) -> tuple[sequences.BehaviourSequences, sequences.TitleTokens]:
        """The L most recent behaviours of every user and the items' titles as word ids (§3.4)."""
        titles = sequences.run_title_tokens(self.run, self.dataset.items, self.competitors)
        return sequences.recent_behaviours(self.history, self.user_ids, self.competitors.sequence_length), titles


def _tfidf(inputs: _Inputs) -> sp.csr_matrix:
    return baselines.tfidf_features(inputs.history, inputs.dataset.items, inputs.user_ids,
                                    inputs.config.tfidf_max_features)


def _doc2vec_args(inputs: _Inputs) -> tuple:
    return (inputs.history, inputs.dataset.items, inputs.user_ids, inputs.config.doc2vec_dim,
            inputs.config.doc2vec_epochs, inputs.seed)


def _doc2vec(inputs: _Inputs) -> np.ndarray:
    if "Doc2Vec" in inputs.background:  # trained in a worker process meanwhile (evaluate_run)
        vectors, seconds = inputs.background.pop("Doc2Vec").result()
        inputs.timings["Doc2Vec"] = {"train_seconds": round(seconds, 1)}
        return vectors
    return baselines.doc2vec_features(*_doc2vec_args(inputs))


def _timed(function: Callable[..., Any], *args) -> tuple[Any, float]:
    """(function(*args), the seconds it took): a background job's result and its own time."""
    start = time.perf_counter()
    return function(*args), time.perf_counter() - start


def _rfm(inputs: _Inputs) -> np.ndarray:
    return baselines.rfm_features(inputs.history, inputs.user_ids, inputs.dataset.history_end_ts)


def _mean_item_embedding(inputs: _Inputs) -> np.ndarray:
    run = inputs.run
    run.require(run.item_embeddings, notebook="02_item_embedding")
    return baselines.mean_item_embedding(inputs.history, np.load(run.item_embeddings), inputs.user_ids)


def _boi(inputs: _Inputs) -> sp.csr_matrix:
    run = inputs.run
    run.require(run.item_interest, run.centroids, notebook="03_interests_boi")
    n_interests = np.load(run.centroids, mmap_mode="r").shape[0]  # D
    return baselines.boi_features(inputs.history, np.load(run.item_interest), n_interests, inputs.user_ids)


def _lurm_2m(inputs: _Inputs) -> np.ndarray:
    run = inputs.run
    run.require(run.smen, notebook="04_smen")
    device = io.device(inputs.device)
    model = load_smen(run.smen, device)
    run.require(*(run.boi(scale) for scale in model.scales), notebook="03_interests_boi")
    boi = {scale: load_boi(run.boi(scale)) for scale in model.scales}
    return baselines.lurm_last_months(model, boi, inputs.user_ids, inputs.dataset.history_end_ts, device, months=2)


def _lurm(inputs: _Inputs) -> np.ndarray:
    run, user_ids = inputs.run, inputs.user_ids
    run.require(run.user_reps, notebook="04_smen")
    return user_reps_of(run.user_reps, user_ids)


# PTUM and SUMN: pre-trained by their own loss, then encoded, saved and loaded alike
# (``competitors.pretraining.encode / save / load``).
PRETRAINED = {"PTUM": (ptum.PTUM, ptum.pretrain_ptum), "SUMN": (sumn.SUMN, sumn.pretrain_sumn)}
SUPERVISED = tuple(supervised.SUPERVISED_MODELS)  # TextCNN, HAN: trained end to end per task (§3.3)


def _self_supervised(name: str) -> Callable[[_Inputs], np.ndarray]:
    """PTUM or SUMN: pre-trained once per run folder (resumed from its checkpoint, §3.3), then frozen."""
    _, pretrain = PRETRAINED[name]

    def representation(inputs: _Inputs) -> np.ndarray:
        seqs, titles = inputs.sequences
        device = io.device(inputs.device)
        model, history = pretrain(seqs, titles, inputs.competitors, device, inputs.seed,
                                  checkpoint_path=inputs.run.pretrain_checkpoint(name))
        pretraining.save(inputs.run.pretrained(name), model)
        inputs.timings[name] = {"pretrain_seconds": round(history["seconds"], 1), "epochs": len(history["epoch"])}
        return pretraining.encode(model, seqs, titles, device)
    return representation


REPRESENTATIONS: dict[str, Callable[[_Inputs], downstream.Features]] = {
    "TF-IDF": _tfidf, "Doc2Vec": _doc2vec, "PTUM": _self_supervised("PTUM"), "SUMN": _self_supervised("SUMN"),
    "RFM": _rfm, "MeanItemEmb": _mean_item_embedding, "BoI": _boi, "LURM(2M)": _lurm_2m, "LURM": _lurm,
}


def _evaluation_order(methods: Sequence[str], background: Mapping[str, Any]) -> list[str]:
    """The order the methods are evaluated in: ``methods``', except that a representation
    built in the background (Doc2Vec) is read after the supervised competitors: their
    trainings, in the pool's other workers, fill the cores while it trains. The results
    keep ``methods``' order."""
    rest = [m for m in methods if m not in background]
    last_supervised = max((rest.index(m) for m in SUPERVISED if m in rest), default=-1)
    return rest[:last_supervised + 1] + [m for m in methods if m in background] + rest[last_supervised + 1:]


def _train_per_task(name: str, inputs: _Inputs, labels: dict[str, tuple[np.ndarray, np.ndarray]]
                    ) -> downstream.TaskResults:
    """TextCNN or HAN trained end to end on every task, on the probe's split (§3.3-3.4)."""
    seqs, titles = inputs.sequences
    per_task, seconds = supervised.train_on_tasks(name, seqs, titles, labels, inputs.competitors, inputs.config,
                                                  inputs.seed, device=inputs.device)
    timings = inputs.timings.setdefault(name, {})
    for task, task_seconds in seconds.items():
        timings[f"train_seconds {task}"] = round(task_seconds, 1)
    return per_task


def evaluate_run(run_dir: str | Path, dataset_dir: str | Path, methods: Sequence[str] | None = None,
                 config: DownstreamConfig | None = None, seed: int = 0, device: str | torch.device = "auto",
                 progress: bool = True, competitors: CompetitorConfig | None = None
                 ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Evaluate every method on every task of the dataset and write the results (§3.2-3.5).

    Args:
        run_dir: the run folder (``RunPaths``): ``item_embeddings.npy`` (MeanItemEmb),
            ``item_interest.npy`` and ``centroids.npy`` (BoI), ``smen.pt`` and
            ``boi_<scale>.npz`` (LURM(2M)), ``user_reps.npz`` (LURM), ``text.json`` (TextCNN,
            HAN, PTUM, SUMN; PTUM and SUMN write ``ptum.pt`` / ``sumn.pt`` and their
            checkpoints there). TF-IDF, Doc2Vec and RFM need only the dataset. The probe
            results are kept in its ``probes/`` (``downstream.evaluate``'s ``cache_dir``), where
            notebooks 06 and 08 find those of the representations they probe again.
        dataset_dir: the dataset contract folder.
        methods: names from :data:`METHODS` (None: all).
        config: probe and baseline settings (None: ``DownstreamConfig()``).
        seed: the split seed (the same split for every method), and the seed of the probe,
            the bootstrap and Doc2Vec.
        device: where SMEN encodes for LURM(2M) and the sequence competitors train; the
            probe always runs on the CPU.
        progress: print one line per method.
        competitors: sizes of TextCNN, HAN, PTUM, SUMN (None: ``CompetitorConfig()``).

    On a CPU with several cores (``downstream.probe_workers``), Doc2Vec, which gensim trains on
    one thread to stay deterministic, trains in a worker process of the probes' pool from the
    start, and its row is read after TextCNN's and HAN's, whose per-task trainings fill the
    other workers meanwhile: the same vectors to the bit (a test), 183 s instead of 218 s for
    TF-IDF, Doc2Vec, TextCNN and HAN on the demo's run folder.

    Returns:
        The results.json object, also written to ``RunPaths(run_dir).results`` with
        ``results.md`` beside it (methods whose artifacts are missing are skipped with a
        warning), and the seconds each method took: ``{method: {"seconds": total, ...}}``
        with PTUM's and SUMN's ``pretrain_seconds`` and the supervised models'
        ``train_seconds <task>``.
    """
    run = RunPaths(run_dir)
    config = config or DownstreamConfig()
    methods = list(METHODS if methods is None else methods)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"Unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}.")
    dataset = load_dataset(dataset_dir)
    history = dataset.history()
    inputs = _Inputs(run, dataset, history, np.unique(history["user_id"].to_numpy()).astype(np.int64), config,
                     competitors or CompetitorConfig(), seed, device, timings={}, background={})
    labels = downstream.all_task_labels(dataset)
    workers = downstream.probe_workers(config, "cpu", len(labels))
    if "Doc2Vec" in methods and workers > 1 and io.device(device).type == "cpu":
        inputs.background["Doc2Vec"] = downstream.InBackground(
            _timed, (baselines.doc2vec_features, *_doc2vec_args(inputs)), workers)
    per_method = {}
    for method in _evaluation_order(methods, inputs.background):
        start = time.perf_counter()
        in_background = method in inputs.background
        try:
            if method in SUPERVISED:
                per_method[method], size = _train_per_task(method, inputs, labels), "trained per task"
            else:
                X = REPRESENTATIONS[method](inputs)
                if in_background:  # its time is its own training in the worker, then the probe from here
                    start = time.perf_counter() - inputs.timings[method]["train_seconds"]
                per_method[method] = downstream.evaluate(X, inputs.user_ids, dataset, config, seed, device="cpu",
                                                         labels=labels, cache_dir=run.probes)
                size = f"{X.shape[1]} dims"
        except MissingPrerequisite as missing:
            warnings.warn(f"Skipping method {method}: {missing}", stacklevel=2)
            continue
        seconds = time.perf_counter() - start
        inputs.timings.setdefault(method, {})["seconds"] = round(seconds, 1)
        if progress:
            print(f"{method}: {size}, {len(per_method[method])} tasks, {seconds:.1f} s"
                  + (" (trained in a worker process beside the methods above)" if in_background else ""))
    per_method = {method: per_method[method] for method in methods if method in per_method}  # the table's order
    collected = results.collect_results(dataset.name, seed, per_method, supervised=SUPERVISED)
    results.save_results(collected, run.results)
    return collected, inputs.timings


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lurm_lite.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, help="run folder with the earlier notebooks' artifacts")
    parser.add_argument("--dataset", required=True, help="dataset contract folder")
    parser.add_argument("--seed", type=int, default=0, help="split, probe and bootstrap seed")
    parser.add_argument("--scale", default="default", help="tiny | default | paper: probe and baseline settings")
    parser.add_argument("--methods", nargs="+", choices=METHODS, help="methods to evaluate (default: all)")
    parser.add_argument("--device", default="auto", help="device of the SMEN encoding for LURM(2M)")
    args = parser.parse_args(argv)
    scale = for_scale(args.scale)
    evaluate_run(args.run_dir, args.dataset, args.methods, scale.downstream, args.seed, args.device,
                 competitors=scale.competitors)
    print(f"wrote {RunPaths(args.run_dir).results} and results.md")


if __name__ == "__main__":
    main()
