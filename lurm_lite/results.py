"""``results.json``, the machine-readable result of a run, and its tables (Tables 2-5 of the paper).

The format is :data:`SCHEMA`, a declarative description that :func:`check` walks
(:func:`validate_results`, :func:`load_results`): the first field that breaks it is named by its
path, e.g. ``results.json: tasks['age']['LURM']['auc'] must be a fraction in [0, 1], got 1.2``.

Every table of results (``results.md`` beside ``results.json``, the README block, notebooks 05
and 08) is :func:`results_table`: methods as rows, tasks as columns, ``AUC/ACC`` in % with 2
decimals, the best per task in bold, ``-`` where a method has no result; :func:`markdown_table`
writes it as Markdown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from lurm_lite.io import atomic_path, save_json

# --- the schema -------------------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    """A JSON number (a bool is not one) in ``[lo, hi]`` (None: unbounded); ``integer``: an int."""

    what: str
    lo: float | None = None
    hi: float | None = None
    integer: bool = False


@dataclass(frozen=True)
class Text:
    """A string; ``nonempty``: at least one character."""

    what: str
    nonempty: bool = False


@dataclass(frozen=True)
class ListOf:
    """A list of exactly ``length`` ``item``s (None: any number)."""

    item: Spec
    length: int | None
    what: str


@dataclass(frozen=True)
class MapOf:
    """An object with any keys, every value a ``value``."""

    value: Spec
    what: str


@dataclass(frozen=True)
class Disjoint:
    """No key of the object in field ``name`` may be a key of the object in field ``other``."""

    name: str
    other: str
    what: str


@dataclass(frozen=True)
class Record:
    """An object with exactly ``fields`` (those in ``optional`` may be absent) and its ``rules``."""

    fields: Mapping[str, Spec]
    what: str
    optional: frozenset[str] = frozenset()
    rules: tuple[Disjoint, ...] = ()


Spec = Number | Text | ListOf | MapOf | Record

SUPERVISED_MARK = "†"  # after a supervised method's name in every table

FRACTION = Number("a fraction in [0, 1]", lo=0.0, hi=1.0)
METRICS = Record({"auc": FRACTION, "acc": FRACTION,
                  "auc_ci95": ListOf(Number("a number"), 2, "a list [lo, hi] of two numbers"),
                  "n_test": Number("a positive integer", lo=1, integer=True)},
                 "an object {auc, acc, auc_ci95, n_test}")
SCHEMA = Record(
    {"dataset": Text("a string"),
     "split_seed": Number("an integer", integer=True),
     "tasks": MapOf(MapOf(METRICS, "an object {method: metrics}"), "an object {task: {method: metrics}}"),
     "skipped": MapOf(Text("a non-empty reason", nonempty=True), "an object {task: reason}"),
     "supervised": ListOf(Text("a method name", nonempty=True), None, "a list of method names")},
    "an object {dataset, split_seed, tasks, skipped, supervised}",
    optional=frozenset({"skipped", "supervised"}),  # absent in files written before they existed
    rules=(Disjoint("skipped", "tasks", "names a task that also has results in 'tasks'"),),
)


def _field_path(path: Sequence[str | int]) -> str:
    """``("tasks", "age", "LURM")`` -> ``tasks['age']['LURM']``; ``()`` -> ``the top level``."""
    if not path:
        return "the top level"
    return str(path[0]) + "".join(f"[{key!r}]" for key in path[1:])


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check(spec: Spec, value: Any, source: str, path: tuple[str | int, ...] = ()) -> None:
    """Walk ``spec`` over ``value``; raise ValueError ``"{source}: {field path} {problem}"`` at the first offence.

    Objects are checked key by key in the spec's order (missing keys, then keys the spec does
    not name, then each value), maps and lists in the document's order.
    """
    def fail(problem: str, at: tuple[str | int, ...] = path) -> None:
        raise ValueError(f"{source}: {_field_path(at)} {problem}")

    if isinstance(spec, Number):
        if (isinstance(value, bool) or not isinstance(value, int if spec.integer else (int, float))
                or (spec.lo is not None and not value >= spec.lo) or (spec.hi is not None and not value <= spec.hi)):
            fail(f"must be {spec.what}, got {_short(value)}")
    elif isinstance(spec, Text):
        if not isinstance(value, str) or (spec.nonempty and not value):
            fail(f"must be {spec.what}, got {_short(value)}")
    elif isinstance(spec, ListOf):
        if not isinstance(value, list) or (spec.length is not None and len(value) != spec.length):
            fail(f"must be {spec.what}, got {_short(value)}")
        for i, item in enumerate(value):
            check(spec.item, item, source, path + (i,))
    elif isinstance(spec, MapOf):
        if not isinstance(value, dict):
            fail(f"must be {spec.what}, got {_short(value)}")
        for key, item in value.items():
            check(spec.value, item, source, path + (key,))
    elif isinstance(spec, Record):
        if not isinstance(value, dict):
            fail(f"must be {spec.what}, got {_short(value)}")
        for key in spec.fields:
            if key not in value and key not in spec.optional:
                fail("is missing", path + (key,))
        for key in value:
            if key not in spec.fields:
                fail(f"is not a field (expected {', '.join(spec.fields)})", path + (key,))
        for key, sub in spec.fields.items():
            if key in value:
                check(sub, value[key], source, path + (key,))
        for rule in spec.rules:
            for key in value.get(rule.name, {}):
                if key in value.get(rule.other, {}):
                    fail(rule.what, path + (rule.name, key))
    else:
        raise TypeError(f"not a schema node: {spec!r}")


def validate_results(obj: Any, source: str = "results.json") -> None:
    """Check ``obj`` against :data:`SCHEMA`; ValueError naming ``source`` and the first offending field.

    ``{"dataset": str, "split_seed": int, "tasks": {TASK: {METHOD: {"auc", "acc", "auc_ci95":
    [lo, hi], "n_test"}}}, "skipped": {TASK: reason}}``: exactly these keys, auc and acc in
    [0, 1], n_test a positive int (bools are not numbers); ``skipped`` may be absent, names
    tasks that are not in ``tasks``, each with a non-empty reason.
    """
    check(SCHEMA, obj, source)


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate a results.json file; a broken file fails naming ``path`` and the field."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    validate_results(obj, str(path))
    return obj


# --- writing ----------------------------------------------------------------------------


def _by_task(per_method: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """``{method: {task: metrics}}`` -> (``{task: {method: metrics}}``, ``{task: reason}``).

    The skipped tasks are those of ``TaskResults.skipped`` of any method, first reason kept.
    """
    tasks: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for method, per_task in per_method.items():
        for task, metrics in per_task.items():
            tasks.setdefault(task, {})[method] = metrics
        for task, reason in getattr(per_task, "skipped", {}).items():
            skipped.setdefault(task, reason)
    return tasks, skipped


def collect_results(dataset_name: str, split_seed: int, per_method: Mapping[str, Mapping[str, Mapping[str, Any]]],
                    supervised: Sequence[str] = ()) -> dict[str, Any]:
    """Pivot ``{method: evaluate(...)}`` into the results.json object (tasks, then methods).

    ``supervised`` names the methods trained end to end per task (TextCNN, HAN, §3.3); the
    others are frozen representations scored by the same probe. Metric keys beyond the four
    of the schema (e.g. a supervised model's training time) are left out.
    """
    tasks, skipped = _by_task(per_method)
    tasks = {task: {method: {"auc": float(m["auc"]), "acc": float(m["acc"]),
                             "auc_ci95": [float(v) for v in m["auc_ci95"]], "n_test": int(m["n_test"])}
                    for method, m in methods.items()}
             for task, methods in tasks.items()}
    return {"dataset": dataset_name, "split_seed": int(split_seed), "tasks": tasks, "skipped": skipped,
            "supervised": [method for method in per_method if method in set(supervised)]}


def save_results(results: Mapping[str, Any], json_path: str | Path) -> tuple[Path, Path]:
    """Validate and write ``results.json`` and, beside it, ``results.md`` (both atomically).

    ``results.md`` is :func:`results_markdown` of the object, so it is the table any reader
    of ``results.json`` renders (the README block does).
    """
    validate_results(results)
    json_path = Path(json_path)
    save_json(json_path, results)
    markdown_path = json_path.with_suffix(".md")
    with atomic_path(markdown_path) as tmp:
        tmp.write_text(results_markdown(results))
    return json_path, markdown_path


# --- the table --------------------------------------------------------------------------


def _percent(value: float, best: float) -> str:
    text = f"{100 * value:.2f}"
    return f"**{text}**" if round(100 * value, 2) == round(100 * best, 2) else text


def results_table(results: Mapping[str, Any]) -> pd.DataFrame:
    """The results as a methods x tasks table of Markdown cells, in the form of Tables 2-5.

    Rows in order of first appearance, columns in task order, index named ``Method``. A cell
    is ``AUC/ACC`` in % with 2 decimals; per task the best AUC and the best ACC are bold
    (``**x**``; ties: all of them); a method without a result shows ``-``.
    ``frame.attrs["skipped"]`` holds ``results["skipped"]`` ({task: reason}, may be empty).
    A method of ``results["supervised"]`` is labelled ``"<method> †"`` (trained per task).
    """
    by_task = results["tasks"]
    methods = list(dict.fromkeys(m for per_method in by_task.values() for m in per_method))
    columns = {}
    for task, per_method in by_task.items():
        best = {key: max(m[key] for m in per_method.values()) for key in ("auc", "acc")}
        columns[task] = ["-" if method not in per_method else
                         f"{_percent(per_method[method]['auc'], best['auc'])}/"
                         f"{_percent(per_method[method]['acc'], best['acc'])}" for method in methods]
    supervised = set(results.get("supervised", ()))
    labels = [f"{method} {SUPERVISED_MARK}" if method in supervised else method for method in methods]
    frame = pd.DataFrame(columns, index=pd.Index(labels, name="Method"), columns=list(by_task), dtype=object)
    frame.attrs["skipped"] = dict(results.get("skipped", {}))
    return frame


def table_frame(per_method: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> pd.DataFrame:
    """:func:`results_table` of ``{method: {task: metrics}}`` (``evaluate``'s results per method)."""
    tasks, skipped = _by_task(per_method)
    return results_table({"tasks": tasks, "skipped": skipped})


def markdown_table(frame: pd.DataFrame) -> str:
    """A :func:`results_table` as a Markdown pipe table, its skipped tasks listed below it."""
    if len(frame.columns):
        lines = [f"| {frame.index.name or ''} | " + " | ".join(map(str, frame.columns)) + " |",
                 "| --- |" + " --- |" * len(frame.columns)]
        lines += [f"| {method} | " + " | ".join(row) + " |" for method, row in zip(frame.index, frame.to_numpy())]
    else:
        lines = ["No task could be evaluated."]
    skipped = frame.attrs.get("skipped")
    if skipped:
        lines += ["", "Skipped tasks: " + "; ".join(f"{task}: {reason}" for task, reason in skipped.items()) + "."]
    return "\n".join(lines) + "\n"


def results_markdown(results: Mapping[str, Any]) -> str:
    """``results.md``: a caption (dataset, split seed) and the :func:`markdown_table` of the results."""
    caption = (f"Results on {results['dataset']} (AUC(%)/ACC(%), split seed {results['split_seed']}); "
               "the best score per task is bold.")
    if results.get("supervised"):
        caption += (f" {SUPERVISED_MARK}: trained end to end for each task (supervised, §3.3); every other "
                    "row is a frozen representation scored by the same MLP probe.")
    return caption + "\n\n" + markdown_table(results_table(results))
