"""The main job: the notebook chain executed by papermill into one run folder.

``python -m lurm_lite run --dataset synthetic --scale default --run-dir runs/demo`` executes
``notebooks/01_data.ipynb`` ... in order, each with kernel ``python3`` and working
directory ``notebooks/``, and keeps one executed copy of each in ``RUN_DIR/notebooks/``.

Rules a user can rely on:

- A ``-p NAME VALUE`` whose NAME no notebook of the chain declares in its ``parameters``
  cell is refused before anything runs (papermill alone would only warn), and so is a
  value of the wrong type (``-p EPOCHS abc``; see :func:`parameter_types`). Each notebook
  receives only the parameters it declares.
- Every stage that ran leaves a stamp, ``RUN_DIR/notebooks/NN_name.stamp.json``: its
  parameters, the digests of all earlier stages of the chain when it ran (a hash chain),
  the SHA-256 of every file it wrote, and for the stage that takes ``DATASET`` the hashes
  of the dataset folder's files. A stage digest covers its inputs' digests and its
  outputs' current content, so it changes whenever anything upstream changed.
- A stage is skipped when its results JSON exists, its parameters are the same, no
  earlier stage's digest changed, its dataset files and its own outputs are unchanged;
  otherwise it runs, and the log says why. This holds for ``--only`` too: rerunning 03
  alone with other parameters makes a later ``--only 04`` run 04 again. ``--force`` reruns
  every selected stage. A killed run resumes at the first incomplete stage (artifacts are
  written atomically and a stage's stamp is removed before it runs).
- A stage's outputs are the files of the run folder it created or modified (the
  executed notebooks and ``chain.json`` aside); each file has one writer. A stage that
  reruns and writes the same bytes again leaves the stages after it skipped.
- Stamps record paths relative to the run folder (``RUN_DIR`` is ``"."``), so a copied
  run folder skips its complete stages (files whose size or mtime differ from the stamp
  are hashed again, and the stamp then records the new mtimes).
- One run at a time per run folder (:func:`lurm_lite.runs.run_folder_lock`); a second
  one stops at once, naming the holder. A run folder that is not writable is still
  checked: a run with nothing to do succeeds; one that must run a stage stops with a
  message.
- ``--dataset synthetic`` or ``movielens`` prepares that dataset inside the run folder
  (notebook 01 calls :func:`prepare_dataset`); any other value is a dataset folder path.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import resource
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any

from lurm_lite import runs
from lurm_lite.io import load_json, save_json
from lurm_lite.runs import RunPaths

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
BUILTIN_DATASETS = ("synthetic", "movielens")


def _quiet_kernel_manager():
    """A papermill kernel manager that leaves nothing misleading in the run log.

    - Transport: local IPC sockets, not TCP. Over TCP every kernel logs "Kernel is running
      over TCP without encryption" (ipykernel); IPC sockets are files in Jupyter's runtime
      directory, readable by this user only, so there is nothing to warn about.
    - Shutdown: jupyter_client interrupts a kernel before asking it to shut down, with a
      SIGINT to the kernel's whole process group, so each successful notebook logged
      "KeyboardInterrupt caught in kernel", and the probe's worker processes
      (``downstream.probe_workers``) printed KeyboardInterrupt tracebacks. The kernel is
      idle when the chain shuts it down; it is asked to shut down without the interrupt.
      (``_async_interrupt_kernel`` is jupyter_client's own hook, used for shutdown only;
      tests/test_chain.py checks that a chain's log holds neither message.)
    """
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport = "ipc"

        async def _async_interrupt_kernel(self) -> None:
            if not self.shutting_down:  # a real interrupt (a user's) still goes through
                await super()._async_interrupt_kernel()

    return QuietKernelManager


class ChainError(ValueError):
    """A bad request to the chain runner (unknown parameter, missing notebook, ...)."""


class StageFailed(RuntimeError):
    """A notebook of the chain raised; the message names it and its executed copy."""


def chain_notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The chain's notebooks ``NN_*.ipynb`` in order."""
    notebooks = sorted(notebook_dir.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise ChainError(f"No notebooks found in {notebook_dir}")
    return notebooks


def declared_parameters(notebook: Path) -> dict[str, Any]:
    """Names and default values of the ``parameters`` cell of ``notebook``."""
    import papermill

    return {name: spec["default"] for name, spec in papermill.inspect_notebook(str(notebook)).items()}


def _code_cells(notebook: Path) -> list[str]:
    """Source of the code cells, IPython magics and shell lines left out (they are not Python)."""
    import nbformat

    cells = nbformat.read(str(notebook), as_version=4).cells
    return ["\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
            for cell in cells if cell.cell_type == "code"]


def _config_field_types() -> dict[str, dict[str, Any]]:
    """``{section: {field: type hint}}`` of :class:`lurm_lite.config.LURMConfig`."""
    from lurm_lite.config import LURMConfig

    return {section: typing.get_type_hints(hint)
            for section, hint in typing.get_type_hints(LURMConfig).items() if dataclasses.is_dataclass(hint)}


def _accepted(hint: Any) -> tuple[type, ...] | None:
    """Python types a value for ``hint`` may have; None when not checked (lists, tuples...)."""
    if hint in (int, float, bool, str):
        return {int: (int,), float: (int, float), bool: (bool,), str: (str,)}[hint]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        parts = [_accepted(arg) for arg in typing.get_args(hint)]
        if any(part is None for part in parts):
            return None
        return tuple(t for part in parts for t in part)
    if hint is type(None):
        return (type(None),)
    return None


def parameter_types(notebook: Path) -> dict[str, tuple[type, ...]]:
    """The types each ``parameters`` name of ``notebook`` accepts, where they are known.

    A name with a literal default takes values of its type (an integer for ``SEED = 0``, a
    number for ``TAU = 0.1``, True or False for a bool, text for text). A name whose default
    is None takes None or the type of the config field it overrides, found in the
    notebook's code as ``with_overrides(<config>.<section>, <field>=NAME)`` (e.g.
    ``EPOCHS`` -> ``user_training.epochs``: int). Names of neither kind (lists, free
    values) are not checked.
    """
    declared = declared_parameters(notebook)
    accepted_by_name: dict[str, tuple[type, ...]] = {}
    for name, default in declared.items():
        try:
            value = ast.literal_eval(default)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, (bool, int, float, str)):
            accepted_by_name[name] = _accepted(type(value))
    fields = _config_field_types()
    for source in _code_cells(notebook):
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and getattr(call.func, "id", getattr(call.func, "attr", None))
                    == "with_overrides" and call.args and isinstance(call.args[0], ast.Attribute)):
                continue
            section = fields.get(call.args[0].attr, {})
            for keyword in call.keywords:
                name = getattr(keyword.value, "id", None)
                if name in declared and declared[name] == "None" and keyword.arg in section:
                    accepted = _accepted(section[keyword.arg])
                    if accepted is not None:
                        accepted_by_name[name] = tuple(dict.fromkeys((*accepted, type(None))))
    return accepted_by_name


