"""Pools of simulated subtomograms for episodic training and validation.

A pool holds ``items_per_class`` subtomograms of each structure, spread evenly
over several SNR levels (the mixed-SNR strategy of the ProtoNet-CE paper,
Section 4.2). Training classes are procedural pseudo-molecules plus the bundled
*training* maps; validation uses other procedural numbers; the bundled *novel*
maps are never used here.

Augmentation respects the missing wedge: only the 180-degree rotations about x,
y and z keep a wedge around the y tilt axis where it is (any other rotation would
tilt the wedge into an orientation real data never has), and they keep
handedness, unlike mirror flips.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from cryoshot.data.transforms import FLIPS, apply_flips
from cryoshot.simulate.splits import TRAIN_STRUCTURES
from cryoshot.simulate.structures import load_structures
from cryoshot.simulate.subtomograms import SubtomogramConfig, SubtomogramSimulator, config_with_overrides

VALIDATION_OFFSET = 100_000  # procedural numbers used for validation classes


@dataclass
class PoolConfig:
    """What a pool contains."""

    n_procedural: int = 200
    procedural_offset: int = 0
    bundled: list[str] = field(default_factory=lambda: list(TRAIN_STRUCTURES))
    items_per_class: int = 24
    snrs: list[float] = field(default_factory=lambda: [0.1, 0.05, 0.03])
    box_px: int = 40
    pixel_size_A: float = 10.0
    seed: int = 0
    # SubtomogramConfig settings other than box, pixel size, SNR and seed (shift range, tilts, defocus,
    # ``microscope.b_factor_A2``, ...); empty: the simulator's defaults. See ``config_with_overrides``.
    simulator: dict = field(default_factory=dict)

    def subtomogram_config(self, snr: float, seed: int) -> SubtomogramConfig:
        """The simulator settings of one SNR level of this pool (validated)."""
        return config_with_overrides(self.simulator, box_px=self.box_px, pixel_size_A=self.pixel_size_A, snr=snr,
                                     seed=seed)  # fmt: skip

    def to_dict(self) -> dict:
        return asdict(self)

    def structure_specs(self) -> list[str]:
        a = self.procedural_offset
        procedural = [f"procedural:{i}" for i in range(a, a + self.n_procedural)]
        return procedural + list(self.bundled)


class VolumePool:
    """In-memory subtomograms, ``volumes`` (C, M, D, D, D) float16, one row per class."""

    def __init__(self, config: PoolConfig, progress: bool = True):
        self.config = config
        specs = config.structure_specs()
        structs = load_structures(specs, config.pixel_size_A, config.box_px, seed=0)
        self.names = [s.name for s in structs]
        c, m, d = len(structs), config.items_per_class, config.box_px
        vols = torch.empty((c, m, d, d, d), dtype=torch.float16)
        n_levels = len(config.snrs)
        per_level = [len(range(k, m, n_levels)) for k in range(n_levels)]
        bar = tqdm(total=c * m, desc="simulating training pool", unit="vol", disable=not progress)
        for level, snr in enumerate(config.snrs):
            sim = SubtomogramSimulator(structs, config.subtomogram_config(snr, config.seed + level))
            n_items = per_level[level] * c
            slots = list(range(level, m, n_levels))
            for start in range(0, n_items, 256):
                b = sim.simulate(range(start, min(start + 256, n_items)), with_clean=False)
                for k, i in enumerate(b.indices):
                    vols[i % c, slots[i // c]] = torch.from_numpy(b.volumes[k]).half()
                bar.update(len(b.indices))
        bar.close()
        self.volumes = vols

    @property
    def n_classes(self) -> int:
        return self.volumes.shape[0]

    def episode_indices(
        self, way: int, shot: int, query: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """The classes (way,) and, per class, the items (way, shot + query) of one episode; supports first."""
        classes = rng.choice(self.n_classes, size=way, replace=False)
        m = self.volumes.shape[1]
        items = np.stack([rng.choice(m, size=shot + query, replace=False) for _ in classes])
        return classes, items

    def episode_plan(
        self, way: int, shot: int, query: int, rng: np.random.Generator, augment: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Which pool items, in which rotation, make one episode (support then query order).

        Returns class indices (n,), item indices (n,) and the wedge-preserving rotation of
        each (n,) as an index into ``FLIPS`` (all 0 without ``augment``), n = way*(shot+query).
        ``episode`` and the embedding cache of ProtoNet-CE training both follow this plan,
        so they see the same episodes for the same ``rng``.
        """
        classes, items = self.episode_indices(way, shot, query, rng)
        cls = np.concatenate([np.repeat(classes, shot), np.repeat(classes, query)])
        its = np.concatenate([items[:, :shot].ravel(), items[:, shot:].ravel()])
        flips = rng.integers(len(FLIPS), size=len(cls)) if augment else np.zeros(len(cls), dtype=np.int64)
        return cls, its, flips

    def episode(
        self, way: int, shot: int, query: int, rng: np.random.Generator, augment: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One episode: volumes (way*(shot+query), D, D, D) float32 ordered support then query,
        with support targets (way*shot,) and query targets (way*query,)."""
        cls, its, flips = self.episode_plan(way, shot, query, rng, augment)
        x = apply_flips(self.volumes[torch.as_tensor(cls), torch.as_tensor(its)].float(), flips)
        ts = torch.arange(way).repeat_interleave(shot)
        tq = torch.arange(way).repeat_interleave(query)
        return x, ts, tq

    def batch(
        self, n_classes: int, per_class: int, rng: np.random.Generator, augment: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A class-balanced batch: ``per_class`` items of each of ``n_classes`` random classes.

        Returns volumes (n_classes * per_class, D, D, D) float32 and global class indices.
        """
        classes = rng.choice(self.n_classes, size=n_classes, replace=False)
        m = self.volumes.shape[1]
        x = torch.cat([self.volumes[c, rng.choice(m, size=per_class, replace=False)].float() for c in classes])
        if augment:
            x = wedge_preserving_rotation(x, rng)
        return x, torch.as_tensor(classes).repeat_interleave(per_class)


def wedge_preserving_rotation(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Apply to each (D, D, D) volume of x one of the four wedge-preserving 180-degree rotations."""
    return apply_flips(x, rng.integers(len(FLIPS), size=len(x)))
