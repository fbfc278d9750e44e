"""Run folders: layout, stage stamps' fingerprints and the run-folder lock.

Every notebook reads the artifacts of the notebooks before it from one run folder and
writes its own there (DESIGN.md, "Data flow through the notebooks"). The file names live
in :class:`RunPaths` only, so a notebook, the test suite and the ``run`` command agree on
them. How a file is written (atomically) or read lives in :mod:`lurm_lite.io`.

:func:`file_sha256` and :func:`fingerprint_files` are what stage stamps are made of (the
content of what a stage wrote, :mod:`lurm_lite.chain`), and :func:`run_folder_lock` keeps
two runs from writing one run folder at once.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lurm_lite.io import load_json


class MissingPrerequisite(FileNotFoundError):
    """An artifact of an earlier notebook is absent from the run folder."""


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder's lock."""


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
      ``user_reps.npz`` (user_ids, reps (n_users, M*H) float32), ``smen_loss.json``,
      ``smen_ep<E>.pt`` (the model after E epochs, reused by 08 as its E-epoch reference)
    - 05_downstream and later: ``results.json`` and per-notebook ``NN_*.json``; 05 pre-trains the
      self-supervised competitors once: ``ptum.pt``, ``sumn.pt`` (and ``<name>_ckpt.pt``); 08 caches its
      retrained variants in ``ablations/``, 09 writes Spark's part files in ``spark/``
    - ``probes/``: downstream probe results, one JSON per (representation, task, settings)
      (``downstream.evaluate(cache_dir=...)``), read back by later notebooks that probe the same
      representation; a cache, never a stage's output: deleting it only costs time

    The chain's own files: ``notebooks/`` (executed copies and stamps), ``chain.json`` (stage times).
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

    @property
    def ablations(self) -> Path:
        return self.root / "ablations"

    @property
    def probes(self) -> Path:
        return self.root / "probes"

    @property
    def spark(self) -> Path:
        return self.root / "spark"

    @property
    def chain_log(self) -> Path:
        return self.root / "chain.json"

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

    def smen_snapshot(self, epochs: int) -> Path:
        return self.root / f"smen_ep{int(epochs)}.pt"

    @property
    def smen_loss(self) -> Path:
        return self.root / "smen_loss.json"

    @property
    def user_reps(self) -> Path:
        return self.root / "user_reps.npz"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    def pretrained(self, method: str) -> Path:
        """A self-supervised competitor's model, e.g. ``pretrained("PTUM")`` -> ``ptum.pt``."""
        return self.root / f"{method.lower()}.pt"

    def pretrain_checkpoint(self, method: str) -> Path:
        return self.root / f"{method.lower()}_ckpt.pt"

    def stage_json(self, notebook_stem: str) -> Path:
        """Results JSON of one notebook, e.g. ``stage_json("02_item_embedding")``."""
        return self.root / f"{notebook_stem}.json"

    def figure(self, name: str) -> Path:
        """Path of a PNG figure, e.g. ``figure("item_loss")`` -> ``figures/item_loss.png``."""
        return self.figures / f"{name}.png"

    def dataset_dir(self) -> Path:
        """The dataset folder this run uses, as recorded by notebook 01_data.

        A relative record (see :meth:`relative`) is taken from the run folder, so a copied
        run folder uses its own copy of the dataset.
        """
        self.require(self.stage_json("01_data"), notebook="01_data")
        return self.root / load_json(self.stage_json("01_data"))["dataset_dir"]

    def relative(self, path: str | os.PathLike) -> str:
        """``path`` relative to the run folder when it lies inside it, else absolute.

        What a run folder should record about its own files, so that it can be copied.
        """
        path = Path(path).resolve()
        with contextlib.suppress(ValueError):
            return path.relative_to(self.root.resolve()).as_posix()
        return str(path)

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
# Content fingerprints (stage stamps)
# ---------------------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, streamed (bounded memory for GB-sized artifacts)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def list_files(folder: str | os.PathLike, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, int]]:
    """``{relative posix path: (size, mtime_ns)}`` of the files under ``folder``.

    Hidden names (temporary files of :func:`lurm_lite.io.atomic_path`, the lock) and the top-level
    entries named in ``skip`` are left out.
    """
    folder = Path(folder)
    found: dict[str, tuple[int, int]] = {}
    if not folder.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(folder):
        rel_dir = Path(dirpath).relative_to(folder)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not (rel_dir == Path(".") and d in skip))
        for name in sorted(filenames):
            if name.startswith(".") or (rel_dir == Path(".") and name in skip):
                continue
            stat = (Path(dirpath) / name).stat()
            found[(rel_dir / name).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return found


def fingerprint_files(folder: str | os.PathLike, names: list[str] | dict[str, tuple[int, int]],
                      known: dict[str, dict] | None = None) -> dict[str, dict]:
    """``{name: {"size", "mtime_ns", "sha256"}}`` of files named relative to ``folder``.

    A file whose size and modification time equal those in ``known`` (an earlier
    fingerprint) keeps its recorded hash instead of being read again; any other is hashed.
    A missing file gets ``{"missing": True}``.
    """
    folder, known = Path(folder), known or {}
    prints: dict[str, dict] = {}
    for name in names:
        path = folder / name
        try:
            stat = path.stat()
        except FileNotFoundError:
            prints[name] = {"missing": True}
            continue
        seen = known.get(name, {})
        if seen.get("size") == stat.st_size and seen.get("mtime_ns") == stat.st_mtime_ns and "sha256" in seen:
            sha = seen["sha256"]
        else:
            sha = file_sha256(path)
        prints[name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
    return prints


# ---------------------------------------------------------------------------------------
# Run folder lock
# ---------------------------------------------------------------------------------------

LOCK_NAME = ".lurm_lite.lock"


def _describe_holder(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"(started {holder.get('started', '?')})")


def _read_holder(fd: int) -> dict:
    raw = os.pread(fd, 4096, 0)
    try:
        holder = json.loads(raw.decode()) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        holder = {"pid": "?", "host": "?", "started": "? (unreadable lock file)"}
    return holder if isinstance(holder, dict) else {}


@contextlib.contextmanager
def run_folder_lock(root: str | os.PathLike, log=print) -> Iterator[bool]:
    """Hold the exclusive lock of run folder ``root`` for the ``with`` block.

    The lock is an ``fcntl.flock`` on ``root/.lurm_lite.lock``, so the kernel releases it
    when its holder dies, however it dies; the file records who holds it (pid, host, start
    time) for the message a second run gets. A second run raises :class:`RunFolderBusy`
    at once instead of waiting. A record left by a holder that died without unlocking is
    reported and taken over.

    Yields ``True`` when the lock is held, ``False`` when the folder is not writable (no
    lock is needed to read it; the caller must then not write).
    """
    path = Path(root) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        fd = None
    if fd is None:
        yield False
        return
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise RunFolderBusy(
                f"run folder {root} is in use by another run: {_describe_holder(holder)}. "
                f"Wait for it to finish (or stop it: kill {holder.get('pid', '<pid>')}), "
                "or pass another --run-dir."
            ) from None
        locked = True
        stale = _read_holder(fd)
        if stale:
            log(f"[lurm_lite] taking over the lock of run folder {root} left by {_describe_holder(stale)}, "
                "which is no longer running")
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        yield True
    finally:
        if locked:
            os.ftruncate(fd, 0)  # an empty record: released cleanly, nothing stale to report
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