def _type_words(accepted: tuple[type, ...]) -> str:
    words = {int: "an integer", float: "a number", bool: "True or False", str: "text", type(None): "None"}
    if float in accepted:
        accepted = tuple(t for t in accepted if t is not int)
    return " or ".join(words[t] for t in accepted)


def check_parameter_types(values: dict[str, Any], notebooks: list[Path],
                          declared: dict[str, dict[str, Any]]) -> None:
    """Raise :class:`ChainError` for the first value a declaring notebook cannot take.

    ``declared`` is ``{stem: declared_parameters(notebook)}``; only notebooks declaring a
    name of ``values`` are read for its type.
    """
    for notebook in notebooks:
        names = [name for name in values if name in declared[notebook.stem]]
        types = parameter_types(notebook) if names else {}
        for name in names:
            accepted, value = types.get(name), values[name]
            if accepted is None or (isinstance(value, accepted)
                                    and not (isinstance(value, bool) and bool not in accepted)):
                continue
            default = declared[notebook.stem][name]
            example = default if default != "None" else _example(accepted)
            raise ChainError(
                f"-p {name} {value!r}: notebook {notebook.stem} takes {_type_words(accepted)} for {name}, "
                f"not {type(value).__name__}; e.g. -p {name} {example}"
            )


def _example(accepted: tuple[type, ...]) -> str:
    for kind, example in ((bool, "True"), (int, "3"), (float, "0.5"), (str, "text")):
        if kind in accepted:
            return example
    return "None"


