"""``results.json``, the machine-readable result of a run, and its tables (Tables 2-5 of the paper).

Methods as rows, tasks as columns, ``AUC/ACC`` in %, best in bold, written as ``results.md``
beside ``results.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from lurm_lite.io import atomic_path, save_json



def collect_results(dataset_name: str, split_seed: int,
                    per_method: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Pivot ``{method: evaluate(...)}`` into the results.json object (tasks, then methods).

    The tasks that :func:`evaluate` skipped (``TaskResults.skipped`` of any method) go to
    ``"skipped": {task: reason}``.
    """
    tasks: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for method, per_task in per_method.items():
        for task, metrics in per_task.items():
            tasks.setdefault(task, {})[method] = {
                "auc": float(metrics["auc"]), "acc": float(metrics["acc"]),
                "auc_ci95": [float(v) for v in metrics["auc_ci95"]], "n_test": int(metrics["n_test"]),
            }
        for task, reason in getattr(per_task, "skipped", {}).items():
            skipped.setdefault(task, reason)
    return {"dataset": dataset_name, "split_seed": int(split_seed), "tasks": tasks, "skipped": skipped}


def validate_results(obj: Any) -> None:
    """Check the results.json schema; raise ValueError naming the first offending field.

    ``{"dataset": str, "split_seed": int, "tasks": {TASK: {METHOD: {"auc": float,
    "acc": float, "auc_ci95": [lo, hi], "n_test": int}}}, "skipped": {TASK: reason}}`` with
    auc and acc in [0, 1]; ``skipped`` (absent in files written before it existed) names
    tasks that are not in ``tasks``, each with a non-empty reason.
    """
    def fail(where: str, what: str) -> None:
        raise ValueError(f"results.json: {where} {what}")

    if not isinstance(obj, dict):
        fail("top level", f"must be an object, got {type(obj).__name__}")
    for key in ("dataset", "split_seed", "tasks"):
        if key not in obj:
            fail(f"key {key!r}", "is missing")
    if not isinstance(obj["dataset"], str):
        fail("'dataset'", f"must be a string, got {obj['dataset']!r}")
    if isinstance(obj["split_seed"], bool) or not isinstance(obj["split_seed"], int):
        fail("'split_seed'", f"must be an integer, got {obj['split_seed']!r}")
    if not isinstance(obj["tasks"], dict):
        fail("'tasks'", "must be an object {task: {method: metrics}}")
    for task, methods in obj["tasks"].items():
        if not isinstance(methods, dict):
            fail(f"tasks[{task!r}]", "must be an object {method: metrics}")
        for method, m in methods.items():
            where = f"tasks[{task!r}][{method!r}]"
            if not isinstance(m, dict):
                fail(where, "must be an object")
            if set(m) != {"auc", "acc", "auc_ci95", "n_test"}:
                fail(where, f"must have exactly auc, acc, auc_ci95, n_test; has {sorted(m)}")
            for key in ("auc", "acc"):
                value = m[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                    fail(f"{where}[{key!r}]", f"must be a fraction in [0, 1], got {value!r}")
            ci = m["auc_ci95"]
            if not (isinstance(ci, list) and len(ci) == 2
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ci)):
                fail(f"{where}['auc_ci95']", f"must be a list [lo, hi] of two numbers, got {ci!r}")
            if isinstance(m["n_test"], bool) or not isinstance(m["n_test"], int) or m["n_test"] < 1:
                fail(f"{where}['n_test']", f"must be a positive integer, got {m['n_test']!r}")
    skipped = obj.get("skipped", {})
    if not isinstance(skipped, dict):
        fail("'skipped'", "must be an object {task: reason}")
    for task, reason in skipped.items():
        if not isinstance(reason, str) or not reason:
            fail(f"skipped[{task!r}]", f"must be a non-empty reason, got {reason!r}")
        if task in obj["tasks"]:
            fail(f"skipped[{task!r}]", "names a task that also has results in 'tasks'")


def results_markdown(results: Mapping[str, Any], methods: Sequence[str] | None = None) -> str:
    """The results as a Markdown table in the form of Tables 2-5.

    Methods are rows (in ``methods`` order, default: first appearance), tasks are columns,
    cells are ``AUC/ACC`` in % with 2 decimals; per task the best AUC and the best ACC are
    bold (ties: all of them). A method without a result for a task shows ``-``. Skipped
    tasks are listed below the table with their reasons.
    """
    tasks = list(results["tasks"])
    if methods is None:
        methods = list(dict.fromkeys(m for task in tasks for m in results["tasks"][task]))
    lines = [f"Results on {results['dataset']} (AUC(%)/ACC(%), split seed {results['split_seed']}); "
             "the best score per task is bold.", "",
             "| Method | " + " | ".join(tasks) + " |", "| --- |" + " --- |" * len(tasks)]

    def cell(value: float, best: float) -> str:
        text = f"{100 * value:.2f}"
        return f"**{text}**" if round(100 * value, 2) == round(100 * best, 2) else text

    best = {task: {key: max(m[key] for m in results["tasks"][task].values()) for key in ("auc", "acc")}
            for task in tasks}
    for method in methods:
        cells = []
        for task in tasks:
            m = results["tasks"][task].get(method)
            cells.append("-" if m is None else
                         f"{cell(m['auc'], best[task]['auc'])}/{cell(m['acc'], best[task]['acc'])}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if not tasks:
        lines[2:] = ["No task could be evaluated."]
    skipped = results.get("skipped", {})
    if skipped:
        lines += ["", "Skipped tasks: " + "; ".join(f"{task}: {reason}" for task, reason in skipped.items()) + "."]
    return "\n".join(lines) + "\n"


def save_results(results: Mapping[str, Any], json_path: str | Path,
                 methods: Sequence[str] | None = None) -> tuple[Path, Path]:
    """Validate and write ``results.json`` and, beside it, ``results.md`` (both atomically)."""
    validate_results(results)
    json_path = Path(json_path)
    save_json(json_path, results)
    markdown_path = json_path.with_suffix(".md")
    with atomic_path(markdown_path) as tmp:
        tmp.write_text(results_markdown(results, methods))
    return json_path, markdown_path

def table_frame(per_method: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> pd.DataFrame:
    """``{method: {task: metrics}}`` -> Table 5's layout: methods x tasks, cells "AUC/ACC" in %."""
    tasks = list(dict.fromkeys(t for per_task in per_method.values() for t in per_task))
    cells = {method: {task: (f"{100 * m[task]['auc']:.2f}/{100 * m[task]['acc']:.2f}" if task in m else "")
                      for task in tasks} for method, m in per_method.items()}
    return pd.DataFrame.from_dict(cells, orient="index", columns=tasks)
