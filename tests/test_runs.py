"""Run-folder helpers: content fingerprints, the run-folder lock, the missing-prerequisite
message, relative dataset records, the config scales."""

import errno
import hashlib
import os
import socket
import subprocess
import sys

import pytest

from lurm_lite import io, runs
from lurm_lite.config import for_scale, with_overrides


def test_require_names_the_missing_file_and_the_notebook_to_run(tmp_path):
    run = runs.RunPaths(tmp_path).make()
    with pytest.raises(runs.MissingPrerequisite) as err:
        run.require(run.item_embeddings, notebook="02_item_embedding")
    message = str(err.value)
    assert "item_embeddings.npy" in message and "02_item_embedding.ipynb" in message


def test_scales_and_overrides():
    tiny, paper = for_scale("tiny"), for_scale("paper")
    assert (paper.smen.hidden, paper.smen.anchors, paper.clustering.n_interests) == (128, 10, 100_000)
    assert paper.item.tau == 0.1 and paper.item.beta_seconds == 5 * 86_400
    assert tiny.smen.hidden < paper.smen.hidden
    item = with_overrides(tiny.item, epochs=7, dim=None)
    assert item.epochs == 7 and item.dim == tiny.item.dim
    with pytest.raises(TypeError, match="no field"):
        with_overrides(tiny.item, not_a_field=1)
    with pytest.raises(ValueError, match="Unknown scale"):
        for_scale("huge")


def test_fingerprint_reuses_a_known_hash_only_while_size_and_mtime_match(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.bin").write_bytes(b"abc")
    (tmp_path / ".hidden.tmp").write_bytes(b"x")
    (tmp_path / "skipped.json").write_text("{}")
    listed = runs.list_files(tmp_path, skip=("skipped.json",))
    assert list(listed) == ["sub/a.bin"]
    first = runs.fingerprint_files(tmp_path, listed)
    assert first["sub/a.bin"]["sha256"] == hashlib.sha256(b"abc").hexdigest()
    fake = {"sub/a.bin": {**first["sub/a.bin"], "sha256": "recorded"}}
    assert runs.fingerprint_files(tmp_path, ["sub/a.bin"], fake)["sub/a.bin"]["sha256"] == "recorded"
    (tmp_path / "sub" / "a.bin").write_bytes(b"abd")
    os.utime(tmp_path / "sub" / "a.bin", ns=(1, 1))
    changed = runs.fingerprint_files(tmp_path, ["sub/a.bin"], fake)["sub/a.bin"]["sha256"]
    assert changed == hashlib.sha256(b"abd").hexdigest()
    assert runs.fingerprint_files(tmp_path, ["gone.npy"]) == {"gone.npy": {"missing": True}}


def test_a_second_holder_of_the_run_folder_lock_is_told_who_holds_it(tmp_path):
    with runs.run_folder_lock(tmp_path, log=lambda _: None) as held:
        assert held
        with pytest.raises(runs.RunFolderBusy) as err:
            with runs.run_folder_lock(tmp_path, log=lambda _: None):
                pass
    message = str(err.value)
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message and "started" in message
    with runs.run_folder_lock(tmp_path, log=lambda _: None):  # released after the block
        pass


def test_the_lock_is_refused_across_processes_and_freed_when_its_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from lurm_lite import runs\n"
        f"with runs.run_folder_lock({str(tmp_path)!r}):\n"
        "    print('locked', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(runs.RunFolderBusy, match=f"pid {holder.pid} on host"):
            with runs.run_folder_lock(tmp_path, log=lambda _: None):
                pass
    finally:
        holder.kill()
        holder.wait()
    said = []
    with runs.run_folder_lock(tmp_path, log=said.append):  # killed holder: its record is stale
        pass
    assert len(said) == 1 and f"left by pid {holder.pid}" in said[0] and "no longer running" in said[0]


def test_an_unwritable_run_folder_is_read_without_the_lock(tmp_path, monkeypatch):
    real_open = os.open

    def read_only_open(path, flags, *args):
        if str(path).endswith(runs.LOCK_NAME):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only_open)
    with runs.run_folder_lock(tmp_path) as held:
        assert held is False


def test_dataset_dir_recorded_relative_is_read_from_the_run_folder(tmp_path):
    run = runs.RunPaths(tmp_path / "copy").make()
    io.save_json(run.stage_json("01_data"), {"dataset_dir": run.relative(run.dataset)})
    assert io.load_json(run.stage_json("01_data"))["dataset_dir"] == "dataset"
    assert run.dataset_dir() == run.root / "dataset"
    assert run.relative(tmp_path / "elsewhere") == str((tmp_path / "elsewhere").resolve())