def parse_value(text: str) -> Any:
    """A ``-p`` value as papermill's ``-p`` would read it: a Python literal, else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def prepare_dataset(dataset: str, scale: str, seed: int, out_dir: str | Path) -> Path:
    """Return a validated dataset folder for ``dataset``.

    ``synthetic`` is generated at ``scale`` with ``seed`` into ``out_dir`` and ``movielens``
    (real MovieLens-100k) prepared there, unless ``out_dir`` already holds a valid copy
    made with the same request. Any other value is taken as the path of an existing
    dataset folder and validated in place.
    """
    from data_prep import schema

    out_dir = Path(out_dir)
    if dataset not in BUILTIN_DATASETS:
        path = Path(dataset).expanduser().resolve()
        if not path.is_dir():
            raise ChainError(
                f"DATASET={dataset!r} is neither one of {BUILTIN_DATASETS} nor an existing dataset folder; "
                "prepare one with `python -m data_prep ...` (see README)."
            )
        schema.validate(path)
        return path
    request = {"dataset": dataset, "scale": scale if dataset == "synthetic" else None,
               "seed": seed if dataset == "synthetic" else None}
    stamp = out_dir / "prepared_from.json"
    if stamp.exists() and load_json(stamp) == request and (out_dir / "dataset.json").exists():
        schema.validate(out_dir)
        return out_dir
    if dataset == "synthetic":
        from data_prep import synthetic

        synthetic.generate(out_dir, scale=scale, seed=seed)
    else:
        from data_prep import movielens

        movielens.prepare(out_dir)
    schema.validate(out_dir)
    save_json(stamp, request)
    return out_dir


def cpu_seconds_so_far() -> float:
    """CPU seconds (user + system) of this process and of every child process it has waited for.

    A stage's papermill kernel is a child of the runner, reaped when the stage ends, and it
    waits for its own worker processes (probes, Doc2Vec), so the difference of this before
    and after a stage is the CPU the stage used, on every core. A process the kernel leaves
    unwaited is not counted.
    """
    return sum(usage.ru_utime + usage.ru_stime
               for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def _record_timings(run: RunPaths, stages: dict[str, Any]) -> None:
    """Keep the latest wall and CPU seconds of every stage in ``RUN_DIR/chain.json`` (skipped stages keep theirs).

    ``stage_cpu_seconds`` / ``stage_seconds`` is how many cores a stage kept busy on average.
    """
    path = run.chain_log
    log = load_json(path) if path.exists() else {}
    seconds, cpu = log.get("stage_seconds", {}), log.get("stage_cpu_seconds", {})
    ran = {stem: info for stem, info in stages.items() if info["status"] == "ran"}
    seconds.update({stem: info["seconds"] for stem, info in ran.items()})
    cpu.update({stem: info["cpu_seconds"] for stem, info in ran.items()})
    save_json(path, {"stage_seconds": seconds, "total_seconds": round(sum(seconds.values()), 1),
                     "stage_cpu_seconds": cpu, "total_cpu_seconds": round(sum(cpu.values()), 1),
                     "cpu_count": os.cpu_count()})


# ---------------------------------------------------------------------------------------
# Stage stamps: what a stage read and wrote
# ---------------------------------------------------------------------------------------

# the runner's own files and the probe cache: never a stage's output
CHAIN_FILES = (RunPaths(".").notebooks.name, RunPaths(".").chain_log.name, RunPaths(".").probes.name)


def _stamp_path(run: RunPaths, stem: str) -> Path:
    return run.notebooks / f"{stem}.stamp.json"


def _read_stamp(run: RunPaths, stem: str) -> dict | None:
    path = _stamp_path(run, stem)
    if not path.exists():
        return None
    try:
        stamp = load_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # unreadable: treated as never run
    return stamp if isinstance(stamp, dict) and {"parameters", "inputs", "dataset", "outputs"} <= set(stamp) else None


def _stamp_parameters(run: RunPaths, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as a stamp records them: paths inside the run folder relative to it."""
    recorded = json.loads(json.dumps(params))
    if "RUN_DIR" in recorded:
        recorded["RUN_DIR"] = "."
    for name in ("DATASET", "DATA_DIR"):
        value = recorded.get(name)
        if isinstance(value, str) and value not in BUILTIN_DATASETS:
            recorded[name] = run.relative(value)
    return recorded


