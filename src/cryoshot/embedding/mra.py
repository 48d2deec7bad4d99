"""Reference-free multi-reference alignment (MRA) 2D classification: the classical baseline.

As RELION, cryoSPARC and EMAN2 do it in essence: K references start as the averages of
K random subsets; every image is aligned to every reference over in-plane rotations and
shifts and assigned to the best; each class is re-averaged from its aligned images,
low-passed and centred; repeat until few images change class. Cost grows as
N x K x rotations per iteration, which is what the learned embedding avoids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from cryoshot.embedding.align2d import (
    Alignment,
    align_locally,
    align_to_references,
    apply_alignment,
    centre_images,
    lowpass,
)


@dataclass
class MRAConfig:
    """Settings of the MRA baseline (units in the names)."""

    iterations: int = 10
    n_angles: int = 36
    max_shift_px: int = 4
    lowpass_frac: float = 0.35
    tolerance: float = 0.005
    work_box_px: int | None = None
    fine_search: bool = False
    top_references: int = 2
    fine_angles: int = 72
    seed: int = 0


@dataclass
class MRAResult:
    """Class labels (N,) 0..K-1, class averages (K, D, D) (aligned, unfiltered), final alignment, iterations run."""

    labels: np.ndarray
    averages: np.ndarray
    alignment: Alignment
    iterations: int


def mra_classify(
    images: np.ndarray,
    k: int,
    config: MRAConfig = MRAConfig(),
    progress: bool = True,
    init_labels: np.ndarray | None = None,
    init_angles: int = 72,
) -> MRAResult:
    """Classify (N, D, D) standardised images into ``k`` classes by multi-reference alignment.

    ``init_labels`` (N,) in 0..k-1 replaces the random subsets: each class's images are
    first aligned to their own reference-free average. ``config.work_box_px`` aligns
    Fourier-cropped copies (faster); the averages are made from the full images.
    ``config.fine_search`` (with a smaller work box) makes the search coarse-to-fine: the
    exhaustive search on the cropped copies keeps each image's ``top_references`` best
    classes, which are then searched on the full images at ``fine_angles`` angles next to the
    coarse angle and every shift; the references stay at full resolution.
    """
    from cryoshot.data.particles2d import resample_images
    from cryoshot.embedding.align2d import aligned_average

    full = torch.as_tensor(np.asarray(images, dtype=np.float32))
    n, d = len(full), full.shape[-1]
    w = config.work_box_px if config.work_box_px and config.work_box_px < d else d
    x = full if w == d else torch.from_numpy(resample_images(full.numpy(), 1.0, w, d / w))
    rng = np.random.default_rng([config.seed, 31])
    if init_labels is None:
        subsets = np.array_split(rng.permutation(n), k)
        refs = torch.stack([x[s].mean(0) for s in subsets])
    else:
        refs = torch.stack([
            torch.from_numpy(aligned_average(x[np.nonzero(init_labels == c)[0]].numpy(), iterations=2, n_angles=init_angles)[0])
            if np.any(init_labels == c) else x[int(rng.integers(n))]
            for c in range(k)
        ])  # fmt: skip
    fine = config.fine_search and w != d
    if fine:  # references at full size from here on
        refs = torch.from_numpy(resample_images(refs.numpy(), 1.0, d, w / d))
    labels = np.full(n, -1)
    averages = refs
    al = None
    it = 0
    s_full = int(config.max_shift_px)
    s_work = max(1, round(config.max_shift_px * w / d))
    for it in tqdm(range(1, config.iterations + 1), desc="MRA 2D classification", unit="iter", disable=not progress,  # noqa: B007
                   leave=False):  # fmt: skip
        r = centre_images(lowpass(refs, config.lowpass_frac))
        if fine:
            r_work = torch.from_numpy(resample_images(r.numpy(), 1.0, w, d / w))
            coarse = align_to_references(x, r_work, n_angles=config.n_angles, max_shift_px=s_work,
                                         top_references=config.top_references)  # fmt: skip
            al = align_locally(full, r, coarse.candidates, coarse.candidate_angle_deg, n_angles=config.fine_angles,
                               angle_steps=max(1, config.fine_angles // config.n_angles), max_shift_px=s_full)  # fmt: skip
            aligned = apply_alignment(full, torch.from_numpy(al.angle_deg), torch.from_numpy(al.shift_px))
        else:
            al = align_to_references(x, r, n_angles=config.n_angles, max_shift_px=s_work)
            aligned = apply_alignment(x, torch.from_numpy(al.angle_deg), torch.from_numpy(al.shift_px))
        changed = float(np.mean(al.ref != labels))
        labels = al.ref.copy()
        new = []
        for c in range(k):
            members = np.nonzero(labels == c)[0]
            if len(members) == 0:  # an empty class restarts from the worst-fitting image
                members = np.array([int(np.argmin(al.score))])
                labels[members] = c
            new.append(aligned[members].mean(0))
        averages = torch.stack(new)
        refs = averages
        if changed < config.tolerance:
            break
    if w != d and not fine:  # the final averages from the full images, the shifts scaled back
        al.shift_px = al.shift_px * (d / w)
        aligned = apply_alignment(full, torch.from_numpy(al.angle_deg), torch.from_numpy(al.shift_px))
        averages = torch.stack([aligned[labels == c].mean(0) for c in range(k)])
    return MRAResult(labels=labels, averages=averages.numpy().astype(np.float32), alignment=al, iterations=it)
