"""Model files and the SMEN resume checkpoint: plain data read with ``weights_only=True``, and a
checkpoint resumed only when it was written from the same inputs (issue 11)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from lurm_lite import io
from lurm_lite.boi import build_boi
from lurm_lite.config import SMENConfig, UserTrainingConfig
from lurm_lite.smen import SMEN, load_smen, save_smen
from lurm_lite.user_training import boi_fingerprint, train_smen

SMEN_TINY = SMENConfig(hidden=8, anchors=2)
TRAIN_TINY = UserTrainingConfig(batch_size=16, epochs=2, min_subseq_periods=2, max_periods=12)
D = 12


def _boi(interest_seed: int):
    """Month + year BoI of 48 users over 2015-2017; ``interest_seed`` draws the item -> interest map."""
    rng = np.random.default_rng(0)
    n = 3_000
    users = rng.integers(0, 48, n)
    items = rng.integers(0, 60, n)
    ts = rng.integers(1_420_070_400, 1_514_764_800, n)  # 2015-01-01 .. 2018-01-01
    order = np.lexsort((ts, users))
    interest = np.random.default_rng(interest_seed).integers(0, D, 60)
    return build_boi(users[order], items[order], ts[order], interest, D)


@pytest.fixture(scope="module")
def boi():
    return _boi(1)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


class _RunsCode:
    """Unpickling this calls ``Path.touch(marker)``: what a crafted model file could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_smen_file_round_trips_through_a_weights_only_load(tmp_path):
    model = SMEN(D, 8, 2, ("month", "year"))
    save_smen(tmp_path / "smen.pt", model)
    torch.load(tmp_path / "smen.pt", weights_only=True)  # plain data: no error
    loaded = load_smen(tmp_path / "smen.pt")
    assert loaded.init_kwargs() == model.init_kwargs() and _same_weights(loaded, model)


def test_a_model_file_holding_a_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"
    model = SMEN(D, 8, 2, ("month", "year"))
    torch.save({"kwargs": model.init_kwargs(), "state_dict": model.state_dict(), "extra": _RunsCode(marker)},
               tmp_path / "smen.pt")
    with pytest.raises(io.UnsafeArtifact, match="smen.pt holds objects other than tensors"):
        load_smen(tmp_path / "smen.pt")
    assert not marker.exists()