def _dataset_files(run: RunPaths, known: dict[str, dict]) -> dict[str, dict]:
    """Fingerprints of the files of the dataset folder notebook 01 recorded ({} before it ran)."""
    try:
        folder = run.dataset_dir()
    except (runs.MissingPrerequisite, KeyError, json.JSONDecodeError):
        return {}
    return runs.fingerprint_files(folder, runs.list_files(folder), known)


def _digest(stem: str, inputs: dict, dataset: dict, outputs: dict) -> str:
    """One stage's digest: its inputs' digests and the content hashes of its dataset and outputs."""
    content = {"stage": stem, "inputs": inputs,
               "dataset": {name: f.get("sha256") for name, f in dataset.items()},
               "outputs": {name: f.get("sha256") for name, f in outputs.items()}}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _current_digest(run: RunPaths, stem: str) -> str | None:
    """The digest of stage ``stem`` as its files are now (None when it never ran)."""
    stamp = _read_stamp(run, stem)
    if stamp is None:
        return None
    dataset = _dataset_files(run, stamp["dataset"]) if stamp["dataset"] else {}
    outputs = runs.fingerprint_files(run.root, stamp["outputs"], stamp["outputs"])
    return _digest(stem, stamp["inputs"], dataset, outputs)


def _changed(recorded: dict[str, dict], current: dict[str, dict]) -> list[str]:
    return sorted(name for name in set(recorded) | set(current)
                  if recorded.get(name, {}).get("sha256") != current.get(name, {}).get("sha256"))


def _why_run(run: RunPaths, stem: str, stamp: dict | None, params: dict, inputs: dict,
             dataset: dict | None, outputs: dict) -> str | None:
    """Why stage ``stem`` must run, in words; None when it is complete and up to date.

    ``dataset`` and ``outputs`` are the current fingerprints of the files its stamp lists
    (``dataset`` None for a stage that does not take ``DATASET``).
    """
    if stamp is None:
        return "no stamp of a complete run"
    if not run.stage_json(stem).exists():
        return f"its results {run.stage_json(stem).name} are missing"
    if stamp["parameters"] != params:
        changes = ", ".join(f"{k} {stamp['parameters'].get(k)!r} -> {params.get(k)!r}"
                            for k in sorted(set(stamp["parameters"]) | set(params))
                            if stamp["parameters"].get(k) != params.get(k))
        return f"parameters changed: {changes}"
    if dataset is not None and (changed := _changed(stamp["dataset"], dataset)):
        return f"the dataset changed: {', '.join(changed[:3])}"
    if changed := [s for s in sorted(set(stamp["inputs"]) | set(inputs)) if stamp["inputs"].get(s) != inputs.get(s)]:
        return f"the outputs of {', '.join(changed)} changed since it ran"
    if changed := _changed(stamp["outputs"], outputs):
        return f"its output {', '.join(changed[:3])} changed or is missing"
    return None


