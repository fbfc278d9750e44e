"""What PTUM and SUMN share (§3.3): the resumable pre-training loop, frozen encoding, save and load.

Both pre-train once per run folder with Adam (``config.lr``) for ``config.pretrain_epochs``
passes over their trainable users, ``config.pretrain_batch_size`` users a step, and differ
only in the loss of a step: each passes :func:`pretrain` its ``loss_of_batch(rows, rng)``.

- All sampling of epoch e (the user order and whatever the loss draws) uses
  ``np.random.default_rng([seed, e])``; dropout uses torch's global RNG, whose state the
  checkpoint keeps. So a run resumed from the checkpoint of epoch e continues exactly as an
  uninterrupted one.
- The checkpoint is written atomically after every epoch as plain data (``weights_only``
  loads): ``{"epoch", "model", "optimizer", "history", "rng", "config", "inputs"}``. It is
  continued when its ``inputs`` (:func:`checkpoint_inputs`) equal this run's and it has
  trained at most ``pretrain_epochs`` epochs; otherwise a line says why and training
  restarts (overwriting it after the first epoch).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from lurm_lite import io
from lurm_lite.competitors.sequences import BehaviourSequences, TitleTokens, behaviour_tokens, data_fingerprint
from lurm_lite.config import CompetitorConfig
from lurm_lite.user_training import inference

LossOfBatch = Callable[[np.ndarray, np.random.Generator], torch.Tensor]


def checkpoint_inputs(seqs: BehaviourSequences, titles: TitleTokens, settings: dict, seed: int,
                      checkpoint_format: int) -> dict:
    """What a checkpoint must have been written from to be resumed (plain data).

    ``settings``: the config fields that change what an epoch computes; the data enter as
    :func:`~lurm_lite.competitors.sequences.data_fingerprint`.
    """
    return {"format": checkpoint_format, "config": settings, "seed": int(seed),
            "data": data_fingerprint(seqs, titles)}


def _mismatch(saved: dict, inputs: dict) -> str:
    """Why a checkpoint written from ``saved`` inputs does not continue a run from ``inputs``."""
    if saved.get("format") != inputs["format"]:
        return "it is not a checkpoint of this format"
    if saved.get("data") != inputs["data"]:
        return "its behaviour sequences or titles differ"
    if saved.get("seed") != inputs["seed"]:
        return f"it was trained with seed {saved.get('seed')}, not {inputs['seed']}"
    saved_config = saved.get("config") if isinstance(saved.get("config"), dict) else {}
    changed = sorted(k for k in inputs["config"] if saved_config.get(k) != inputs["config"][k])
    return f"its config differs ({', '.join(changed)})"


def _why_not_resume(ckpt: dict, inputs: dict, epochs: int) -> str | None:
    """Why ``ckpt`` must not continue a run from ``inputs`` for ``epochs`` (None: resume)."""
    saved = ckpt.get("inputs")
    if not isinstance(saved, dict):
        return "it is not a checkpoint of this format"
    if saved != inputs:
        return _mismatch(saved, inputs)
    if ckpt["epoch"] > epochs:
        return f"it has trained {ckpt['epoch']} epochs, more than the {epochs} asked for"
    return None


def pretrain(name: str, model: nn.Module, loss_of_batch: LossOfBatch, users: np.ndarray, config: CompetitorConfig,
             device: torch.device, seed: int, checkpoint_path: str | Path | None, inputs: dict | None,
             progress: bool) -> tuple[nn.Module, dict]:
    """Pre-train ``model`` (already on ``device``, initialised by the caller) on ``users``.

    Epoch e visits ``users`` (rows of the sequences) once in the order of
    ``np.random.default_rng([seed, e]).permutation``, ``config.pretrain_batch_size`` a step;
    a step minimises ``loss_of_batch(rows, rng)`` (rng: the epoch's generator) with Adam
    (``config.lr``). ``inputs``: :func:`checkpoint_inputs`, needed with a ``checkpoint_path``
    (module docstring); ``name`` labels the progress bar and the messages.

    Returns (model in eval mode, ``{"epoch": mean loss per epoch, "seconds": training time,
    resumed epochs included}``).
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history: dict = {"epoch": [], "seconds": 0.0}
    first_epoch = 0
    ckpt = (io.resumable_checkpoint(checkpoint_path, device,
                                    lambda saved: _why_not_resume(saved, inputs, config.pretrain_epochs),
                                    f"pre-training {name} from scratch")
            if checkpoint_path is not None and Path(checkpoint_path).exists() else None)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        history, first_epoch = ckpt["history"], ckpt["epoch"]
        io.set_rng_states(ckpt["rng"])

    bs = config.pretrain_batch_size
    steps_per_epoch = -(-len(users) // bs)
    bar = tqdm(total=config.pretrain_epochs * steps_per_epoch, initial=first_epoch * steps_per_epoch,
               disable=not progress, desc=name, unit="step")
    model.train()
    with io.deterministic_kernels(torch.device(device)):  # the same bits for the same seed on CUDA too
        for epoch in range(first_epoch, config.pretrain_epochs):
            started = time.perf_counter()
            rng = np.random.default_rng([seed, epoch])
            order = rng.permutation(users)  # (n_train,)
            losses = []
            for step in range(steps_per_epoch):
                loss = loss_of_batch(order[step * bs:(step + 1) * bs], rng)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.4f}")
            history["epoch"].append(float(np.mean(losses)))
            history["seconds"] = float(history["seconds"]) + time.perf_counter() - started
            if checkpoint_path is not None:
                io.save_torch(checkpoint_path, {
                    "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "history": history, "rng": io.rng_states(), "config": dataclasses.asdict(config), "inputs": inputs,
                })
    bar.close()
    return model.eval(), history


def encode(model: nn.Module, seqs: BehaviourSequences, titles: TitleTokens, device: torch.device | str | None,
           batch_size: int = 512) -> np.ndarray:
    """The frozen user vectors of PTUM or SUMN (``model.user_vectors``) for every user of ``seqs``:
    (n, hidden) float32, rows in ``seqs.user_ids`` order.

    The model is moved to ``device``; eval mode and no autograd inside (the mode is restored);
    each batch is cut to its longest user (padding changes nothing, it only costs); a user
    without behaviours gets the zero vector.
    """
    dev = io.device(device)
    model.to(dev)
    out = np.zeros((len(seqs.user_ids), model.config.hidden), dtype=np.float32)  # (n, H)
    with inference(model):
        for start in range(0, len(seqs.user_ids), batch_size):
            lengths = seqs.lengths[start:start + batch_size]  # (b,)
            width = max(1, int(lengths.max()))  # L' of this batch
            tokens = behaviour_tokens(seqs.items[start:start + batch_size, :width], titles)  # (b, L', Tr)
            u = model.user_vectors(torch.from_numpy(tokens).to(dev), torch.from_numpy(lengths).to(dev))  # (b, H)
            out[start:start + len(lengths)] = u.float().cpu().numpy()
    return out


def save(path: str | Path, model: nn.Module) -> Path:
    """Write PTUM or SUMN (vocabulary size, config as a plain dict, weights) atomically, for ``weights_only`` loads."""
    return io.save_torch(path, {"vocab_size": model.vocab_size, "config": dataclasses.asdict(model.config),
                                "state_dict": model.state_dict()})


def load(model_class: type[nn.Module], path: str | Path, device: torch.device | str | None = "cpu") -> nn.Module:
    """A ``model_class`` (PTUM or SUMN) written by :func:`save`, in eval mode on ``device``."""
    saved = io.load_torch(path)
    model = model_class(saved["vocab_size"], CompetitorConfig(**saved["config"]))
    model.load_state_dict(saved["state_dict"])
    return model.to(io.device(device)).eval()
