"""Stage 2 of cryoMAE (§3.3): slide the encoder over a micrograph, score windows, keep one peak per particle."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial import cKDTree

from cryoshot.models.mae2d import PickerMAE


def pad_for_scan(image: np.ndarray, window: int, particle: int) -> tuple[np.ndarray, int]:
    """Reflect-pad so window centres reach to a quarter particle from the edge; returns (padded, pad)."""
    pad = max(0, window // 2 - particle // 4)
    if pad == 0:
        return image, 0
    mode = "reflect" if min(image.shape) > pad else "edge"
    return np.pad(image, pad, mode=mode), pad


def windows_at(image: np.ndarray, xy: np.ndarray, window: int) -> np.ndarray:
    """(N, 1, W, W) windows centred (to the nearest pixel) at binned coordinates ``xy`` (N, 2).

    Windows reaching past the edge are filled by reflection.
    """
    padded = np.pad(image, window, mode="reflect" if min(image.shape) > window else "edge")
    x0 = np.rint(np.asarray(xy)[:, 0] - (window - 1) / 2).astype(int) + window
    y0 = np.rint(np.asarray(xy)[:, 1] - (window - 1) / 2).astype(int) + window
    out = np.empty((len(x0), 1, window, window), np.float32)
    for k, (x, y) in enumerate(zip(x0, y0, strict=True)):
        out[k, 0] = padded[y : y + window, x : x + window]
    return out


@torch.no_grad()
def encode_windows(
    model: PickerMAE, windows: np.ndarray | torch.Tensor, batch: int = 2048, center: torch.Tensor | None = None
) -> torch.Tensor:
    """(N, 1, W, W) windows -> (N, dim) unit-norm features (after subtracting ``center`` when given)."""
    model.eval()
    x = torch.as_tensor(windows)
    outs = [model.features(x[i : i + batch]) for i in range(0, len(x), batch)]
    f = torch.cat(outs) if outs else torch.zeros(0, model.config.dim)
    return F.normalize(f - center if center is not None else f, dim=1)


@torch.no_grad()
def background_mean(model: PickerMAE, image: np.ndarray, n: int = 2048, seed: int = 0) -> torch.Tensor | None:
    """Mean raw feature of ``n`` random windows of a binned micrograph (None without feature centring)."""
    if not model.config.center_features:
        return None
    rng = np.random.default_rng([seed, 31])
    xy = np.stack([rng.uniform(0, image.shape[1] - 1, n), rng.uniform(0, image.shape[0] - 1, n)], axis=1)
    model.eval()
    return model.features(torch.from_numpy(windows_at(image, xy, model.config.window_px))).mean(dim=0)


def exemplar_features(model: PickerMAE, image: np.ndarray, xy: np.ndarray, seed: int = 0) -> torch.Tensor:
    """Unit-norm (centred) features of exemplar windows at binned ``xy`` (N, 2) on one micrograph."""
    return encode_windows(model, windows_at(image, xy, model.config.window_px),
                          center=background_mean(model, image, seed=seed))  # fmt: skip


@torch.no_grad()
def score_map(
    model: PickerMAE,
    image: np.ndarray,
    exemplars: torch.Tensor,
    stride: int,
    matching: str = "max",
    batch: int = 1024,
    exclude: tuple[np.ndarray, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every window's similarity to the exemplars.

    Parameters
    ----------
    image : (h, w) binned micrograph
    exemplars : (m, dim) unit-norm exemplar features
    stride : window step (binned pixels)
    matching : ``max`` (highest cosine to any exemplar, the paper's) or ``mean`` (Table 5's ablation)
    exclude : ``(xy, radius)``: the exemplars' own binned positions (m, 2) on this micrograph and a
        radius (binned px); a window within ``radius`` of exemplar j ignores exemplar j, so an
        exemplar is scored by the others only (leave-one-out, used to calibrate thresholds)

    Returns
    -------
    scores : (gy, gx) float32
    xs, ys : (gx,), (gy,) binned coordinates of the window centres
    """
    cfg = model.config
    w = cfg.window_px
    padded, pad = pad_for_scan(image, w, cfg.particle_px)
    dev = next(model.parameters()).device  # a GPU worker's model (--device cuda); the CPU otherwise
    t = torch.from_numpy(np.ascontiguousarray(padded))[None, None].to(dev)
    gy = (padded.shape[0] - w) // stride + 1
    gx = (padded.shape[1] - w) // stride + 1
    model.eval()
    ex = exemplars.to(dev, torch.float32)
    rows_per_batch = max(1, batch // max(gx, 1))
    feats = []
    for r0 in range(0, gy, rows_per_batch):
        r1 = min(gy, r0 + rows_per_batch)
        strip = t[..., r0 * stride : (r1 - 1) * stride + w, :]
        win = F.unfold(strip, w, stride=stride)  # (1, w*w, rows*gx)
        feats.append(model.features(win[0].T.reshape(-1, 1, w, w)))
    f = torch.cat(feats)
    if cfg.center_features:  # the mean over all windows: this micrograph's background
        f = f - f.mean(dim=0, keepdim=True)
    sim = F.normalize(f, dim=1) @ ex.T
    offs = (w - 1) / 2 - pad
    xs, ys = np.arange(gx) * stride + offs, np.arange(gy) * stride + offs
    if exclude is not None:
        exy, radius = np.asarray(exclude[0], float).reshape(-1, 2), float(exclude[1])
        gxx, gyy = np.meshgrid(xs, ys)  # (gy, gx) window centres, row-major like ``sim``
        d2 = (gxx.reshape(-1, 1) - exy[:, 0]) ** 2 + (gyy.reshape(-1, 1) - exy[:, 1]) ** 2
        sim = sim.masked_fill(torch.from_numpy(d2 <= radius**2).to(sim.device), float("nan"))
        s = sim.nan_to_num(-1.0).max(dim=1).values if matching == "max" else sim.nanmean(dim=1)
    else:
        s = sim.max(dim=1).values if matching == "max" else sim.mean(dim=1)
    scores = s.reshape(gy, gx).float().cpu().numpy()
    return scores, xs, ys


def _subpixel(scores: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parabolic refinement of peak positions on the score grid (offsets in grid steps, within ±0.5)."""
    gy, gx = scores.shape

    def fit(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        den = a - 2 * b + c
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.where(den < 0, 0.5 * (a - c) / den, 0.0)
        return np.clip(off, -0.5, 0.5)

    ym, yp = np.clip(iy - 1, 0, gy - 1), np.clip(iy + 1, 0, gy - 1)
    xm, xp = np.clip(ix - 1, 0, gx - 1), np.clip(ix + 1, 0, gx - 1)
    b = scores[iy, ix]
    dy = np.where((iy > 0) & (iy < gy - 1), fit(scores[ym, ix], b, scores[yp, ix]), 0.0)
    dx = np.where((ix > 0) & (ix < gx - 1), fit(scores[iy, xm], b, scores[iy, xp]), 0.0)
    return dy, dx


def peaks(scores: np.ndarray, xs: np.ndarray, ys: np.ndarray, min_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Non-maximum suppression: local maxima at least ``min_distance`` (binned px) apart, best first.

    Returns
    -------
    xy : (N, 2) binned coordinates (sub-step refined)
    score : (N,) descending
    """
    step = float(xs[1] - xs[0]) if len(xs) > 1 else float(ys[1] - ys[0]) if len(ys) > 1 else 1.0
    r = max(1, int(min_distance / step))
    local = scores == ndimage.maximum_filter(scores, size=2 * r + 1, mode="nearest")
    iy, ix = np.nonzero(local)
    s = scores[iy, ix]
    order = np.argsort(-s, kind="stable")
    iy, ix, s = iy[order], ix[order], s[order]
    dy, dx = _subpixel(scores, iy, ix)
    xy = np.stack([xs[0] + (ix + dx) * step, ys[0] + (iy + dy) * step], axis=1)
    keep = greedy_nms(xy, min_distance)
    return xy[keep], s[keep]


def greedy_nms(xy: np.ndarray, min_distance: float) -> np.ndarray:
    """Indices of points (ordered best first) kept when each suppresses later points within ``min_distance``."""
    n = len(xy)
    if n == 0:
        return np.zeros(0, int)
    pairs = cKDTree(xy).query_pairs(min_distance, output_type="ndarray")
    dropped = np.zeros(n, bool)
    if len(pairs):
        pairs = np.sort(pairs, axis=1)
        later = [[] for _ in range(n)]
        for i, j in pairs:
            later[i].append(j)
        for i in range(n):
            if not dropped[i]:
                dropped[later[i]] = True
    return np.nonzero(~dropped)[0]


def candidate_picks(
    model: PickerMAE,
    image: np.ndarray,
    exemplars: torch.Tensor,
    stride: int = 4,
    nms_distance: float = 0.7,
    matching: str = "max",
    exclude: tuple[np.ndarray, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Score map and its peaks, one per particle, before any threshold.

    Parameters
    ----------
    nms_distance : suppression distance in particle diameters
    exclude : leave-one-out scoring of the exemplars' own micrograph (see :func:`score_map`)

    Returns
    -------
    xy : (N, 2) binned coordinates, best first
    score : (N,) cosine to the exemplars (``picking.merit.fuse_scores`` mixes in the other opinions)
    (scores, xs, ys) : the cosine score map and its window centres
    """
    scores, xs, ys = score_map(model, image, exemplars, stride, matching, exclude=exclude)
    # a light blur (0.15 diameter) puts each peak at the centre of the windows that hold the particle;
    # blurred as Fisher's z = artanh(cosine), where scores crowding near 1 stay apart
    z = np.arctanh(np.clip(scores, -0.999999, 0.999999))
    smooth = ndimage.gaussian_filter(z, 0.15 * model.config.particle_px / stride, mode="nearest")
    xy, s = peaks(smooth, xs, ys, nms_distance * model.config.particle_px)
    return xy, np.tanh(s), (scores, xs, ys)