def _record_stamp(run: RunPaths, stem: str, params: dict, inputs: dict, takes_dataset: bool,
                  before: dict[str, tuple[int, int]]) -> None:
    """Write the stamp of stage ``stem`` that just ran; ``before`` lists the run folder's files before it.

    Its outputs are the files it created or modified. A dataset folder inside the run
    folder is recorded as the stage's dataset, not twice as outputs.
    """
    dataset = _dataset_files(run, {}) if takes_dataset else {}
    inside = run.relative(run.dataset_dir()) if dataset else ""
    dataset_prefix = inside + "/" if inside and not Path(inside).is_absolute() else None
    after = runs.list_files(run.root, skip=CHAIN_FILES)
    written = [name for name, seen in after.items()
               if before.get(name) != seen and not (dataset_prefix and name.startswith(dataset_prefix))]
    outputs = runs.fingerprint_files(run.root, written)
    save_json(_stamp_path(run, stem), {
        "stage": stem, "parameters": params, "inputs": inputs, "dataset": dataset, "outputs": outputs,
        "digest": _digest(stem, inputs, dataset, outputs),
    })
    (run.notebooks / f"{stem}.parameters.json").unlink(missing_ok=True)  # the stamp before issue 11


# ---------------------------------------------------------------------------------------
# The chain
# ---------------------------------------------------------------------------------------


