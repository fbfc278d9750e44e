"""Shared fixtures: the tiny synthetic dataset (data_prep.synthetic, scale ``tiny``, seed 0)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A contract folder of the synthetic dataset at scale ``tiny`` with seed 0 (~0.3 s)."""
    from data_prep.synthetic import generate

    return generate(tmp_path_factory.mktemp("data") / "synthetic-tiny", scale="tiny", seed=0)
