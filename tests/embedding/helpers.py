"""Tiny 2D particle sets and Siamese checkpoints for fast tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cryoshot.embedding.align2d import rotate_images, shift_images
from cryoshot.io.mrc import write_mrc
from cryoshot.io.star import write_star


def toy_views(box: int = 32) -> np.ndarray:
    """Two clearly different, asymmetric clean images (2, box, box): an 'L' of blobs and a bar with a knob."""
    y, x = np.mgrid[:box, :box] - box // 2
    s = box / 32

    def blob(cx, cy, r):
        return np.exp(-((x - cx * s) ** 2 + (y - cy * s) ** 2) / (2 * (r * s) ** 2))

    a = blob(-5, -5, 2.5) + blob(-5, 1, 2.5) + blob(-5, 7, 2.5) + blob(1, -5, 2.5) + blob(7, -5, 2.5)
    b = blob(0, -6, 2) + blob(0, -2, 2) + blob(0, 2, 2) + blob(0, 6, 2) + 1.5 * blob(6, 6, 3)
    return np.stack([a, b]).astype(np.float32)


def rotated_copies(img: np.ndarray, n: int, seed: int = 0, max_shift: float = 2.0, noise: float = 0.0):
    """``n`` randomly rotated and shifted copies of ``img`` (D, D), with Gaussian noise of std ``noise``."""
    rng = np.random.default_rng(seed)
    ang = torch.tensor(rng.uniform(0, 360, n), dtype=torch.float32)
    sh = torch.tensor(rng.uniform(-max_shift, max_shift, (n, 2)), dtype=torch.float32)
    x = shift_images(rotate_images(torch.from_numpy(img)[None].repeat(n, 1, 1), ang), sh).numpy()
    return (x + rng.normal(0, noise, x.shape)).astype(np.float32)


def write_toy_particles(folder: Path, per_view: int = 8, box: int = 32, angpix: float = 10.0, noise: float = 0.3,
                        seed: int = 0, optics: bool = True) -> Path:  # fmt: skip
    """A RELION-style particle set of the two toy views: ``particles.mrcs`` + ``particles.star``.

    Labels in ``rlnClassNumber`` (1, 2); defocus columns and an optics block when ``optics``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    views = toy_views(box)
    imgs = np.concatenate([rotated_copies(v, per_view, seed + i, noise=noise) for i, v in enumerate(views)])
    labels = np.repeat([1, 2], per_view)
    order = np.random.default_rng(seed).permutation(len(imgs))
    imgs, labels = imgs[order], labels[order]
    write_mrc(folder / "particles.mrcs", imgs, angpix, stack=True)
    table = pd.DataFrame({"rlnImageName": [f"{i + 1:06d}@particles.mrcs" for i in range(len(imgs))],
                          "rlnClassNumber": labels})  # fmt: skip
    if optics:
        table["rlnOpticsGroup"] = 1
        table["rlnDefocusU"] = 15000.0
        table["rlnDefocusV"] = 14500.0
        table["rlnDefocusAngle"] = 30.0
        opt = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"], "rlnImagePixelSize": [angpix],
                            "rlnImageSize": [box], "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7],
                            "rlnAmplitudeContrast": [0.1]})  # fmt: skip
        write_star(folder / "particles.star", {"optics": opt, "particles": table})
    else:
        write_star(folder / "particles.star", table)
    return folder / "particles.star"


def tiny_siamese(path: Path, box: int = 32, angpix: float = 10.0, seed: int = 0) -> Path:
    """An untrained, small polar Siamese checkpoint (fast CLI runs)."""
    from cryoshot.models.checkpoint import save_checkpoint
    from cryoshot.models.siamese2d import SiameseConfig, SiameseNet

    cfg = SiameseConfig(box_px=box, pixel_size_A=angpix, channels=(4, 8, 8), dense=(16, 8, 8), lowpass_px=box)
    torch.manual_seed(seed)
    save_checkpoint(path, {"state_dict": SiameseNet(cfg).state_dict(), "config": {"model": cfg.to_dict()},
                           "method": "siamese", "seed": seed})  # fmt: skip
    return path
