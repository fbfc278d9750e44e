"""Plain I/O below the method: atomic writes, JSON, numpy and torch files, seeds, the device.

Every artifact lurm_lite or data_prep writes goes to a temporary file in the same folder
followed by ``os.replace`` (:func:`atomic_path`), so a killed run never leaves a
half-written file behind: a file either is complete or is absent, and the stage that owns
it can simply run again. Files get the modes of an ordinary file under the process umask
(0644 with the usual 022), so a shared run folder is readable by the team.
:func:`load_torch` opens model files and checkpoints without running code.
:func:`device` is the one place that picks the compute device.

A leaf module: the standard library and numpy, torch imported only inside the functions
that need it, so data_prep imports it without loading torch or the method.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

if TYPE_CHECKING:
    import torch


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
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would hide shared artifacts
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (thread-safe)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore, the only portable way to read it
    os.umask(mask)
    return mask


def update_digest(digest: "hashlib._Hash", *arrays: np.ndarray) -> None:
    """Feed the dtype and every byte of each array to ``digest`` (e.g. ``hashlib.sha256()``).

    All bytes are hashed, not a sample (about 1 GB/s): a sample could miss a changed value.
    Shapes are not fed: the caller adds what tells arrays of equal bytes apart.
    """
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str(array.dtype).encode())
        digest.update(memoryview(array).cast("B"))


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


class UnsafeArtifact(ValueError):
    """A torch file holds more than tensors and plain data, so it is not opened."""


def load_torch(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain data only.

    Opening a shared run folder must not run code, and a full unpickler would run whatever
    a ``.pt`` file asks it to. A file that holds other objects (written by an older
    lurm_lite, or crafted) raises :class:`UnsafeArtifact` naming the file.
    """
    import pickle

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[-1][:200]
        raise UnsafeArtifact(
            f"{path} holds objects other than tensors and plain data, so it is not opened "
            f"(torch: {reason}); rerun the stage that writes it (e.g. --force) to rewrite it"
        ) from None


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


def rng_states() -> dict:
    """Python's, numpy's and torch's (CPU, and every CUDA device when there is one) global RNG states.

    As plain data for ``weights_only`` checkpoint loads: ``{"python": random.getstate(),
    "numpy": np.random.get_state(legacy=False) with its key as a list of ints, "torch": the
    CPU state tensor[, "cuda": one state tensor per device]}``. :func:`set_rng_states` puts
    them back.
    """
    import torch

    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    states = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore the global RNG states of :func:`rng_states`.

    Only the generators ``states`` holds are set (a checkpoint written with torch's states
    alone leaves Python's and numpy's as they are); CUDA's only when a CUDA device is present.
    """
    import torch

    if "python" in states:
        random.setstate(states["python"])
    if "numpy" in states:
        numpy_state = {**states["numpy"], "state": {**states["numpy"]["state"]}}
        numpy_state["state"]["key"] = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
        np.random.set_state(numpy_state)
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"  # CUBLAS_WORKSPACE_CONFIG that makes cuBLAS deterministic (CUDA >= 10.2)


def device(preference: str | torch.device | None = None) -> torch.device:
    """The one place that picks the compute device (DESIGN.md, performance principles).

    ``preference``: None, ``""`` or ``"auto"`` picks cuda, then mps, then cpu; any other
    string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) or a ``torch.device`` is taken
    as given, with a clear error when it is absent. Returns a ``torch.device``. Picking CUDA
    sets ``CUBLAS_WORKSPACE_CONFIG`` (when unset) before any cuBLAS call, which
    :func:`deterministic_kernels` needs.
    """
    import torch

    mps = getattr(torch.backends, "mps", None)
    mps_available = mps is not None and mps.is_available()
    if preference is None or (isinstance(preference, str) and preference in ("", "auto")):
        chosen = torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available else "cpu")
    else:
        chosen = torch.device(preference)
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"DEVICE={preference!r} was asked for but torch sees no CUDA GPU; use 'auto' or 'cpu'.")
        if chosen.type == "mps" and not mps_available:
            raise RuntimeError(f"DEVICE={preference!r} was asked for but MPS is not available; use 'auto' or 'cpu'.")
    if chosen.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    return chosen


@contextlib.contextmanager
def deterministic_kernels(dev: torch.device) -> Iterator[None]:
    """Training on CUDA that gives the same bits for the same seed; the caller's mode is restored after.

    CUDA sums gradient contributions that share a target (the backward of ``index_select``
    and ``index_add_``, as in eq. (5)-(6)'s AnchorBags) with atomic additions in a varying
    order. Measured on an H200 (torch 2.11, the default scale): two one-epoch SMEN trainings
    with the same seed ended up to 6.3e-3 apart in W^e, W^a and W^p; under
    ``torch.use_deterministic_algorithms`` they were identical to the bit, at 3% more time
    per epoch (1.39 s against 1.35 s). Strict, not warn-only: every operation of the kit's
    training loops (item encoder, SMEN with and without AMP, PTUM, SUMN, TextCNN, HAN) has a
    deterministic kernel there, and PTUM's memory-efficient attention takes its
    deterministic one only in strict mode (warn-only, it warned and stayed non-deterministic).
    An operation without one raises torch's error, which names it. cuBLAS also needs
    ``CUBLAS_WORKSPACE_CONFIG`` (set by :func:`device` when it picks CUDA, before any cuBLAS
    call). On the CPU nothing changes: its kernels give the same bits already.
    """
    import torch

    if dev.type != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def resumable_checkpoint(path: str | Path, device, why_not: Callable[[dict], str | None], restart: str) -> dict | None:
    """The checkpoint at ``path`` (:func:`load_torch` onto ``device``) when ``why_not(ckpt)`` is None.

    Otherwise None, after printing ``not resuming PATH: REASON; RESTART``: the reason is
    ``why_not``'s, or that the file is not a dict, holds pickled objects or cannot be read.
    The one rule of every resumable training loop (SMEN, PTUM, SUMN).
    """
    try:
        ckpt = load_torch(path, map_location=device)
        reason = why_not(ckpt) if isinstance(ckpt, dict) else "it is not a checkpoint"
    except UnsafeArtifact:
        reason = "it holds objects other than tensors and plain data (an older lurm_lite's format)"
    except (RuntimeError, EOFError, KeyError, OSError) as exc:
        reason = f"it cannot be read ({type(exc).__name__}: {str(exc)[:120]})"
    if reason is None:
        return ckpt
    print(f"[lurm_lite] not resuming {path}: {reason}; {restart}")
    return None

