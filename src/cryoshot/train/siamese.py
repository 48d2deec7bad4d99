"""Training the Siamese 2D embedding with the triplet loss (Lorenzana Santuyo thesis, Eq. 1).

Each step is one batch of simulated particle images (:mod:`cryoshot.data.projection_triplets`)
of the training structures (procedural pseudo-molecules and the 8 bundled training maps;
the 8 novel maps are never seen). The loss is Eq. 1 over every valid triplet of the batch,
Adam at lr 1e-4 and margin 0.5 as in the thesis. Validation uses held-out procedural
structures: the triplet loss on fixed batches (the thesis's early-stopping criterion, patience
5 validations) and, for the record, the adjusted Rand index of k-means with the true k on a
fixed view set at SNR 0.1. The model with the lowest validation loss is kept;
``OUTPUT.last`` resumes a killed run.
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
from cryoshot.data.projection_triplets import ProjectionTriplets, TripletDataConfig
from cryoshot.errors import CryoshotError
from cryoshot.models.checkpoint import load_checkpoint, save_checkpoint
from cryoshot.models.siamese2d import (
    SiameseConfig,
    SiameseNet,
    batch_triplet_loss,
    load_backbone_weights,
)
from cryoshot.train.loop import (
    check_model_output,
    continue_from,
    pick_device,
    refuse_changed_settings,
    stage_record,
)
from cryoshot.utils.files import output_lock
from cryoshot.utils.threads import configure_threads

VAL_OFFSET = 950_000  # procedural indices of the validation structures (never trained on)
RESUMABLE = ("steps", "time_budget_s", "device", "val_every", "patience")


@dataclass
class SiameseTrainConfig:
    """Settings of ``cryoshot train siamese``.

    ``structures`` empty means procedural 0..n_procedural-1 plus the 8 bundled training maps.
    """

    steps: int = 4000
    time_budget_s: float | None = None
    lr: float = 1e-4
    margin: float = 0.5
    n_procedural: int = 120
    structures: list[str] = field(default_factory=list)
    val_every: int = 200
    val_batches: int = 6
    patience: int = 5
    backbone_weights: str | None = None
    freeze_backbone: bool = False
    seed: int = 0
    device: str = "auto"
    init_from: str | None = None  # a Siamese file to start from (its stages go into this one's provenance)
    model: SiameseConfig = field(default_factory=SiameseConfig)
    data: TripletDataConfig = field(default_factory=TripletDataConfig)

    def validate(self) -> None:
        self.model.validate()
        if self.steps < 1 or self.val_every < 1 or self.patience < 1:
            raise CryoshotError("--episodes, --val-every and --patience must be at least 1")
        if not self.margin > 0:
            raise CryoshotError(f"the triplet margin must be positive, got {self.margin}")
        if (self.data.box_px, self.data.pixel_size_A) != (self.model.box_px, self.model.pixel_size_A):
            raise CryoshotError("the training images must be on the model's grid (box and pixel size)")
        for key, what in (("p_textured", "images with ice texture"), ("p_neighbours", "images with neighbours"),
                          ("p_size_matched", "batches of structures close in size"),
                          ("p_unflipped", "images not phase-flipped")):  # fmt: skip
            if not 0 <= getattr(self.data, key) <= 1:
                raise CryoshotError(f"{key} (the share of {what}) must be in 0..1, "
                                    f"got {getattr(self.data, key)}")  # fmt: skip
        if not 0 <= self.data.max_shift_px <= self.data.box_px / 4:
            raise CryoshotError(f"max_shift_px (the particles' largest shift from the box centre, pixels) must be in "
                                f"0..{self.data.box_px / 4:g}, got {self.data.max_shift_px}")  # fmt: skip

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"], d["data"] = self.model.to_dict(), self.data.to_dict()
        return d

    def training_specs(self) -> list[str]:
        from cryoshot.data.micrograph_episodes import training_specs

        return list(self.structures) if self.structures else training_specs(self.n_procedural)


@torch.no_grad()
def embed_batches(net: SiameseNet, images: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """Embeddings of (N, 1, D, D) prepared images, in eval mode, chunked. (N, E)."""
    net.eval()
    return torch.cat([net(images[s : s + chunk]) for s in range(0, len(images), chunk)])


def _validation_sets(cfg: SiameseTrainConfig):
    specs = [f"procedural:{VAL_OFFSET}-{VAL_OFFSET + 12}"]
    val = ProjectionTriplets(specs, cfg.data, seed=cfg.seed + 1000)
    batches = [val.batch(b) for b in range(cfg.val_batches)]
    vcfg = TripletDataConfig(**{**cfg.data.__dict__, "snr_range": (0.1, 0.1), "n_structures": 4, "n_views": 6,
                                "per_view": 20})  # fmt: skip
    view_set = ProjectionTriplets(specs, vcfg, seed=cfg.seed + 2000).batch(0)
    return batches, view_set


def validation(net: SiameseNet, batches, view_set, margin: float, device) -> tuple[float, float]:
    """(mean triplet loss over the validation batches, ARI of k-means with the true k on the view set)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    losses = []
    for b in batches:
        z = embed_batches(net, b.images.to(device))
        losses.append(float(batch_triplet_loss(z, b.labels.to(device), margin, reduce="all")[0]))
    z = embed_batches(net, view_set.images.to(device)).cpu().numpy()
    y = view_set.labels.numpy()
    pred = KMeans(len(np.unique(y)), n_init=4, random_state=0).fit_predict(z)
    return float(np.mean(losses)), float(adjusted_rand_score(y, pred))


