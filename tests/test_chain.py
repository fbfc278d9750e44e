"""The chain runner on a tiny fake chain of four notebooks (written here, run through papermill):
stamps that cover what a stage read, relative stamps, the run-folder lock, a read-only run
folder, and the one-line errors of the ``run`` command (issue 11)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lurm_lite import chain, io, runs

QUIET = {"log": lambda _: None}

# name: (parameters cell, code): each stage reads the previous stage's file and writes its own
FAKE_CHAIN = {
    "01_data": ('DATASET = "synthetic"  # a folder with log.csv\nRUN_DIR = "."  # run folder\n'
                'SCALE = "tiny"  # scale\nDEVICE = "auto"  # unused\nSEED = 0  # seed',
                'words = (pathlib.Path(DATASET) / "log.csv").read_text().split()\n'
                'write("text.json", {"words": words})\n'
                'write("01_data.json", {"dataset_dir": DATASET})'),
    "02_items": ('RUN_DIR = "."  # run folder\nSCALE = "tiny"  # scale\nITEM_EPOCHS = None  # epochs',
                 'from lurm_lite.config import for_scale, with_overrides\n'
                 'config = with_overrides(for_scale(SCALE).item, epochs=ITEM_EPOCHS)\n'
                 'write("items.json", read("text.json")["words"] * config.epochs)\n'
                 'write("02_items.json", {"epochs": config.epochs})'),
    "03_interests": ('RUN_DIR = "."  # run folder\nKMEANS_ITERATIONS = None  # iterations',
                     'assert KMEANS_ITERATIONS != -1, "killed"\n'
                     'write("interests.json", len(read("items.json")) * (KMEANS_ITERATIONS or 1))\n'
                     'write("03_interests.json", {})'),
    "04_smen": ('RUN_DIR = "."  # run folder\nSCALE = "tiny"  # scale\nEPOCHS = None  # epochs',
                'from lurm_lite.config import for_scale, with_overrides\n'
                'train = with_overrides(for_scale(SCALE).user_training, epochs=EPOCHS)\n'
                'write("model.json", {"interests": read("interests.json"), "epochs": train.epochs})\n'
                'pathlib.Path(RUN_DIR, "probes").mkdir(exist_ok=True)\n'
                'write("probes/kept.json", {})  # a cache (downstream.evaluate), never an output\n'
                'write("04_smen.json", {})'),
}
HELPERS = ('import json, pathlib\n'
           'def read(name):\n    return json.loads((pathlib.Path(RUN_DIR) / name).read_text())\n'
           'def write(name, obj):\n    (pathlib.Path(RUN_DIR) / name).write_text(json.dumps(obj))')


def _write_notebook(path: Path, parameters: str, code: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(HELPERS), nbformat.v4.new_code_cell(code)]
    nbformat.write(nb, path)


@pytest.fixture()
def fake(tmp_path):
    """(notebook folder, dataset folder, run folder) of the fake chain."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for stem, (parameters, code) in FAKE_CHAIN.items():
        _write_notebook(notebooks / f"{stem}.ipynb", parameters, code)
    dataset = tmp_path / "data"
    dataset.mkdir()
    (dataset / "log.csv").write_text("a b c\n")
    return notebooks, dataset, tmp_path / "run"


def _run(fake, run_dir=None, **kwargs) -> dict[str, str]:
    notebooks, dataset, default_run = fake
    summary = chain.run_chain(str(dataset), "tiny", run_dir or default_run, notebook_dir=notebooks, **QUIET, **kwargs)
    return {stem: info["status"] for stem, info in summary["stages"].items()}


def _reasons(fake, **kwargs) -> dict[str, str]:
    notebooks, dataset, run_dir = fake
    summary = chain.run_chain(str(dataset), "tiny", run_dir, notebook_dir=notebooks, **QUIET, **kwargs)
    return {stem: info.get("reason", "skipped") for stem, info in summary["stages"].items()}


ALL_RAN = {"01_data": "ran", "02_items": "ran", "03_interests": "ran", "04_smen": "ran"}
ALL_SKIPPED = {stem: "skipped" for stem in ALL_RAN}


def test_a_stage_reruns_alone_when_an_earlier_stage_changed_its_outputs(fake):
    """The issue's case: 03 rerun alone with other k-means settings, then 04 alone."""
    run = runs.RunPaths(fake[2])
    assert _run(fake) == ALL_RAN
    assert _run(fake) == ALL_SKIPPED
    assert _run(fake, only=["03"], extra={"KMEANS_ITERATIONS": 5}) == {"03_interests": "ran"}
    reasons = _reasons(fake, only=["04"])
    assert "the outputs of 03_interests changed" in reasons["04_smen"]
    assert io.load_json(run.root / "model.json")["interests"] == 15
    assert _run(fake, only=["04"]) == {"04_smen": "skipped"}
    reasons = _reasons(fake)  # back to the default settings: 03 and then 04 again
    assert "KMEANS_ITERATIONS 5 -> None" in reasons["03_interests"]
    assert reasons["01_data"] == reasons["02_items"] == "skipped" and "03_interests" in reasons["04_smen"]
    assert io.load_json(run.root / "model.json")["interests"] == 3


