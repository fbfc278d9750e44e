"""The README's results section, regenerated from a run folder (never edited by hand).

``python -m lurm_lite readme --run-dir runs/demo`` replaces the block between the markers
below in README.md with the run's results table (:func:`lurm_lite.results.results_markdown` of
its ``results.json``, the table ``results.md`` holds), its stage timings
(``chain.json``) and figures copied to ``docs/figures/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lurm_lite.io import atomic_path, load_json
from lurm_lite.results import load_results, results_markdown
from lurm_lite.runs import RunPaths

START = "<!-- results:start (python -m lurm_lite readme --run-dir DIR writes this block) -->"
END = "<!-- results:end -->"
FIGURES = {
    "results_auc": "Downstream AUC per task and method, with bootstrap 95% intervals (notebook 05)",
    "length_ablation": "Metric against history length, Fig. 3 style (notebook 06)",
}


def results_block(run: RunPaths, figure_dir: Path, readme_dir: Path) -> str:
    """Markdown for README: timings, the results table and the figures of ``run``."""
    run.require(run.results, notebook="05_downstream")
    lines = [START, ""]
    chain = run.chain_log
    if chain.exists():
        timings = load_json(chain)
        stages = ", ".join(f"{stem.split('_', 1)[0]}: {sec:.0f} s" for stem, sec in timings["stage_seconds"].items())
        cpu = timings.get("total_cpu_seconds")  # absent from a chain.json written before it was kept
        busy = (f" CPU time {cpu / 60:.1f} min: {cpu / timings['total_seconds']:.1f} of the machine's "
                f"{timings['cpu_count']} cores busy on average." if cpu else "")
        lines += [f"Run folder `{run.root.name}`; stage times ({timings['total_seconds'] / 60:.1f} min in all): "
                  f"{stages}.{busy}", ""]
    lines += [results_markdown(load_results(run.results)).strip(), ""]
    figure_dir.mkdir(parents=True, exist_ok=True)
    for name, caption in FIGURES.items():
        source = run.figure(name)
        if source.exists():
            target = figure_dir / f"demo_{name}.png"
            shutil.copyfile(source, target)
            lines += [f"{caption}:", "", f"![{caption}]({target.relative_to(readme_dir).as_posix()})", ""]
    lines.append(END)
    return "\n".join(lines)


def update_readme(run_dir: str | Path, readme: str | Path = "README.md",
                  figure_dir: str | Path = "docs/figures") -> Path:
    """Rewrite the results block of ``readme`` from ``run_dir``; returns the README path."""
    readme = Path(readme).resolve()
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no results block; add the two marker lines:\n{START}\n{END}")
    block = results_block(RunPaths(Path(run_dir).resolve()), Path(figure_dir).resolve(), readme.parent)
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    with atomic_path(readme) as tmp:
        tmp.write_text(head + block + tail)
    return readme
