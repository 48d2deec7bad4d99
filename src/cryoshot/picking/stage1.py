"""Stage 1 of cryoMAE (§3.2): adapt the MAE to one reference micrograph's exemplars and background."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from cryoshot.errors import CryoshotError
from cryoshot.models.mae2d import PickerMAE
from cryoshot.picking.losses import scs_loss
from cryoshot.picking.scan import windows_at


@dataclass
class LossConfig:
    """Weights of the cryoMAE loss ``L_MSE + beta * L_SCS`` (Eqs. 3–6).

    The paper gives no values for alpha, tau and beta; these were chosen on simulated
    validation micrographs (held-out procedural structures), see docs/benchmarks.md.
    ``pi=None`` estimates the fraction of unlabelled windows holding a particle.
    ``scs_on='full'`` computes the similarity loss on unmasked windows, as the scan sees
    them; ``'masked'`` uses the masked encodings E(x̂) as the paper writes it.
    """

    alpha: float = 0.5
    tau: float = 0.0
    beta: float = 1.0
    pi: float | None = None
    scs_on: str = "full"

    def validate(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise CryoshotError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.beta < 0:
            raise CryoshotError(f"beta must be >= 0, got {self.beta}")
        if self.pi is not None and not 0 <= self.pi < 1:
            raise CryoshotError(f"pi must be in [0, 1), got {self.pi}")
        if self.scs_on not in ("full", "masked"):
            raise CryoshotError(f"scs_on must be full or masked, got {self.scs_on!r}")


def dihedral(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Apply one of the 8 in-plane symmetries of a square, ``k[i]`` in 0..7, to each window (B, 1, W, W)."""
    out = torch.empty_like(x)
    for code in range(8):
        sel = k == code
        if sel.any():
            y = torch.rot90(x[sel], code % 4, dims=(-2, -1))
            out[sel] = torch.flip(y, dims=(-1,)) if code >= 4 else y
    return out


def picker_loss(
    model: PickerMAE, xl: torch.Tensor, xu: torch.Tensor, loss: LossConfig, pi: float, generator: torch.Generator
) -> tuple[torch.Tensor, float, float]:
    """Total loss on exemplar windows ``xl`` (m, 1, W, W) and unlabelled windows ``xu`` (n, 1, W, W).

    Returns (total, mse, scs) with the last two as floats for logging.
    """
    x = torch.cat([xl, xu])
    mse, f_masked = model.reconstruction_loss(x, generator)
    if loss.beta > 0 and len(xl) and len(xu):
        f = model.features(x) if loss.scs_on == "full" else f_masked
        if model.config.center_features:  # centre on the background (unlabelled) mean, as the scan does
            f = f - f[len(xl) :].mean(dim=0, keepdim=True)
        scs = scs_loss(f[: len(xl)], f[len(xl) :], loss.alpha, loss.tau, pi)
    else:
        scs = torch.zeros(())
    return mse + loss.beta * scs, float(mse.detach()), float(scs.detach())


@dataclass
class Stage1Config:
    """Stage 1 settings: steps on the reference micrograph(s)."""

    steps: int = 150
    lr: float = 1e-4
    n_unlabeled: int = 64
    n_shifted: int = 16
    # None: every step runs, so a run's picks do not depend on how busy the machine is (a budget cut
    # stage 1 short on a shared CPU and moved F1 by up to 0.04; docs/benchmarks.md, "Stage 1 ran short")
    time_budget_s: float | None = None
    loss: LossConfig | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def random_windows(images: list[np.ndarray], n: int, window: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` windows at uniform random positions over the images (chosen in proportion to area); (n, 1, W, W)."""
    if n <= 0:
        return np.zeros((0, 1, window, window), np.float32)
    areas = np.array([im.size for im in images], float)
    which = rng.choice(len(images), size=n, p=areas / areas.sum())
    out = []
    for i, im in enumerate(images):
        k = int((which == i).sum())
        if k:
            xy = np.stack([rng.uniform(0, im.shape[1] - 1, k), rng.uniform(0, im.shape[0] - 1, k)], axis=1)
            out.append(windows_at(im, xy, window))
    return np.concatenate(out)


def fine_tune(
    model: PickerMAE,
    images: list[np.ndarray],
    exemplars: list[tuple[int, float, float]],
    config: Stage1Config,
    pi: float,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train ``model`` in place on exemplar windows and random unlabelled windows of ``images``.

    Parameters
    ----------
    images : binned reference micrographs
    exemplars : (image index, x, y) in binned pixels
    pi : fraction of unlabelled windows holding a particle (PU adjustment)

    Returns
    -------
    dict with ``steps``, ``seconds`` and the last losses
    """
    loss_cfg = config.loss or LossConfig()
    loss_cfg.validate()
    rng = np.random.default_rng([seed, 21])
    gen = torch.Generator().manual_seed(seed)
    w = model.config.window_px
    xl = np.concatenate([windows_at(images[i], np.array([[x, y]]), w) for i, x, y in exemplars])
    xl_t = torch.from_numpy(xl)
    by_image = [(images[i], np.array([(x, y) for j, x, y in exemplars if j == i]))
                for i in sorted({j for j, _, _ in exemplars})]  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.05)
    model.train()
    t0 = time.perf_counter()
    hist = {"mse": [], "scs": []}
    step = 0
    for step in tqdm(range(1, config.steps + 1), desc="stage 1 (reference)", unit="step", disable=not progress):
        k = torch.from_numpy(rng.integers(0, 8, len(xl_t)))
        xu = random_windows(images, config.n_unlabeled, w, rng)
        if config.n_shifted:
            i = int(rng.integers(len(by_image)))
            img_i, xy_i = by_image[i]
            xu = np.concatenate([xu, shifted_windows(img_i, xy_i, config.n_shifted, model.config.particle_px, w, rng)])
        xu = torch.from_numpy(dihedral_np(xu, rng))
        total, mse, scs = picker_loss(model, dihedral(xl_t, k), xu, loss_cfg, pi, gen)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        hist["mse"].append(mse)
        hist["scs"].append(scs)
        if config.time_budget_s is not None and time.perf_counter() - t0 > config.time_budget_s:
            if log:
                log(f"stage 1 stopped at its time budget ({config.time_budget_s:g} s) after {step} steps")
            break
    model.eval()
    return {"steps": step, "seconds": time.perf_counter() - t0, "mse": float(np.mean(hist["mse"][-20:] or [0])),
            "scs": float(np.mean(hist["scs"][-20:] or [0]))}  # fmt: skip


def shifted_windows(
    image: np.ndarray, xy: np.ndarray, n: int, particle_px: float, window: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` windows centred off particles at ``xy`` by 0.35-0.75 diameters (random direction).

    They join the unlabelled windows as negatives, so the features tell a centred particle
    from a window that only overlaps one, and the score peaks at particle centres.
    """
    if n <= 0 or not len(xy):
        return np.zeros((0, 1, window, window), np.float32)
    pick = np.asarray(xy)[rng.integers(0, len(xy), n)]
    r = rng.uniform(0.35, 0.75, n) * particle_px
    a = rng.uniform(0, 2 * np.pi, n)
    return windows_at(image, pick + np.stack([r * np.cos(a), r * np.sin(a)], axis=1), window)


def dihedral_np(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random dihedral symmetry per window of (B, 1, W, W)."""
    k = torch.from_numpy(rng.integers(0, 8, len(x)))
    return dihedral(torch.from_numpy(x), k).numpy()