def test_the_probe_cache_is_no_stages_output(fake):
    assert _run(fake) == ALL_RAN
    assert set(io.load_json(fake[2] / "notebooks" / "04_smen.stamp.json")["outputs"]) == {"model.json", "04_smen.json"}
    shutil.rmtree(fake[2] / "probes")  # deleting the cache costs time, never a rerun
    assert _run(fake) == ALL_SKIPPED


BURN_CPU = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end:\n    pass"


def test_chain_json_keeps_each_stages_cpu_seconds_with_its_kernels_and_their_workers(fake):
    """Stage 02 burns a second of CPU in its kernel and another in a process the kernel starts:
    chain.json's CPU seconds of 02 hold both (what the runner's own process used would not)."""
    notebooks = fake[0]
    parameters, code = FAKE_CHAIN["02_items"]
    burn = (f"{BURN_CPU}\nimport os, subprocess, sys\nsubprocess.run([sys.executable, '-c', {BURN_CPU!r}], check=True)\n"
            "t = os.times()\nwrite('kernel_cpu.json', t.user + t.system + t.children_user + t.children_system)\n")
    _write_notebook(notebooks / "02_items.ipynb", parameters, burn + code)
    assert _run(fake) == ALL_RAN
    log = io.load_json(fake[2] / "chain.json")
    kernel_cpu = io.load_json(fake[2] / "kernel_cpu.json")  # the kernel's own count, up to its last cell
    assert kernel_cpu >= 2.0
    assert log["stage_cpu_seconds"]["02_items"] >= kernel_cpu
    assert set(log["stage_cpu_seconds"]) == set(log["stage_seconds"]) == set(ALL_RAN)
    assert log["total_cpu_seconds"] == pytest.approx(sum(log["stage_cpu_seconds"].values()), abs=0.1)
    assert _run(fake, only=["03"], force=True) == {"03_interests": "ran"}  # one stage again: the others kept
    assert io.load_json(fake[2] / "chain.json")["stage_cpu_seconds"]["02_items"] == log["stage_cpu_seconds"]["02_items"]


def test_a_failed_stage_leaves_no_stamp_and_runs_again_next_time(fake):
    assert _run(fake, only=["01", "02"]) == {"01_data": "ran", "02_items": "ran"}
    with pytest.raises(chain.StageFailed, match="03_interests failed: AssertionError: killed"):
        _run(fake, extra={"KMEANS_ITERATIONS": -1})
    assert not (fake[2] / "notebooks" / "03_interests.stamp.json").exists()
    reasons = _reasons(fake)
    assert reasons["01_data"] == reasons["02_items"] == "skipped"
    assert reasons["03_interests"] == "no stamp of a complete run" and reasons["04_smen"] != "skipped"


def test_hand_edited_outputs_and_a_changed_dataset_rerun_what_read_them(fake):
    notebooks, dataset, run_dir = fake
    assert _run(fake) == ALL_RAN
    (run_dir / "items.json").write_text('["x"]')  # e.g. notebook 02 rerun by hand in Jupyter
    reasons = _reasons(fake)
    assert "its output items.json changed" in reasons["02_items"]
    # 02 wrote the same files again, so what 03 and 04 read is what they read before
    assert reasons["03_interests"] == reasons["04_smen"] == "skipped"
    (dataset / "log.csv").write_text("a b c d\n")
    reasons = _reasons(fake)
    assert "the dataset changed: log.csv" in reasons["01_data"]
    assert all("changed since it ran" in reasons[s] for s in ("02_items", "03_interests", "04_smen"))
    assert io.load_json(run_dir / "model.json")["interests"] == 4