def train_siamese(
    cfg: SiameseTrainConfig, out_path: str | os.PathLike, *, resume: bool = False, force: bool = False,
    progress: bool = True,
) -> dict:  # fmt: skip
    """Train and write the best network (lowest validation loss) to ``out_path``; ``out_path``.last resumes."""
    cfg.validate()
    out_path = check_model_output(out_path, resume, force)
    device = pick_device(cfg.device)
    with output_lock(out_path):
        return _train(cfg, out_path, device, resume, progress)


def _train(cfg: SiameseTrainConfig, out_path: Path, device: torch.device, resume: bool, progress: bool) -> dict:
    configure_threads()
    last = out_path.with_name(out_path.name + ".last")
    torch.manual_seed(cfg.seed)
    net = SiameseNet(cfg.model)
    if cfg.backbone_weights:
        load_backbone_weights(net, cfg.backbone_weights)
    if cfg.freeze_backbone:
        for p in net.backbone.parameters():
            p.requires_grad_(False)
    earlier_stages = continue_from(cfg.init_from, "siamese", net, cfg.model.to_dict()) if cfg.init_from else []
    net = net.to(device)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=cfg.lr)
    step, best, best_step, history, elapsed0, best_state, stale = 0, float("inf"), 0, [], 0.0, None, 0
    if resume and last.exists():
        ck = load_checkpoint(last, method="siamese")
        refuse_changed_settings(ck["config"], cfg.to_dict(), RESUMABLE, last)
        net.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        step, best, best_step = ck["episode"], ck["best_val_loss"], ck["best_episode"]
        history, elapsed0, best_state, stale = ck["history"], ck["seconds"], ck["best_state_dict"], ck["stale"]
    data = ProjectionTriplets(cfg.training_specs(), cfg.data, seed=cfg.seed)
    val_batches, view_set = _validation_sets(cfg)

    def payload(seconds: float) -> dict:
        out = {"state_dict": net.state_dict(), "config": cfg.to_dict(), "method": "siamese", "seed": cfg.seed,
               "episode": step, "best_episode": best_step, "best_val_loss": best, "history": history,
               "seconds": seconds, "stale": stale,
               "best_val_ari": next((h["val_ari"] for h in history if h["episode"] == best_step), None)}  # fmt: skip
        out["stages"] = [*earlier_stages, stage_record({**out, "version": __version__, "argv": list(sys.argv)}, None)]
        return out

    t0 = time.perf_counter() - elapsed0
    run: list[tuple[float, float]] = []
    stop = False

    def validate_and_save() -> None:
        nonlocal best, best_step, best_state, stale, stop
        loss, ari = validation(net, val_batches, view_set, cfg.margin, device)
        history.append({"episode": step, "train_loss": float(np.mean([r[0] for r in run[-cfg.val_every:]] or [0])),
                        "val_loss": loss, "val_ari": ari, "seconds": time.perf_counter() - t0})  # fmt: skip
        if loss < best:
            best, best_step, stale = loss, step, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            save_checkpoint(out_path, {**payload(time.perf_counter() - t0), "state_dict": best_state})
        else:
            stale += 1
            stop = stale >= cfg.patience
        save_checkpoint(last, {**payload(time.perf_counter() - t0), "optimizer": opt.state_dict(),
                               "best_state_dict": best_state})  # fmt: skip

    bar = tqdm(total=cfg.steps, initial=step, desc="training siamese", unit="step", disable=not progress)
    while step < cfg.steps and not stop and stale < cfg.patience:
        if cfg.time_budget_s is not None and time.perf_counter() - t0 > cfg.time_budget_s:
            break
        net.train()
        b = data.batch(step)
        z = net(b.images.to(device))
        loss, active = batch_triplet_loss(z, b.labels.to(device), cfg.margin)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        run.append((loss.item(), active))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean([r[0] for r in run[-50:]]):.3f}",
                        active=f"{np.mean([r[1] for r in run[-50:]]):.2f}", best_val=f"{best:.3f}")  # fmt: skip
        if step % cfg.val_every == 0 or step == cfg.steps:
            validate_and_save()
    bar.close()
    if not history or history[-1]["episode"] != step:
        validate_and_save()
    return {"best_val_loss": best, "best_episode": best_step, "episodes": step,
            "seconds": time.perf_counter() - t0, "history": history}  # fmt: skip
