"""The exemplars' template and its normalised cross-correlation: a second, classical opinion on each candidate.

The exemplar windows are averaged and then rotationally averaged (their in-plane angles are
unknown), giving a blurred template of the particle. Its normalised cross-correlation (NCC)
with the micrograph ranks candidates differently from the encoder's cosine, and on the
training structures the two together rank better than either (docs/benchmarks.md, "Re-ranking
the candidates"): ``picking.merit.fuse_scores`` mixes them, each standardised over one
micrograph's candidates.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

TEMPLATE_ANGLES = 24  # rotations averaged (every 15°)


def exemplar_template(windows: np.ndarray) -> np.ndarray:
    """(W, W) float32: the mean of the exemplar windows (N, 1, W, W), averaged over in-plane rotations."""
    mean = np.asarray(windows, np.float64).reshape(len(windows), *windows.shape[-2:]).mean(0)
    angles = np.arange(TEMPLATE_ANGLES) * 360.0 / TEMPLATE_ANGLES
    rot = np.mean([ndimage.rotate(mean, a, reshape=False, mode="nearest") for a in angles], axis=0)
    return rot.astype(np.float32)


def ncc_map(image: np.ndarray, template: np.ndarray) -> np.ndarray:
    """(h, w) NCC of ``template`` centred at every pixel of ``image`` (reflect-padded at the edges), in [-1, 1]."""
    t = (template - template.mean()) / (template.std() + 1e-6)
    w = t.shape[0]
    pad = (w // 2, w - 1 - w // 2, w // 2, w - 1 - w // 2)
    p = F.pad(torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None], pad, mode="reflect")
    num = F.conv2d(p, torch.from_numpy(t.astype(np.float32))[None, None])
    ones = torch.ones(1, 1, w, w)
    mu = F.conv2d(p, ones) / w**2
    var = F.conv2d(p**2, ones) / w**2 - mu**2
    return (num / (torch.sqrt(var.clamp_min(1e-6)) * w**2))[0, 0].numpy()


def ncc_at(ncc: np.ndarray, xy: np.ndarray, radius: int = 2) -> np.ndarray:
    """(N,) the highest NCC within ``radius`` pixels of each (x, y) in ``xy`` (N, 2), image pixels."""
    peak = ndimage.maximum_filter(ncc, size=2 * radius + 1, mode="nearest")
    ix = np.clip(np.rint(xy[:, 0]).astype(int), 0, ncc.shape[1] - 1)
    iy = np.clip(np.rint(xy[:, 1]).astype(int), 0, ncc.shape[0] - 1)
    return peak[iy, ix]