def test_checkpoint_is_plain_data_with_numpy_values_from_the_epoch_probe(boi, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    train_smen(boi, SMEN_TINY, TRAIN_TINY, "cpu", seed=0, checkpoint_path=ckpt, progress=False,
               on_epoch_end=lambda epoch, model: {"auc": np.float64(0.5 + epoch / 10)})
    saved = torch.load(ckpt, weights_only=True)
    assert saved["epoch"] == 2 and [e["auc"] for e in saved["history"]["eval"]] == [0.5, 0.6]
    assert saved["inputs"]["boi"] == boi_fingerprint(boi, SMEN_TINY.scales)


def test_more_epochs_continue_the_checkpoint_and_fewer_restart(boi, tmp_path, capsys):
    ckpt = tmp_path / "ckpt.pt"
    two, _ = train_smen(boi, SMEN_TINY, TRAIN_TINY, "cpu", seed=0, progress=False)
    one_epoch = dataclasses.replace(TRAIN_TINY, epochs=1)
    one, one_history = train_smen(boi, SMEN_TINY, one_epoch, "cpu", seed=0, progress=False)

    train_smen(boi, SMEN_TINY, one_epoch, "cpu", seed=0, checkpoint_path=ckpt, progress=False)
    continued, history = train_smen(boi, SMEN_TINY, TRAIN_TINY, "cpu", seed=0, checkpoint_path=ckpt, progress=False)
    assert "not resuming" not in capsys.readouterr().out
    assert _same_weights(continued, two) and len(history["epoch"]) == 2

    fewer, fewer_history = train_smen(boi, SMEN_TINY, one_epoch, "cpu", seed=0, checkpoint_path=ckpt,
                                      progress=False)
    assert "has trained 2 epochs, more than the 1 asked for" in capsys.readouterr().out
    assert _same_weights(fewer, one) and fewer_history == one_history
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1


def test_a_finished_checkpoint_of_other_interests_is_not_reused(boi, tmp_path, capsys):
    """The issue's case: 03 rerun with other k-means settings (same D), then 04 again."""
    ckpt = tmp_path / "ckpt.pt"
    train_smen(boi, SMEN_TINY, TRAIN_TINY, "cpu", seed=0, checkpoint_path=ckpt, progress=False)
    other = _boi(2)
    fresh, fresh_history = train_smen(other, SMEN_TINY, TRAIN_TINY, "cpu", seed=0, progress=False)
    retrained, history = train_smen(other, SMEN_TINY, TRAIN_TINY, "cpu", seed=0, checkpoint_path=ckpt,
                                    progress=False)
    assert "its BoI input differs" in capsys.readouterr().out
    assert _same_weights(retrained, fresh) and history == fresh_history


@pytest.mark.parametrize("change, message", [
    ({"seed": 1}, "trained with seed 0, not 1"),
    ({"train": {"lr": 0.01}}, "its training config differs (lr 0.001 -> 0.01)"),
    ({"smen": {"anchors": 3}}, "its SMEN config differs (anchors 2 -> 3)"),
])
def test_other_seed_or_configs_restart_with_the_reason(boi, tmp_path, capsys, change, message):
    ckpt = tmp_path / "ckpt.pt"
    train_smen(boi, SMEN_TINY, TRAIN_TINY, "cpu", seed=0, checkpoint_path=ckpt, progress=False)
    smen_config = dataclasses.replace(SMEN_TINY, **change.get("smen", {}))
    train_config = dataclasses.replace(TRAIN_TINY, **change.get("train", {}))
    _, history = train_smen(boi, smen_config, train_config, "cpu", seed=change.get("seed", 0),
                            checkpoint_path=ckpt, progress=False)
    assert message in capsys.readouterr().out
    assert len(history["epoch"]) == 2


def test_encode_batch_size_alone_does_not_restart(boi, tmp_path, capsys):
    ckpt = tmp_path / "ckpt.pt"
    train_smen(boi, SMEN_TINY, TRAIN_TINY, "cpu", seed=0, checkpoint_path=ckpt, progress=False)
    train_smen(boi, SMEN_TINY, dataclasses.replace(TRAIN_TINY, encode_batch_size=7), "cpu", seed=0,
               checkpoint_path=ckpt, progress=False)
    assert "not resuming" not in capsys.readouterr().out


@pytest.mark.parametrize("content", ["pickled object", "old format", "truncated"])
def test_unreadable_or_unsafe_checkpoint_restarts_without_running_code(boi, tmp_path, capsys, content):
    ckpt, marker = tmp_path / "ckpt.pt", tmp_path / "code_ran"
    if content == "pickled object":
        torch.save({"epoch": 1, "payload": _RunsCode(marker)}, ckpt)
        reason = "holds objects other than tensors and plain data"
    elif content == "old format":  # lurm_lite before issue 11: no record of the inputs
        torch.save({"epoch": 1, "smen_config": dataclasses.asdict(SMEN_TINY), "seed": 0}, ckpt)
        reason = "written by an older lurm_lite"
    else:
        train_smen(boi, SMEN_TINY, TRAIN_TINY, "cpu", seed=0, checkpoint_path=ckpt, progress=False)
        ckpt.write_bytes(ckpt.read_bytes()[:200])
        reason = "cannot be read"
    _, history = train_smen(boi, SMEN_TINY, TRAIN_TINY, "cpu", seed=0, checkpoint_path=ckpt, progress=False)
    assert reason in capsys.readouterr().out
    assert not marker.exists() and len(history["epoch"]) == 2
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
