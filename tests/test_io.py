"""lurm_lite.io: atomic writes and their modes, weights-only torch loads, seeds, the device,
and the layering that keeps data_prep below the method (it imports io and periods only)."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lurm_lite import io

ROOT = Path(__file__).resolve().parents[1]


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "results.json"
    io.save_json(target, {"ok": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text('{"half": ')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"], "temporary file left behind"


def test_save_helpers_round_trip(tmp_path):
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    io.save_npy(tmp_path / "a.npy", array)
    io.save_npz(tmp_path / "b.npz", x=array, ids=np.array([3, 1]))
    io.save_torch(tmp_path / "c.pt", {"w": torch.ones(2)})
    io.save_json(tmp_path / "d.json", {"v": np.float32(0.5), "a": np.array([1, 2])})
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), array)
    with np.load(tmp_path / "b.npz") as f:
        np.testing.assert_array_equal(f["ids"], [3, 1])
    assert torch.equal(torch.load(tmp_path / "c.pt")["w"], torch.ones(2))
    assert io.load_json(tmp_path / "d.json") == {"v": 0.5, "a": [1, 2]}


def test_seed_everything_makes_numpy_and_torch_repeat():
    io.seed_everything(7)
    first = (np.random.rand(3), torch.rand(3))
    io.seed_everything(7)
    second = (np.random.rand(3), torch.rand(3))
    np.testing.assert_array_equal(first[0], second[0])
    assert torch.equal(first[1], second[1])


def test_rng_states_survive_a_checkpoint_round_trip_and_replay_every_generator(tmp_path):
    import random

    io.seed_everything(3)
    io.save_torch(tmp_path / "rng.pt", {"rng": io.rng_states()})
    drawn = (random.random(), np.random.random(), torch.rand(1).item())
    io.seed_everything(4)
    io.set_rng_states(io.load_torch(tmp_path / "rng.pt")["rng"])
    assert (random.random(), np.random.random(), torch.rand(1).item()) == drawn


def test_set_rng_states_sets_only_the_generators_it_is_given():
    import random

    io.seed_everything(5)
    torch_only = {"torch": torch.get_rng_state()}  # the layout of SUMN's first checkpoints
    expected_torch = torch.rand(1).item()
    python_next = random.getstate()
    io.set_rng_states(torch_only)
    assert torch.rand(1).item() == expected_torch
    assert random.getstate() == python_next


def test_device_auto_falls_back_to_cpu_and_refuses_absent_cuda():
    chosen = io.device("auto")
    assert chosen.type in {"cuda", "mps", "cpu"}
    assert io.device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert chosen.type in {"mps", "cpu"}
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            io.device("cuda")


def test_artifacts_get_the_umask_modes_not_mkstemps_0600(tmp_path):
    previous = os.umask(0o022)
    try:
        io.save_json(tmp_path / "a.json", {"x": 1})
        io.save_npy(tmp_path / "b.npy", np.zeros(2))
        os.umask(0o027)
        io.save_torch(tmp_path / "c.pt", {"w": torch.ones(1)})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.npy").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "c.pt").stat().st_mode) == 0o640


def test_load_torch_reads_plain_data_and_refuses_a_pickled_object(tmp_path):
    io.save_torch(tmp_path / "ok.pt", {"w": torch.ones(2), "kwargs": {"scales": ("month",), "n": 3}})
    assert io.load_torch(tmp_path / "ok.pt")["kwargs"] == {"scales": ("month",), "n": 3}
    marker = tmp_path / "code_ran"
    torch.save({"w": torch.ones(2), "x": _Touches(marker)}, tmp_path / "bad.pt")
    with pytest.raises(io.UnsafeArtifact, match=r"bad\.pt holds objects other than tensors"):
        io.load_torch(tmp_path / "bad.pt")
    assert not marker.exists()


class _Touches:
    """Unpickling this creates ``marker``: code a crafted file would run under a full unpickler."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_device_takes_none_a_string_or_a_torch_device():
    assert io.device(None) == io.device("auto") == io.device("")
    assert io.device(torch.device("cpu")) == torch.device("cpu")
    assert io.device("cpu:0") == torch.device("cpu:0")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            io.device(torch.device("cuda"))


def test_deterministic_kernels_turn_torchs_deterministic_mode_on_for_cuda_only_and_restore_it(monkeypatch):
    """No GPU needed: the context only sets torch's flags (gpu_check shows what they do on CUDA)."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert not torch.are_deterministic_algorithms_enabled()
    with io.deterministic_kernels(torch.device("cpu")):
        assert not torch.are_deterministic_algorithms_enabled()  # CPU kernels are deterministic already
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    with io.deterministic_kernels(torch.device("cuda")):
        assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert not torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)  # a caller's own mode survives, also an error inside
    try:
        with pytest.raises(ValueError), io.deterministic_kernels(torch.device("cuda")):
            raise ValueError("inside")
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_data_prep_imports_only_io_and_periods_of_lurm_lite():
    probe = ("import data_prep, data_prep.schema, data_prep.synthetic, data_prep.movielens, data_prep.amazon, "
             "data_prep.tabular; import json, sys; "
             "print(json.dumps(sorted(m for m in sys.modules if m == 'torch' or m.split('.')[0] == 'lurm_lite')))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == ["lurm_lite", "lurm_lite.io", "lurm_lite.periods"], (
        f"data_prep loads {loaded}: it may use lurm_lite.io and lurm_lite.periods only, never the method or torch")
