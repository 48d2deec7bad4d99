"""Shared fixtures: one thread (steadier timing), tiny seeded data, no network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def small_structures():
    """Two bundled structures on a 24^3 box at 16 Å (fast)."""
    from cryoshot.simulate.structures import load_structures

    return load_structures(["1bxn", "4v4r"], 16.0, 24)
