"""The main job: the notebook chain executed by papermill into one run folder.

``python -m lurm_lite run --dataset synthetic --scale default --run-dir runs/demo`` executes
``notebooks/01_data.ipynb`` ... in order, each with kernel ``python3`` and working
directory ``notebooks/``, and keeps one executed copy of each in ``RUN_DIR/notebooks/``.

Rules a user can rely on:

- A ``-p NAME VALUE`` whose NAME no notebook of the chain declares in its ``parameters``
  cell is refused before anything runs (papermill alone would only warn). Each notebook
  receives only the parameters it declares.
- A stage is skipped when its results JSON exists and it was run with the same
  parameters; ``--force`` reruns everything. Once a stage runs, every later stage runs
  too, since its inputs may have changed. A killed run therefore resumes at the first
  incomplete stage (artifacts are written atomically, see :mod:`lurm_lite.runs`).
- ``--dataset synthetic`` or ``movielens`` prepares that dataset inside the run folder
  (notebook 01 calls :func:`prepare_dataset`); any other value is a dataset folder path.
"""

from __future__ import annotations

import ast
import json
import sys
import time
from pathlib import Path
from typing import Any

from lurm_lite.runs import RunPaths, load_json, save_json

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
BUILTIN_DATASETS = ("synthetic", "movielens")


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


def _record_timings(run: RunPaths, stages: dict[str, Any]) -> None:
    """Keep the latest run time of every stage in ``RUN_DIR/chain.json`` (skipped stages keep theirs)."""
    path = run.root / "chain.json"
    seconds = load_json(path)["stage_seconds"] if path.exists() else {}
    seconds.update({stem: info["seconds"] for stem, info in stages.items() if info["status"] == "ran"})
    save_json(path, {"stage_seconds": seconds, "total_seconds": round(sum(seconds.values()), 1)})


def _stamp_path(run: RunPaths, stem: str) -> Path:
    return run.notebooks / f"{stem}.parameters.json"


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
    """
    import papermill

    run = RunPaths(Path(run_dir).resolve()).make()
    notebooks = chain_notebooks(notebook_dir)
    if only:
        notebooks = [nb for nb in notebooks if any(nb.stem.startswith(p) for p in only)]
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
    common = {"DATASET": dataset, "RUN_DIR": str(run.root), "SCALE": scale, "DEVICE": device, "SEED": seed}
    summary: dict[str, Any] = {"run_dir": str(run.root), "stages": {}}
    rerun_rest = force
    for nb in notebooks:
        params = {k: v for k, v in {**common, **extra}.items() if k in declared[nb.stem]}
        stamp = _stamp_path(run, nb.stem)
        complete = (run.stage_json(nb.stem).exists() and stamp.exists()
                    and load_json(stamp) == json.loads(json.dumps(params)))
        if complete and not rerun_rest:
            log(f"[lurm_lite] {nb.stem}: complete, skipped (use --force to rerun)")
            summary["stages"][nb.stem] = {"status": "skipped"}
            continue
        rerun_rest = True
        log(f"[lurm_lite] {nb.stem}: running with {params}")
        start = time.perf_counter()
        stamp.unlink(missing_ok=True)
        executed = run.notebooks / nb.name
        try:
            papermill.execute_notebook(
                str(nb),
                str(executed),
                parameters=params,
                kernel_name="python3",
                cwd=str(nb.parent),
                progress_bar=sys.stderr.isatty(),
            )
        except papermill.PapermillExecutionError as exc:
            raise StageFailed(
                f"{nb.stem} failed: {exc.ename}: {exc.evalue}\n"
                f"The executed notebook with the full traceback: {executed}"
            ) from exc
        seconds = time.perf_counter() - start
        save_json(stamp, params)
        summary["stages"][nb.stem] = {"status": "ran", "seconds": round(seconds, 1)}
        log(f"[lurm_lite] {nb.stem}: done in {seconds:.1f} s")
    figures = sorted(str(p) for p in run.figures.glob("*.png"))
    summary["figures"] = figures
    _record_timings(run, summary["stages"])
    summary["results"] = str(run.results) if run.results.exists() else None
    log(f"[lurm_lite] executed notebooks: {run.notebooks}")
    log(f"[lurm_lite] figures ({len(figures)}): {run.figures}")
    log(f"[lurm_lite] results: {summary['results']}")
    return summary