def _open_run_folder(run_dir: str | Path) -> RunPaths:
    """The run folder, created when missing; a path that cannot be one is a ChainError."""
    path = Path(run_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ChainError(f"--run-dir {path} is a file, not a folder; pass a folder path (created when missing), "
                         "e.g. --run-dir runs/demo")
    try:
        return RunPaths(path.resolve()).make()
    except OSError as exc:
        raise ChainError(f"cannot create the run folder {path}: {exc.strerror or exc}; "
                         "pass a folder you can write, e.g. --run-dir runs/demo") from None


def run_chain(
    dataset: str,
    scale: str,
    run_dir: str | Path,
    device: str = "auto",
    seed: int = 0,
    extra: dict[str, Any] | None = None,
    force: bool = False,
    only: list[str] | None = None,
    notebook_dir: Path = NOTEBOOK_DIR,
    log=print,
) -> dict[str, Any]:
    """Execute the notebook chain into ``run_dir``; returns a summary of what ran.

    ``extra`` holds ``-p`` parameters (already parsed); ``only`` restricts the chain to
    notebooks whose stem starts with one of the given prefixes (e.g. ``["01", "02"]``).
    Every request error (unknown or mistyped parameter, a run dir that cannot be one, a
    run folder held by another run or not writable) is a :class:`ChainError` raised before
    any notebook runs.
    """
    chain = chain_notebooks(notebook_dir)
    notebooks = chain
    if only:
        notebooks = [nb for nb in chain if any(nb.stem.startswith(p) for p in only)]
        if not notebooks:
            raise ChainError(f"--only {only} matches no notebook in {notebook_dir}")
    declared = {nb.stem: declared_parameters(nb) for nb in notebooks}
    extra = dict(extra or {})
    known = set().union(*(names for names in declared.values()))
    unknown = sorted(set(extra) - known)
    if unknown:
        raise ChainError(
            f"Unknown parameter(s) {', '.join(unknown)}: no notebook of the chain declares them. "
            f"Declared parameters: {', '.join(sorted(known))}."
        )
    if dataset not in BUILTIN_DATASETS and any("DATASET" in names for names in declared.values()):
        folder = Path(dataset).expanduser().resolve()  # notebooks run in notebooks/, not here
        if not folder.is_dir():
            raise ChainError(f"--dataset {dataset!r} is neither one of {BUILTIN_DATASETS} nor an existing "
                             "dataset folder; prepare one with `python -m data_prep ...` (see README).")
        dataset = str(folder)
    common = {"DATASET": dataset, "SCALE": scale, "DEVICE": device, "SEED": seed}
    check_parameter_types({**common, **extra}, notebooks, declared)
    run = _open_run_folder(run_dir)
    common["RUN_DIR"] = str(run.root)
    summary: dict[str, Any] = {"run_dir": str(run.root), "stages": {}}
    try:
        with runs.run_folder_lock(run.root, log=log) as locked:
            writable = locked and os.access(run.root, os.W_OK)  # a lock file may outlive write access
            _run_stages(run, chain, notebooks, declared, {**common, **extra}, force, writable, summary, log)
    except runs.RunFolderBusy as exc:
        raise ChainError(str(exc)) from None
    figures = sorted(str(p) for p in run.figures.glob("*.png"))
    summary["figures"] = figures
    summary["results"] = str(run.results) if run.results.exists() else None
    log(f"[lurm_lite] executed notebooks: {run.notebooks}")
    log(f"[lurm_lite] figures ({len(figures)}): {run.figures}")
    log(f"[lurm_lite] results: {summary['results']}")
    return summary


def _run_stages(run: RunPaths, chain: list[Path], notebooks: list[Path], declared: dict[str, dict[str, Any]],
                values: dict[str, Any], force: bool, writable: bool, summary: dict[str, Any], log) -> None:
    """Run or skip each of ``notebooks`` (in ``chain`` order) as its stamp says; fills ``summary``."""
    import papermill

    digests: dict[str, str | None] = {}
    for nb in notebooks:
        earlier = [n.stem for n in chain[:chain.index(nb)]]
        for stem in earlier:
            if stem not in digests:
                digests[stem] = _current_digest(run, stem)
        inputs = {stem: digests[stem] for stem in earlier}
        params = {k: v for k, v in values.items() if k in declared[nb.stem]}
        recorded = _stamp_parameters(run, params)
        takes_dataset = "DATASET" in declared[nb.stem]
        stamp = _read_stamp(run, nb.stem)
        dataset = _dataset_files(run, stamp["dataset"] if stamp else {}) if takes_dataset else None
        outputs = runs.fingerprint_files(run.root, stamp["outputs"], stamp["outputs"]) if stamp else {}
        reason = "--force" if force else _why_run(run, nb.stem, stamp, recorded, inputs, dataset, outputs)
        if reason is None:
            log(f"[lurm_lite] {nb.stem}: complete, skipped (use --force to rerun)")
            summary["stages"][nb.stem] = {"status": "skipped"}
            if writable and (outputs != stamp["outputs"] or (dataset or {}) != stamp["dataset"]):
                # same content, new mtimes (a copied folder): record them, so they are not hashed again
                save_json(_stamp_path(run, nb.stem), {**stamp, "outputs": outputs, "dataset": dataset or {}})
            continue
        if not writable:
            raise ChainError(f"run folder {run.root} is not writable and {nb.stem} must run ({reason}); "
                             "make it writable, or copy it and pass the copy as --run-dir")
        log(f"[lurm_lite] {nb.stem}: running ({reason}) with {params}")
        start, cpu_start = time.perf_counter(), cpu_seconds_so_far()
        _stamp_path(run, nb.stem).unlink(missing_ok=True)
        before = runs.list_files(run.root, skip=CHAIN_FILES)
        executed = run.notebooks / nb.name
        try:
            papermill.execute_notebook(
                str(nb),
                str(executed),
                parameters=params,
                kernel_name="python3",
                kernel_manager_class=_quiet_kernel_manager(),
                cwd=str(nb.parent),
                progress_bar=sys.stderr.isatty(),
            )
        except papermill.PapermillExecutionError as exc:
            raise StageFailed(
                f"{nb.stem} failed: {exc.ename}: {exc.evalue}\n"
                f"The executed notebook with the full traceback: {executed}"
            ) from exc
        seconds, cpu_seconds = time.perf_counter() - start, cpu_seconds_so_far() - cpu_start
        _record_stamp(run, nb.stem, recorded, inputs, takes_dataset, before)
        summary["stages"][nb.stem] = {"status": "ran", "seconds": round(seconds, 1),
                                      "cpu_seconds": round(cpu_seconds, 1), "reason": reason}
        log(f"[lurm_lite] {nb.stem}: done in {seconds:.1f} s")
    if any(info["status"] == "ran" for info in summary["stages"].values()):
        _record_timings(run, summary["stages"])
