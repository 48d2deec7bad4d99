"""Figures for quick looks: montages of slices, projections and micrographs (matplotlib, Agg)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cryoshot.utils.files import atomic_file  # noqa: E402


def _save(fig, path: str | os.PathLike, force: bool) -> Path:
    with atomic_file(path, force=force) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


def volume_montage(
    volumes: np.ndarray,
    titles: list[str],
    path: str | os.PathLike,
    *,
    force: bool = False,
    suptitle: str = "",
) -> Path:
    """Central XY and XZ slices of up to 12 volumes, one column each.

    Parameters
    ----------
    volumes : (N, D, D, D), indexed (z, y, x)
    titles : N strings
    """
    n = min(len(volumes), 12)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
    for i in range(n):
        v = volumes[i]
        c = v.shape[0] // 2
        for row, img, lab in ((0, v[c], "XY"), (1, v[:, c, :], "XZ")):
            ax = axes[row, i]
            ax.imshow(img, cmap="gray", origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(lab)
        axes[0, i].set_title(titles[i], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return _save(fig, path, force)


def image_montage(
    images: np.ndarray, titles: list[str], path: str | os.PathLike, *, force: bool = False, suptitle: str = ""
) -> Path:
    """Up to 24 2D images (N, H, W) in a grid."""
    n = min(len(images), 24)
    cols = min(n, 8)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        ax.imshow(images[i], cmap="gray", origin="lower")
        ax.set_title(titles[i], fontsize=6)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return _save(fig, path, force)


def micrograph_preview(
    image: np.ndarray,
    coords_px: np.ndarray,
    radius_px: float,
    path: str | os.PathLike,
    *,
    force: bool = False,
) -> Path:
    """A micrograph (binned for display) with circles at particle coordinates (x, y)."""
    bin_ = max(1, image.shape[0] // 1024)
    h, w = (image.shape[0] // bin_) * bin_, (image.shape[1] // bin_) * bin_
    small = image[:h, :w].reshape(h // bin_, bin_, w // bin_, bin_).mean(axis=(1, 3))
    lo, hi = np.percentile(small, [1, 99])
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.imshow(small, cmap="gray", origin="lower", vmin=lo, vmax=hi)
    for x, y in coords_px:
        ax.add_patch(plt.Circle((x / bin_, y / bin_), radius_px / bin_, fill=False, color="yellow", lw=0.6))
    ax.set_title(f"{len(coords_px)} particles (ground truth)", fontsize=9)
    ax.axis("off")
    return _save(fig, path, force)


def fsc_plot(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | os.PathLike, force: bool = False):
    """FSC curves ``{label: (frequency 1/Å, fsc, resolution Å)}`` with the 0.143 threshold."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for label, (f, c, res) in curves.items():
        ax.plot(f, c, label=f"{label}: {res:.1f} Å")
    ax.axhline(0.143, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC (half maps)")
    ax.set_ylim(-0.1, 1.05)
    ax.legend(fontsize=7)
    return _save(fig, path, force)


def average_figure(
    averages: dict[str, np.ndarray], raw: dict[str, np.ndarray], path: str | os.PathLike, force: bool = False
):
    """Per class: central XY and XZ slices of the average, then XY slices of a few raw particles."""
    labels = list(averages)[:12]
    n_raw = max((len(raw.get(c, [])) for c in labels), default=0)
    cols = 2 + n_raw
    fig, axes = plt.subplots(len(labels), cols, figsize=(1.5 * cols, 1.6 * len(labels)), squeeze=False)
    for i, c in enumerate(labels):
        v = averages[c]
        m = v.shape[0] // 2
        panels = [(v[m], f"class {c}\naverage XY"), (v[:, m, :], "average XZ")]
        panels += [(p[m], f"raw {j + 1}") for j, p in enumerate(raw.get(c, []))]
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(panels):
                ax.imshow(panels[j][0], cmap="gray", origin="lower")
                ax.set_title(panels[j][1], fontsize=7)
            else:
                ax.axis("off")
    return _save(fig, path, force)


def pick_preview(
    image: np.ndarray,
    xy: np.ndarray,
    diameter_px: float,
    scores: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    path: str | os.PathLike,
    *,
    hit: np.ndarray | None = None,
    title: str = "",
    force: bool = False,
) -> Path:
    """A binned micrograph with its picks (green true, red false positives when ``hit`` is given)
    beside the similarity map of the scan (cryoMAE Fig. 5)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 6))
    lo, hi = np.percentile(image, [1, 99])
    a.imshow(image, cmap="gray", vmin=lo, vmax=hi)
    for k, (x, y) in enumerate(xy):
        color = "yellow" if hit is None else ("lime" if hit[k] else "red")
        a.add_patch(plt.Circle((x, y), diameter_px / 2, fill=False, color=color, lw=0.8))
    if hit is not None:
        a.set_title(f"{title}\n{int(hit.sum())} true (green), {int((~hit).sum())} false (red)", fontsize=9)
    else:
        a.set_title(title, fontsize=9)
    a.axis("off")
    step = (xs[1] - xs[0]) if len(xs) > 1 else 1.0
    extent = (xs[0] - step / 2, xs[-1] + step / 2, ys[-1] + step / 2, ys[0] - step / 2)
    im = b.imshow(scores, cmap="magma", extent=extent)
    b.set_xlim(-0.5, image.shape[1] - 0.5)
    b.set_ylim(image.shape[0] - 0.5, -0.5)
    b.set_title("similarity to the exemplars (max cosine)", fontsize=9)
    b.axis("off")
    fig.colorbar(im, ax=b, fraction=0.046)
    return _save(fig, path, force)


def scatter_2d(
    xy: np.ndarray, groups: np.ndarray, path: str | os.PathLike, *, title: str = "", force: bool = False
) -> Path:
    """A 2D embedding (t-SNE) coloured by group (thesis Figs. 4 and 7). ``xy`` (N, 2), ``groups`` (N,)."""
    names, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for j, name in enumerate(names):
        sel = inv == j
        ax.scatter(xy[sel, 0], xy[sel, 1], s=4, color=cmap(j % cmap.N), label=name, alpha=0.8, linewidths=0)
    if len(names) <= 24:
        ax.legend(fontsize=6, markerscale=3, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_title(title, fontsize=9)
    return _save(fig, path, force)


def elbow_plot(ks: np.ndarray, inertia: np.ndarray, k_auto: int, k_used: int, path: str | os.PathLike,
               *, force: bool = False) -> Path:  # fmt: skip
    """k-means inertia against k (thesis Fig. 5) with the automatic and the used k marked."""
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    ax.plot(ks, inertia, "o-", color="0.2", ms=3)
    ax.axvline(k_auto, color="tab:red", ls="--", lw=1, label=f"automatic k = {k_auto} (kneedle on log inertia)")
    if k_used != k_auto:
        ax.axvline(k_used, color="tab:blue", ls=":", lw=1, label=f"used k = {k_used}")
    ax.set_xlabel("k (clusters)")
    ax.set_ylabel("k-means inertia")
    ax.legend(fontsize=7, frameon=False)
    return _save(fig, path, force)


def similarity_plot(names: np.ndarray, matrix: np.ndarray, path: str | os.PathLike, *, title: str = "",
                    force: bool = False) -> Path:  # fmt: skip
    """Class-against-class mean cosine similarity (thesis Fig. 3)."""
    g = len(names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.32 * g, 1.0 + 0.3 * g))
    im = ax.imshow(matrix, cmap="viridis", vmin=min(-0.1, float(matrix.min())), vmax=1.0)
    ax.set_xticks(range(g), names, fontsize=6, rotation=90)
    ax.set_yticks(range(g), names, fontsize=6)
    if g <= 12:
        for i in range(g):
            for j in range(g):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=5, color="w")
    fig.colorbar(im, ax=ax, shrink=0.8, label="mean cosine similarity")
    ax.set_title(title, fontsize=9)
    return _save(fig, path, force)


def class_average_figure(columns: list[tuple[str, list[np.ndarray], list[str]]], path: str | os.PathLike,
                         *, force: bool = False, suptitle: str = "") -> Path:  # fmt: skip
    """Columns of images side by side (thesis Fig. 6): ``(column title, images, labels)`` each."""
    rows = max(len(c[1]) for c in columns)
    cols = len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 1.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for j, (title, imgs, labels) in enumerate(columns):
        axes[0, j].set_title(title, fontsize=7)
        for i, (img, lab) in enumerate(zip(imgs, labels, strict=True)):
            ax = axes[i, j]
            ax.imshow(img, cmap="gray", origin="lower")
            ax.text(0.02, 0.98, lab, transform=ax.transAxes, fontsize=5, va="top", color="yellow")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return _save(fig, path, force)
