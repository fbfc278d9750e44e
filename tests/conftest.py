"""Shared fixtures: the tiny synthetic dataset (data_prep.synthetic, scale ``tiny``, seed 0), and a
recorder of the devices training loops enter ``io.deterministic_kernels`` with."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A contract folder of the synthetic dataset at scale ``tiny`` with seed 0 (~0.3 s)."""
    from data_prep.synthetic import generate

    return generate(tmp_path_factory.mktemp("data") / "synthetic-tiny", scale="tiny", seed=0)


@pytest.fixture()
def deterministic_entries(monkeypatch) -> list:
    """The devices ``lurm_lite.io.deterministic_kernels`` is entered with, in order (the real one runs too)."""
    from lurm_lite import io

    entries, real = [], io.deterministic_kernels

    @contextlib.contextmanager
    def recording(dev):
        entries.append(dev)
        with real(dev):
            yield

    monkeypatch.setattr(io, "deterministic_kernels", recording)
    return entries
