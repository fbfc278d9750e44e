"""Run folders: layout, atomic save/load, results JSON, seeds and the compute device.

Every notebook reads the artifacts of the notebooks before it from one run folder and
writes its own there (DESIGN.md, "Data flow through the notebooks"). The file names live
in :class:`RunPaths` only, so a notebook, the test suite and the ``run`` command agree on
them. Every write goes to a temporary file in the same folder followed by ``os.replace``,
so a killed run never leaves a half-written artifact behind: a file either is complete or
is absent, and the stage that owns it can simply run again.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np


class MissingPrerequisite(FileNotFoundError):
    """An artifact of an earlier notebook is absent from the run folder."""


# ---------------------------------------------------------------------------------------
# Run folder layout
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPaths:
    """The fixed layout of a run folder ``runs/<name>/``.

    Stage outputs (written by notebook NN, read by later ones):

    - 01_data: ``dataset/`` (the contract folder, or ``dataset.json`` pointing at one),
      ``text.json`` (vocabulary, Tr)
    - 02_item_embedding: ``item_encoder.pt``, ``item_embeddings.npy`` (n_items, H) float32,
      ``item_loss.json``
    - 03_interests_boi: ``centroids.npy`` (D, H), ``item_interest.npy`` (n_items,) int64,
      ``boi_month.npz``, ``boi_year.npz``
    - 04_smen: ``smen.pt`` (final model), ``smen_ckpt.pt`` (resume checkpoint),
      ``user_reps.npz`` (user_ids, reps (n_users, M*H) float32), ``smen_loss.json``
    - 05_downstream and later: ``results.json`` and per-notebook ``NN_*.json``
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # folders
    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    # stage artifacts
    @property
    def text(self) -> Path:
        return self.root / "text.json"

    @property
    def item_encoder(self) -> Path:
        return self.root / "item_encoder.pt"

    @property
    def item_embeddings(self) -> Path:
        return self.root / "item_embeddings.npy"

    @property
    def item_loss(self) -> Path:
        return self.root / "item_loss.json"

    @property
    def centroids(self) -> Path:
        return self.root / "centroids.npy"

    @property
    def item_interest(self) -> Path:
        return self.root / "item_interest.npy"

    def boi(self, granularity: str) -> Path:
        return self.root / f"boi_{granularity}.npz"

    @property
    def smen(self) -> Path:
        return self.root / "smen.pt"

    @property
    def smen_checkpoint(self) -> Path:
        return self.root / "smen_ckpt.pt"

    @property
    def smen_loss(self) -> Path:
        return self.root / "smen_loss.json"

    @property
    def user_reps(self) -> Path:
        return self.root / "user_reps.npz"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    def stage_json(self, notebook_stem: str) -> Path:
        """Results JSON of one notebook, e.g. ``stage_json("02_item_embedding")``."""
        return self.root / f"{notebook_stem}.json"

    def figure(self, name: str) -> Path:
        """Path of a PNG figure, e.g. ``figure("item_loss")`` -> ``figures/item_loss.png``."""
        return self.figures / f"{name}.png"

    def dataset_dir(self) -> Path:
        """The dataset folder this run uses, as recorded by notebook 01_data."""
        self.require(self.stage_json("01_data"), notebook="01_data")
        return Path(load_json(self.stage_json("01_data"))["dataset_dir"])

    def make(self) -> "RunPaths":
        """Create the run folder and its sub-folders; returns ``self``."""
        for folder in (self.root, self.figures, self.notebooks):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def require(self, *paths: Path, notebook: str) -> None:
        """Stop with a clear message when an earlier stage's artifacts are missing.

        ``notebook`` names the notebook that writes them, e.g. ``"02_item_embedding"``.
        """
        missing = [str(p) for p in paths if not Path(p).exists()]
        if missing:
            raise MissingPrerequisite(
                f"Missing {', '.join(missing)} in run folder {self.root}. "
                f"Run notebooks/{notebook}.ipynb first with RUN_DIR={str(self.root)!r} "
                f"(or `python -m lurm_lite run --run-dir {self.root}`)."
            )


# ---------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path`` atomically.

    The temporary file keeps ``path``'s suffix, so libraries that infer a format from it
    (``np.save``, ``torch.save``, pyarrow) behave as for the final name. On an exception
    the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (numpy scalars and arrays converted)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    return Path(path)


def load_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """``np.save`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array))
    return Path(path)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """``np.savez`` (uncompressed) atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return Path(path)


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` atomically (checkpoints, encoders)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serialisable")


# ---------------------------------------------------------------------------------------
# Seeds and device
# ---------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and every CUDA device) for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return
    torch.manual_seed(seed)


def device(preference: str = "auto"):
    """The one place that picks the compute device (DESIGN.md, performance principles).

    ``"auto"`` picks cuda, then mps, then cpu; any other value (``"cpu"``, ``"cuda"``,
    ``"cuda:1"``, ``"mps"``) is taken as given, with a clear error when it is absent.
    """
    import torch

    if preference in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    chosen = torch.device(preference)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE={preference!r} was asked for but torch sees no CUDA GPU; use 'auto' or 'cpu'.")
    if chosen.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"DEVICE={preference!r} was asked for but MPS is not available; use 'auto' or 'cpu'.")
    return chosen
