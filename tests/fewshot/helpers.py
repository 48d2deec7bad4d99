"""Tiny seeded toy data and models for few-shot tests (seconds, no training needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from cryoshot.data.synthetic import PoolConfig
from cryoshot.io.mrc import write_mrc
from cryoshot.io.star import write_star
from cryoshot.models.checkpoint import save_checkpoint
from cryoshot.train.loop import TrainConfig, build_model

BOX = 16


def toy_shape(kind: int, rng: np.random.Generator, noise: float = 0.2) -> np.ndarray:
    """Easy toy classes: a ball, a bar, a plate, a ring, a pair of balls, a cube (16^3), plus noise."""
    z, y, x = (np.indices((BOX,) * 3) - BOX // 2).astype(float)
    r = np.sqrt(x**2 + y**2 + z**2)
    shapes = [
        r < 4,
        (np.abs(x) < 6) & (np.abs(y) < 1.5) & (np.abs(z) < 1.5),
        (np.abs(z) < 1.5) & (np.abs(x) < 5) & (np.abs(y) < 5),
        (np.abs(np.sqrt(x**2 + y**2) - 5) < 1.2) & (np.abs(z) < 1.5),
        (np.sqrt((x - 4) ** 2 + y**2 + z**2) < 2.5) | (np.sqrt((x + 4) ** 2 + y**2 + z**2) < 2.5),
        (np.abs(x) < 3) & (np.abs(y) < 3) & (np.abs(z) < 3),
    ]
    return shapes[kind].astype(np.float32) + noise * rng.standard_normal((BOX,) * 3).astype(np.float32)


def write_toy_set(folder, kinds: list[int], per_class: int, seed: int = 0, label_offset: int = 1):
    """A subtomogram set of toy shapes; returns the STAR path."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in kinds:
        for i in range(per_class):
            name = f"k{k}_{i:03d}.mrc"
            write_mrc(folder / name, toy_shape(k, rng), 10.0)
            rows.append({"rlnImageName": name, "rlnClassNumber": k + label_offset})
    star = folder / "particles.star"
    write_star(star, pd.DataFrame(rows))
    return star


def tiny_config(method: str = "protonet-ce", **kw) -> TrainConfig:
    pool = PoolConfig(n_procedural=6, bundled=[], items_per_class=6, box_px=BOX, pixel_size_A=10.0)
    base = dict(method=method, encoder="cryoshot-tiny", way=3, shot=2, query=2, episodes=4, lr=1e-3,
                pool=pool, val_classes=3, val_items_per_class=4, val_every=2, val_episodes=2)  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def tiny_checkpoint(path, method: str = "protonet-ce", seed: int = 0):
    """A randomly initialised tiny model saved as a real checkpoint."""
    torch.manual_seed(seed)
    cfg = tiny_config(method)
    model = build_model(cfg)
    model.eval()
    save_checkpoint(path, {"state_dict": model.state_dict(), "config": cfg.to_dict(), "method": method, "seed": seed})
    return path