def test_stamps_are_relative_so_a_copied_run_folder_skips_its_complete_stages(fake, monkeypatch):
    notebooks, dataset, run_dir = fake
    assert _run(fake) == ALL_RAN
    stamp = io.load_json(run_dir / "notebooks" / "04_smen.stamp.json")
    assert stamp["parameters"]["RUN_DIR"] == "." and set(stamp["outputs"]) == {"model.json", "04_smen.json"}
    assert set(stamp["inputs"]) == {"01_data", "02_items", "03_interests"}
    assert all(str(run_dir) not in p.read_text() for p in (run_dir / "notebooks").glob("*.stamp.json"))
    copy = run_dir.parent / "copy"
    shutil.copytree(run_dir, copy, copy_function=shutil.copy)  # new mtimes: contents are hashed again
    assert _run(fake, run_dir=copy) == ALL_SKIPPED
    copied = io.load_json(copy / "notebooks" / "04_smen.stamp.json")["outputs"]["model.json"]
    assert copied["mtime_ns"] == (copy / "model.json").stat().st_mtime_ns, "new mtimes not recorded"

    # a read-only copy with nothing to do is a no-op; with something to do, a clear error
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).endswith(runs.LOCK_NAME):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    real_access = os.access

    def no_write_access(path, mode, *args, **kwargs):  # a lock file left writable in a read-only folder
        return False if Path(path) == copy and mode & os.W_OK else real_access(path, mode, *args, **kwargs)

    files = runs.list_files(copy)
    for name, replacement in (("open", read_only), ("access", no_write_access)):
        with monkeypatch.context() as patch:
            patch.setattr(os, name, replacement)
            assert _run(fake, run_dir=copy) == ALL_SKIPPED
            assert runs.list_files(copy) == files, "a run with nothing to do wrote to the run folder"
            with pytest.raises(chain.ChainError, match=r"is not writable and 04_smen must run \(parameters changed"):
                _run(fake, run_dir=copy, extra={"EPOCHS": 2})


def test_a_second_run_on_a_locked_run_folder_stops_at_once_naming_the_holder(fake):
    run_dir = fake[2]
    run_dir.mkdir()
    with runs.run_folder_lock(run_dir, log=lambda _: None):
        with pytest.raises(chain.ChainError, match=f"in use by another run: pid {os.getpid()} on host"):
            _run(fake)
    assert not list(run_dir.glob("*.json"))


@pytest.mark.parametrize("name, value, message", [
    ("EPOCHS", "abc", "notebook 04_smen takes an integer or None for EPOCHS, not str; e.g. -p EPOCHS 3"),
    ("EPOCHS", 2.5, "takes an integer or None for EPOCHS, not float"),
    ("ITEM_EPOCHS", True, "takes an integer or None for ITEM_EPOCHS, not bool"),
    ("SCALE", 3, "takes text for SCALE, not int; e.g. -p SCALE \"tiny\""),
])
def test_a_mistyped_parameter_is_refused_before_anything_runs(fake, name, value, message):
    with pytest.raises(chain.ChainError) as err:
        _run(fake, extra={name: value})
    assert message in str(err.value)
    assert not fake[2].exists()


def test_parameter_types_come_from_literal_defaults_and_the_config_fields_they_override(fake):
    types = chain.parameter_types(fake[0] / "04_smen.ipynb")
    assert types == {"RUN_DIR": (str,), "SCALE": (str,), "EPOCHS": (int, type(None))}
    assert chain.parameter_types(fake[0] / "03_interests.ipynb") == {"RUN_DIR": (str,)}  # no config field


def test_a_run_dir_that_is_a_file_is_refused(fake, tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(chain.ChainError, match="a_file is a file, not a folder"):
        _run(fake, run_dir=tmp_path / "a_file")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lurm_lite", "run", *args], capture_output=True, text=True)


def test_the_run_command_reports_request_errors_in_one_line_without_a_traceback(tmp_path):
    (tmp_path / "a_file").write_text("")
    (tmp_path / "data").mkdir()
    cases = [
        (["--dataset", "synthetic", "--run-dir", str(tmp_path / "run"), "-p", "EPOCHS", "abc"],
         "EPOCHS 'abc': notebook 04_smen takes an integer or None"),
        (["--dataset", "synthetic", "--run-dir", str(tmp_path / "a_file")], "is a file, not a folder"),
        (["--dataset", str(tmp_path / "missing"), "--run-dir", str(tmp_path / "run")],
         "neither one of ('synthetic', 'movielens') nor an existing dataset folder"),
    ]
    for args, message in cases:
        cli = _cli(*args)
        assert cli.returncode == 2, cli.stderr
        assert message in cli.stderr and "Traceback" not in cli.stderr
        assert len(cli.stderr.strip().splitlines()) == 1, cli.stderr
    assert not (tmp_path / "run").exists()


def test_parse_value_reads_literals_like_papermill():
    assert chain.parse_value("2") == 2 and chain.parse_value("abc") == "abc"
    assert chain.parse_value("[1, 2]") == [1, 2] and chain.parse_value("None") is None
    assert json.loads(json.dumps(chain.parse_value("0.5"))) == 0.5
