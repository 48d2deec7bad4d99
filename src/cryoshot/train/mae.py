"""Pre-training the picker's MAE on simulated micrographs (cryoMAE §4.3.2, Table 4).

Every step is one fresh picking episode (:mod:`cryoshot.data.micrograph_episodes`): the
MAE reconstructs masked windows (MSE) while the PU-adjusted self-cross similarity loss
pulls the target's exemplars together and away from random windows, exactly the stage-1
objective, so stage 1 on a user's micrograph starts from an encoder that already tells
centred particles from background, distractors and off-centre views. Validation is the
average precision of stage-2 picking (no stage 1) on micrographs of held-out procedural
structures; the best model is kept, and ``OUTPUT.last`` lets a killed run resume.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cryoshot import __version__
from cryoshot.data.micrograph_episodes import PickEpisodeSampler, training_specs
from cryoshot.errors import CryoshotError
from cryoshot.models.checkpoint import load_checkpoint, save_checkpoint
from cryoshot.models.mae2d import MAEConfig, PickerMAE
from cryoshot.picking.matching import average_precision
from cryoshot.picking.micrograph import flatten_background, robust_standardise
from cryoshot.picking.scan import candidate_picks, exemplar_features, windows_at
from cryoshot.picking.stage1 import LossConfig, dihedral_np, picker_loss, random_windows, shifted_windows
from cryoshot.train.loop import (
    check_model_output,
    continue_from,
    pick_device,
    refuse_changed_settings,
    stage_record,
)
from cryoshot.utils.files import output_lock
from cryoshot.utils.threads import configure_threads

VAL_OFFSET = 900_000  # procedural indices of the validation structures (never trained on)
RESUMABLE = ("steps", "time_budget_s", "device", "val_every")


@dataclass
class MAETrainConfig:
    """Settings of ``cryoshot train mae``."""

    steps: int = 6000
    time_budget_s: float | None = None
    lr: float = 3e-4
    n_procedural: int = 300
    n_unlabeled: int = 64
    n_shifted: int = 16
    size_px: int = 320
    val_every: int = 250
    val_episodes: int = 12
    seed: int = 0
    device: str = "auto"
    ice_texture_max: float = 0.0  # amorphous ice's texture in 70% of the micrographs, up to this many noise sd
    flatten: bool = False  # the input prepared as cryoshot pick prepares it (else standardised)
    init_from: str | None = None  # an MAE file to start from (its stages go into this one's provenance)
    model: MAEConfig = field(default_factory=MAEConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def validate(self) -> None:
        self.model.validate()
        self.loss.validate()
        if self.steps < 1 or self.val_every < 1:
            raise CryoshotError("--episodes and --val-every must be at least 1")
        if not 0 <= self.ice_texture_max <= 10:
            raise CryoshotError(f"ice_texture_max must be 0..10 noise sd, got {self.ice_texture_max}")
        if self.size_px < 4 * self.model.window_px:
            raise CryoshotError(f"training micrographs of {self.size_px} px are too small for the window")

    def to_dict(self) -> dict:
        return asdict(self)


def prepare_like_picker(img: np.ndarray, particle_px: float) -> np.ndarray:
    """A simulated micrograph on the picker's scale made into the MAE's input as ``cryoshot pick`` makes a binned
    micrograph (:func:`~cryoshot.picking.micrograph.bin_micrograph` without the binning)."""
    return robust_standardise(flatten_background(img, particle_px))


def _pi(ep) -> float:
    """Fraction of random windows whose centre lies within half a diameter of a particle."""
    n, area = len(ep.all_xy), ep.image.size
    return float(min(0.5, n * np.pi * (ep.particle_px / 2) ** 2 / area))


def validation_score(model: PickerMAE, episodes: list) -> float:
    """Mean average precision of stage-2 picks (no stage 1) against the target particles."""
    aps = []
    for ep in episodes:
        ex = exemplar_features(model, ep.image, ep.exemplar_xy)
        xy, s, _ = candidate_picks(model, ep.image, ex)
        aps.append(average_precision(xy, s, ep.target_xy, ep.particle_px))
    return float(np.mean(aps))


def train_mae(
    cfg: MAETrainConfig, out_path: str | os.PathLike, *, resume: bool = False, force: bool = False,
    progress: bool = True,
) -> dict:  # fmt: skip
    """Pre-train and write the best MAE (by validation AP) to ``out_path``; ``out_path``.last resumes."""
    cfg.validate()
    out_path = check_model_output(out_path, resume, force)
    device = pick_device(cfg.device)
    with output_lock(out_path):
        return _train(cfg, out_path, device, resume, progress)


def _train(cfg: MAETrainConfig, out_path: Path, device: torch.device, resume: bool, progress: bool) -> dict:
    configure_threads()
    last = out_path.with_name(out_path.name + ".last")
    torch.manual_seed(cfg.seed)
    model = PickerMAE(cfg.model).to(device)
    earlier_stages = continue_from(cfg.init_from, "mae", model, cfg.model.to_dict()) if cfg.init_from else []
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.05)
    step, best, best_step, history, elapsed0, best_state = 0, -1.0, 0, [], 0.0, None
    if resume and last.exists():
        ck = load_checkpoint(last, method="mae")
        refuse_changed_settings(ck["config"], cfg.to_dict(), RESUMABLE, last)
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        step, best, best_step = ck["episode"], ck["best_val_ap"], ck["best_episode"]
        history, elapsed0, best_state = ck["history"], ck["seconds"], ck["best_state_dict"]
    data = {"ice_texture_max": cfg.ice_texture_max, "prepare": prepare_like_picker if cfg.flatten else None}
    train_eps = PickEpisodeSampler(training_specs(cfg.n_procedural), cfg.size_px, seed=cfg.seed, **data)
    val_specs = [f"procedural:{VAL_OFFSET}-{VAL_OFFSET + 40}"]
    val_eps = [
        PickEpisodeSampler(val_specs, cfg.size_px, seed=cfg.seed + 1000, **data).episode(i)
        for i in range(cfg.val_episodes)
    ]
    w = cfg.model.window_px

    def payload(seconds: float) -> dict:
        out = {"state_dict": model.state_dict(), "config": cfg.to_dict(), "method": "mae", "seed": cfg.seed,
               "episode": step, "best_episode": best_step, "best_val_ap": best, "best_val_accuracy": best,
               "history": history, "seconds": seconds}  # fmt: skip
        out["stages"] = [*earlier_stages, stage_record({**out, "version": __version__, "argv": list(sys.argv)}, None)]
        return out

    t0 = time.perf_counter() - elapsed0
    run: list[tuple[float, float]] = []

    def validate_and_save() -> None:
        nonlocal best, best_step, best_state
        ap = validation_score(model.eval(), val_eps)
        history.append({"episode": step, "mse": float(np.mean([r[0] for r in run[-cfg.val_every :]] or [0])),
                        "scs": float(np.mean([r[1] for r in run[-cfg.val_every :]] or [0])), "val_ap": ap,
                        "seconds": time.perf_counter() - t0})  # fmt: skip
        if ap > best:
            best, best_step = ap, step
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            save_checkpoint(out_path, {**payload(time.perf_counter() - t0), "state_dict": best_state})
        save_checkpoint(last, {**payload(time.perf_counter() - t0), "optimizer": opt.state_dict(),
                               "best_state_dict": best_state})  # fmt: skip

    bar = tqdm(total=cfg.steps, initial=step, desc="training mae", unit="step", disable=not progress)
    while step < cfg.steps:
        if cfg.time_budget_s is not None and time.perf_counter() - t0 > cfg.time_budget_s:
            break
        model.train()
        ep = train_eps.episode(step)
        rng = np.random.default_rng([cfg.seed, 5, step])
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        xl = dihedral_np(windows_at(ep.image, ep.exemplar_xy, w), rng)
        xu = random_windows([ep.image], cfg.n_unlabeled, w, rng)
        xu = dihedral_np(np.concatenate([xu, shifted_windows(ep.image, ep.target_xy, cfg.n_shifted, ep.particle_px, w,
                                                            rng)]), rng)  # fmt: skip
        pi = _pi(ep) if cfg.loss.pi is None else cfg.loss.pi
        total, mse, scs = picker_loss(model, torch.from_numpy(xl).to(device), torch.from_numpy(xu).to(device),
                                      cfg.loss, pi, gen)  # fmt: skip
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        step += 1
        run.append((mse, scs))
        bar.update(1)
        bar.set_postfix(mse=f"{np.mean([r[0] for r in run[-50:]]):.3f}",
                        scs=f"{np.mean([r[1] for r in run[-50:]]):.3f}", best_ap=f"{best:.3f}")  # fmt: skip
        if step % cfg.val_every == 0 or step == cfg.steps:
            validate_and_save()
    bar.close()
    if not history or history[-1]["episode"] != step:
        validate_and_save()
    return {"best_val_ap": best, "episodes": step, "seconds": time.perf_counter() - t0, "history": history}
