"""Explicit, per-item random generators.

Simulation item ``i`` is a pure function of ``(seed, i)``: each item draws from
its own ``numpy.random.Generator`` seeded with the pair, never from global state.
"""

from __future__ import annotations

import numpy as np


def item_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """Return the generator for item ``index`` of a run seeded with ``seed``.

    ``stream`` separates independent uses (e.g. structures vs. particles).
    """
    return np.random.default_rng([int(seed), int(stream), int(index)])
