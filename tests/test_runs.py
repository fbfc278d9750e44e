"""Run-folder helpers: atomic writes, the missing-prerequisite message, seeds, device."""

import json

import numpy as np
import pytest
import torch

from lurm_lite import runs
from lurm_lite.config import for_scale, with_overrides


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "results.json"
    runs.save_json(target, {"ok": 1})
    with pytest.raises(RuntimeError):
        with runs.atomic_path(target) as tmp:
            tmp.write_text('{"half": ')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"], "temporary file left behind"


def test_save_helpers_round_trip(tmp_path):
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    runs.save_npy(tmp_path / "a.npy", array)
    runs.save_npz(tmp_path / "b.npz", x=array, ids=np.array([3, 1]))
    runs.save_torch(tmp_path / "c.pt", {"w": torch.ones(2)})
    runs.save_json(tmp_path / "d.json", {"v": np.float32(0.5), "a": np.array([1, 2])})
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), array)
    with np.load(tmp_path / "b.npz") as f:
        np.testing.assert_array_equal(f["ids"], [3, 1])
    assert torch.equal(torch.load(tmp_path / "c.pt")["w"], torch.ones(2))
    assert runs.load_json(tmp_path / "d.json") == {"v": 0.5, "a": [1, 2]}


def test_require_names_the_missing_file_and_the_notebook_to_run(tmp_path):
    run = runs.RunPaths(tmp_path).make()
    with pytest.raises(runs.MissingPrerequisite) as err:
        run.require(run.item_embeddings, notebook="02_item_embedding")
    message = str(err.value)
    assert "item_embeddings.npy" in message and "02_item_embedding.ipynb" in message


def test_seed_everything_makes_numpy_and_torch_repeat():
    runs.seed_everything(7)
    first = (np.random.rand(3), torch.rand(3))
    runs.seed_everything(7)
    second = (np.random.rand(3), torch.rand(3))
    np.testing.assert_array_equal(first[0], second[0])
    assert torch.equal(first[1], second[1])


def test_device_auto_falls_back_to_cpu_and_refuses_absent_cuda():
    chosen = runs.device("auto")
    assert chosen.type in {"cuda", "mps", "cpu"}
    assert runs.device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert chosen.type in {"mps", "cpu"}
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            runs.device("cuda")


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
