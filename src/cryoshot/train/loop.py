"""The one training loop, used by every method.

``protonet`` and ``protonet-ce`` train on episodes; ``finetune`` pre-trains the
encoder with cross-entropy over all base classes on class-balanced batches of
``way`` classes × ``shot + query`` items (Chen et al. 2019's Baseline
pre-training; the fine-tune baseline then fits a linear layer on the support set).

Trains to a budget (episodes and, optionally, wall-clock seconds), validates on
held-out classes, keeps the best model, and checkpoints so a killed run resumes
where it stopped (``resume=True``).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from cryoshot import __version__
from cryoshot.data.synthetic import FLIPS, VALIDATION_OFFSET, PoolConfig, VolumePool, apply_flips
from cryoshot.errors import CryoshotError
from cryoshot.fewshot.fscc import BaseStatistics, supcon_loss
from cryoshot.models.checkpoint import load_checkpoint, save_checkpoint
from cryoshot.models.loading import build_model_from_config
from cryoshot.models.protonet import ProtoNet
from cryoshot.utils.files import check_output_free, output_lock
from cryoshot.utils.hashing import file_sha256
from cryoshot.utils.threads import configure_threads

# The three training families: every method trains through one of them.
FAMILIES = {
    "protonet": "episodic",  # encoder trained on N-way K-shot episodes
    "protonet-ce": "cached-episodic",  # frozen encoder: the pool embedded once, the head trained on episodes
    "finetune": "supervised",  # cross-entropy over all base classes on class-balanced batches
    "fscc": "supervised",  # the same plus lambda x supervised contrastive loss
}
METHODS = tuple(FAMILIES)


@dataclass
class TrainConfig:
    """Settings of an episodic training run."""

    method: Literal["protonet", "protonet-ce", "finetune", "fscc"] = "protonet"
    encoder: Literal["cryoshot-small", "cryoshot-tiny", "protonet3d-paper", "conv6-paper"] = "cryoshot-small"
    way: int = 5
    shot: int = 5
    query: int = 15
    episodes: int = 2000
    time_budget_s: float | None = None
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    bf16: bool = False
    pool: PoolConfig = field(default_factory=PoolConfig)
    val_classes: int = 30
    val_items_per_class: int = 20
    val_every: int = 100
    val_episodes: int = 50
    init_from: str | None = None  # protonet-ce: the trained protonet whose encoder is frozen
    supcon_weight: float = 0.05  # fscc: λ of L = L_CE + λ L_SCL
    supcon_temperature: float = 0.07  # fscc: τ
    stats_items_per_class: int = 48  # fscc: items per base class for the base statistics
    batch_classes: int = 32  # fscc / finetune: classes per class-balanced batch (32 x 4 = the paper's 128)
    batch_items: int = 4  # fscc / finetune: items per class in a batch (>= 2 gives SupCon its positives)
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        """Raise a CryoshotError naming the first setting out of range (before any work starts)."""
        checks = [
            (self.method in METHODS, f"method must be one of {', '.join(METHODS)}, got '{self.method}'"),
            (self.way >= 2, f"way must be at least 2 (a 1-way episode has nothing to tell apart), got {self.way}"),
            (self.shot >= 1, f"shot must be at least 1, got {self.shot}"),
            (self.query >= 1, f"query must be at least 1, got {self.query}"),
            (self.episodes >= 1, f"episodes must be at least 1, got {self.episodes}"),
            (self.time_budget_s is None or self.time_budget_s > 0, f"time budget must be > 0 s, got {self.time_budget_s}"),
            (math.isfinite(self.lr) and self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.val_every >= 1, f"val_every must be at least 1, got {self.val_every}"),
            (self.val_episodes >= 1, f"val_episodes must be at least 1, got {self.val_episodes}"),
            (self.pool.n_procedural >= 0, f"procedural classes must be >= 0, got {self.pool.n_procedural}"),
            (len(self.pool.structure_specs()) >= 2, "the training pool needs at least 2 classes (--procedural)"),
            (bool(self.pool.snrs) and all(math.isfinite(v) and v > 0 for v in self.pool.snrs),
             f"training SNRs must be positive numbers, got {self.pool.snrs}"),
            (self.supcon_weight >= 0, f"supcon weight must be >= 0, got {self.supcon_weight}"),
            (self.supcon_temperature > 0, f"supcon temperature must be > 0, got {self.supcon_temperature}"),
            (self.method != "fscc" or self.stats_items_per_class >= 2,
             f"stats items per class must be at least 2 (a covariance needs two), got {self.stats_items_per_class}"),
            (self.batch_classes >= 2, f"batch classes must be at least 2, got {self.batch_classes}"),
            (self.batch_items >= 1, f"batch items must be at least 1, got {self.batch_items}"),
        ]  # fmt: skip
        for ok, msg in checks:
            if not ok:
                raise CryoshotError(msg)
        self.pool.subtomogram_config(self.pool.snrs[0], self.seed)  # the simulator settings, before any work
        if self.way > len(self.pool.structure_specs()):
            raise CryoshotError(f"--way {self.way} exceeds the {len(self.pool.structure_specs())} training classes")
        need = self.shot + self.query
        if self.pool.items_per_class < need or self.val_items_per_class < need:
            raise CryoshotError(f"pools need at least shot + query = {need} items per class (--items-per-class)")
        if self.way > self.val_classes:
            raise CryoshotError(f"--way {self.way} exceeds the {self.val_classes} validation classes")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @staticmethod
    def from_dict(d: dict) -> TrainConfig:
        d = dict(d)
        d["pool"] = PoolConfig(**d["pool"])
        d["betas"] = tuple(d["betas"])
        return TrainConfig(**d)


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; a clear error when it is not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise CryoshotError(f"--device {name}: no CUDA GPU is available here; use --device cpu or auto")
        if ":" in name and int(name[5:]) >= torch.cuda.device_count():
            raise CryoshotError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(name)
    raise CryoshotError(f"--device must be auto, cpu, cuda or cuda:N, got '{name}'")


# Settings that may change when a killed run is resumed; any other difference is refused.
RESUMABLE_CHANGES = ("episodes", "time_budget_s", "device", "val_every")


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Names (dotted) and values of settings that differ between two config dicts."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{k}.")
        elif a != b and (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple))) and list(a) == list(b):
            continue
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} in the checkpoint, {b!r} now")
    return out


def refuse_changed_settings(old: dict, new: dict, resumable: tuple[str, ...], last_path: Path) -> None:
    """Raise when a ``--resume`` changes any setting other than ``resumable`` (names each difference)."""
    diffs = [d for d in config_differences(old, new) if d.split(":")[0] not in resumable]
    if diffs:
        raise CryoshotError(f"--resume with settings that differ from the run in {last_path}: {'; '.join(diffs)}. "
                            "Resume with the original settings, or start over with --force")  # fmt: skip


def build_model(cfg: TrainConfig) -> ProtoNet:
    """The untrained model a training run starts from."""
    return build_model_from_config(cfg.to_dict())


def _episode_loss(model, x, ts, tq, way, method, autocast, z=None):
    """Episode loss and accuracy; ``z`` (n, dim) replaces embedding ``x`` when given (frozen encoder)."""
    if z is None:
        with autocast():
            z = model.embed(x)
    zs, zq = z[: len(ts)], z[len(ts) :]
    dist = "d*" if method == "protonet-ce" else "d"  # ProtoNet-CE trains the adapter on d* (paper 3.2.4)
    logits = -model.distances(zs, ts, zq, way, dist)
    loss = torch.nn.functional.cross_entropy(logits, tq)
    acc = (logits.argmax(1) == tq).float().mean().item()
    return loss, acc


def _supervised_loss(model, x, y, autocast, supcon_weight: float = 0.0, temperature: float = 0.07):
    """Cross-entropy over all base classes (linear head), plus λ times the supervised contrastive loss."""
    with autocast():
        z = model.embed(x)
        logits = model.classifier(z).float()
    loss = torch.nn.functional.cross_entropy(logits, y)
    if supcon_weight > 0:
        loss = loss + supcon_weight * supcon_loss(z, y, temperature)
    return loss, (logits.argmax(1) == y).float().mean().item()


@torch.no_grad()
def fill_base_statistics(model, cfg: TrainConfig, device, progress: bool = True) -> None:
    """FSCC: embed ``stats_items_per_class`` fresh items of every base class; store mean and centred features."""
    from cryoshot.models.embedding import embed_volumes

    pool = VolumePool(PoolConfig(**{**cfg.pool.to_dict(), "items_per_class": cfg.stats_items_per_class,
                                    "seed": cfg.pool.seed + 2000}), progress=progress)  # fmt: skip
    model.eval()
    c, m = pool.volumes.shape[:2]
    flat = pool.volumes.reshape(c * m, *pool.volumes.shape[2:])
    feats = torch.cat([embed_volumes(model, flat[s : s + 512].float().numpy(), cfg.pool.pixel_size_A, progress=False)
                       for s in range(0, len(flat), 512)])  # fmt: skip
    stats = BaseStatistics.from_features(feats.view(c, m, -1))
    model.base_mean.copy_(stats.means.to(device))
    model.base_centred.copy_(stats.centred.to(device))


@torch.no_grad()
def embed_pool_rotations(
    model, pool: VolumePool, device, autocast, rotations=range(len(FLIPS)), chunk: int = 128, progress: bool = True
) -> torch.Tensor:
    """Embeddings (len(rotations), classes, items, dim) of every pool item under each wedge-preserving rotation.

    ``rotations`` index ``FLIPS`` (0 is the identity). The model is in eval mode, so an embedding
    does not depend on its batch: episodes can index into these embeddings instead of running the
    encoder (validation; ProtoNet-CE training, whose encoder is frozen) and see exactly the
    embeddings they would have computed.
    """
    model.eval()
    c, m = pool.volumes.shape[:2]
    flat = pool.volumes.reshape(c * m, *pool.volumes.shape[2:])
    out = []
    bar = tqdm(total=len(rotations) * len(flat), desc="embedding training pool (frozen encoder)", unit="vol",
               disable=not progress)  # fmt: skip
    for k in rotations:
        parts = []
        for i in range(0, len(flat), chunk):
            x = flat[i : i + chunk].float()
            if FLIPS[k]:
                x = apply_flips(x, np.full(len(x), k))
            with autocast():
                parts.append(model.embed(x.to(device)).float())
            bar.update(len(x))
        out.append(torch.cat(parts).reshape(c, m, -1))
    bar.close()
    return torch.stack(out)


@torch.no_grad()
def validate(model, pool: VolumePool, cfg: TrainConfig, device, autocast, chunk: int = 128) -> float:
    """Mean accuracy of ``cfg.val_episodes`` seeded episodes on the held-out pool.

    The pool is embedded once (eval mode, so an embedding does not depend on its batch) and the
    episodes index into the embeddings: each volume is embedded once, not once per episode.
    """
    z = embed_pool_rotations(model, pool, device, autocast, rotations=[0], chunk=chunk, progress=False)[0]
    ts = torch.arange(cfg.way, device=device).repeat_interleave(cfg.shot)
    tq = torch.arange(cfg.way, device=device).repeat_interleave(cfg.query)
    dist = "d*" if cfg.method == "protonet-ce" else "d"
    accs = []
    for e in range(cfg.val_episodes):
        classes, items = pool.episode_indices(cfg.way, cfg.shot, cfg.query, np.random.default_rng([cfg.seed, 7, e]))
        ze = z[torch.as_tensor(classes)[:, None], torch.as_tensor(items)]  # (way, shot + query, D)
        zs, zq = ze[:, : cfg.shot].reshape(-1, z.shape[-1]), ze[:, cfg.shot :].reshape(-1, z.shape[-1])
        logits = -model.distances(zs, ts, zq, cfg.way, dist)
        accs.append((logits.argmax(1) == tq).float().mean().item())
    model.train()
    if cfg.method == "protonet-ce":
        model.encoder.eval()
    return float(np.mean(accs))


def stage_record(checkpoint: dict, path: str | os.PathLike | None) -> dict:
    """What one training stage leaves in the provenance of the models built on it (plain data)."""
    return {
        "method": checkpoint.get("method"), "config": checkpoint.get("config"), "version": checkpoint.get("version"),
        "seed": checkpoint.get("seed"), "argv": checkpoint.get("argv"), "episodes": checkpoint.get("episode"),
        "best_episode": checkpoint.get("best_episode"), "best_val_accuracy": checkpoint.get("best_val_accuracy"),
        "file": None if path is None else {"name": Path(path).name, "sha256": file_sha256(path)},
    }  # fmt: skip


def stages_of(base: dict, path: str | os.PathLike) -> list[dict]:
    """The provenance stages of the model file ``path`` (checkpoint ``base``), the last naming that file with its
    SHA-256: what a model trained on from it records before its own stage."""
    stages = list(base.get("stages") or [stage_record(base, None)])
    stages[-1] = {**stages[-1], "file": stage_record(base, path)["file"]}
    return stages


def continue_from(path: str, method: str, model: torch.nn.Module, model_config: dict) -> list[dict]:
    """Load the weights of the ``method`` model file ``path`` (``--init-from``) into ``model``, whose shape must be
    ``model_config`` too; returns the provenance stages of that file (the last naming it, with its SHA-256), for
    the new model's ``stages`` to start with."""
    base = load_checkpoint(path, method=method)
    if base["config"]["model"] != model_config:
        raise CryoshotError(f"{path} holds a {method} model of another shape ({base['config']['model']}); "
                            "start from one of this run's shape, or without --init-from")  # fmt: skip
    model.load_state_dict(base["state_dict"])
    return stages_of(base, path)


def make_step(family: str, model, pool: VolumePool, cfg: TrainConfig, device, autocast, progress: bool = True):
    """One training step of a family: ``step(rng) -> (loss tensor, accuracy)`` for a seeded generator.

    ``cached-episodic`` embeds the pool under the four wedge-preserving rotations first (the
    encoder is frozen and in eval mode) and draws each episode's embeddings from that cache.
    """
    if family == "supervised":
        lam = cfg.supcon_weight if cfg.method == "fscc" else 0.0

        def supervised(rng):
            n_cls = min(cfg.batch_classes, pool.n_classes)
            x, y = pool.batch(n_cls, min(cfg.batch_items, pool.volumes.shape[1]), rng)
            return _supervised_loss(model, x.to(device), y.to(device), autocast, lam, cfg.supcon_temperature)

        model.train()
        return supervised
    ts = torch.arange(cfg.way, device=device).repeat_interleave(cfg.shot)
    tq = torch.arange(cfg.way, device=device).repeat_interleave(cfg.query)
    if family == "cached-episodic":
        cache = embed_pool_rotations(model, pool, device, autocast, progress=progress)

        def cached_episode(rng):
            cls, its, flips = pool.episode_plan(cfg.way, cfg.shot, cfg.query, rng)
            z = cache[torch.as_tensor(flips), torch.as_tensor(cls), torch.as_tensor(its)]
            return _episode_loss(model, None, ts, tq, cfg.way, cfg.method, autocast, z=z)

        model.train()
        model.encoder.eval()  # frozen: its BatchNorm statistics must not drift
        return cached_episode
    if family == "episodic":

        def episode(rng):
            x, ets, etq = pool.episode(cfg.way, cfg.shot, cfg.query, rng)
            return _episode_loss(model, x.to(device), ets.to(device), etq.to(device), cfg.way, cfg.method, autocast)

        model.train()
        return episode
    raise ValueError(f"unknown training family '{family}'")


STATISTICS_BUFFERS = ("base_mean", "base_centred")


def compact_statistics(state: dict) -> dict:
    """``state`` with FSCC's base-class statistics in float16 (half the file; loading restores float32).

    The statistics feed a Gaussian estimate whose own sampling error (a few dozen items per class) is far
    larger than float16's rounding (relative 5e-4).
    """
    return {k: v.half() if k in STATISTICS_BUFFERS else v for k, v in state.items()}


def check_model_output(out_path: str | os.PathLike, resume: bool, force: bool) -> Path:
    """Refuse an existing model file without ``resume`` or ``force``, a folder or a missing parent; return the Path."""
    out_path = Path(out_path)
    if out_path.exists() and not out_path.is_dir() and not resume and not force:
        # with force, replaced at the first save, not before
        raise CryoshotError(f"{out_path} exists; pass --resume to continue it or --force to start over")
    check_output_free(out_path, force=True)  # a folder given as the model file, a missing parent folder
    return out_path


def train(
    cfg: TrainConfig, out_path: str | os.PathLike, *, resume: bool = False, force: bool = False, progress: bool = True
) -> dict:
    """Train and write the best model to ``out_path`` (``out_path``.last holds the resumable state).

    Returns
    -------
    dict with ``best_val_accuracy``, ``episodes``, ``seconds``, ``history``.
    """
    cfg.validate()
    out_path = check_model_output(out_path, resume, force)
    with output_lock(out_path):  # one run per model file
        return _train(cfg, out_path, resume=resume, progress=progress)


def _train(cfg: TrainConfig, out_path: Path, *, resume: bool, progress: bool) -> dict:
    configure_threads()
    last_path = out_path.with_name(out_path.name + ".last")
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    if cfg.method == "protonet-ce":
        if not cfg.init_from:
            raise CryoshotError("protonet-ce trains on a frozen ProtoNet encoder: pass --init-from PROTONET.pt")
        base = load_checkpoint(cfg.init_from, method=("protonet", "protonet-ce", "finetune", "fscc"))
        base_encoder = base["config"]["encoder"]
        if base_encoder != cfg.encoder:
            raise CryoshotError(f"{cfg.init_from} holds a '{base_encoder}' encoder, but this run builds "
                                f"'{cfg.encoder}'; pass --encoder {base_encoder}")  # fmt: skip
        enc_state = {k[len("encoder.") :]: v for k, v in base["state_dict"].items() if k.startswith("encoder.")}
        model.encoder.load_state_dict(enc_state)
        earlier_stages = stages_of(base, cfg.init_from)
        for p in model.encoder.parameters():
            p.requires_grad_(False)
        model.encoder.eval()
    else:
        earlier_stages = []
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)
    start_ep, best_acc, best_ep, history, elapsed0 = 0, -1.0, 0, [], 0.0
    best_state = None
    if resume and last_path.exists():
        ck = load_checkpoint(last_path, method=cfg.method)
        refuse_changed_settings(ck["config"], cfg.to_dict(), RESUMABLE_CHANGES, last_path)
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        start_ep, best_acc, history = ck["episode"], ck["best_val_accuracy"], ck["history"]
        best_ep = ck.get("best_episode", 0)
        best_state, elapsed0 = ck["best_state_dict"], ck.get("seconds", 0.0)
    finished = start_ep >= cfg.episodes  # resuming a run killed after its last step (e.g. in FSCC's statistics)
    train_pool = None if finished else VolumePool(cfg.pool, progress=progress)
    val_pool = VolumePool(
        PoolConfig(**{**cfg.pool.to_dict(), "n_procedural": cfg.val_classes, "procedural_offset": VALIDATION_OFFSET,
                      "bundled": [], "items_per_class": cfg.val_items_per_class, "seed": cfg.pool.seed + 1000}),
        progress=progress,
    )  # fmt: skip
    use_bf16 = cfg.bf16 and device.type == "cpu"

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16)

    def payload(ep, seconds):
        out = {
            "state_dict": model.state_dict(), "config": cfg.to_dict(), "method": cfg.method, "seed": cfg.seed,
            "episode": ep, "best_episode": best_ep, "best_val_accuracy": best_acc, "history": history, "seconds": seconds,
        }  # fmt: skip
        # every stage that made this model, this one last (each with its config, version, seed and argv)
        out["stages"] = [*earlier_stages, stage_record({**out, "version": __version__, "argv": list(sys.argv)}, None)]
        return out

    step = None if finished else make_step(FAMILIES[cfg.method], model, train_pool, cfg, device, autocast, progress)
    t0 = time.perf_counter() - elapsed0
    bar = tqdm(total=cfg.episodes, initial=start_ep, desc=f"training {cfg.method}", unit="ep", disable=not progress)
    ep = start_ep
    run_acc = []
    while ep < cfg.episodes:
        if cfg.time_budget_s is not None and time.perf_counter() - t0 > cfg.time_budget_s:
            break
        loss, acc = step(np.random.default_rng([cfg.seed, 1, ep]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ep += 1
        run_acc.append(acc)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{np.mean(run_acc[-50:]):.3f}", best_val=f"{best_acc:.3f}")
        if ep % cfg.val_every == 0 or ep == cfg.episodes:
            val = validate(model, val_pool, cfg, device, autocast)
            history.append({"episode": ep, "train_acc": float(np.mean(run_acc[-cfg.val_every :])), "val_acc": val,
                            "seconds": time.perf_counter() - t0})  # fmt: skip
            if val > best_acc:
                best_acc, best_ep = val, ep
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                save_checkpoint(out_path, {**payload(ep, time.perf_counter() - t0), "state_dict": best_state})
            save_checkpoint(last_path, {**payload(ep, time.perf_counter() - t0), "optimizer": opt.state_dict(),
                                        "best_state_dict": best_state})  # fmt: skip
    bar.close()
    seconds = time.perf_counter() - t0
    if best_state is None or (history and history[-1]["episode"] != ep):
        val = validate(model, val_pool, cfg, device, autocast)
        history.append({"episode": ep, "train_acc": float(np.mean(run_acc[-50:] or [0])), "val_acc": val,
                        "seconds": seconds})  # fmt: skip
        if val > best_acc:
            best_acc, best_ep = val, ep
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        save_checkpoint(out_path, {**payload(ep, seconds), "state_dict": best_state})
        save_checkpoint(
            last_path, {**payload(ep, seconds), "optimizer": opt.state_dict(), "best_state_dict": best_state}
        )
    if cfg.method == "fscc":  # statistics of the kept (best) encoder, stored as buffers in the model file
        model.load_state_dict(best_state)
        fill_base_statistics(model, cfg, device, progress)
        save_checkpoint(out_path, {**payload(ep, seconds), "best_episode": best_ep,
                                   "state_dict": compact_statistics(model.state_dict())})  # fmt: skip
    return {"best_val_accuracy": best_acc, "episodes": ep, "seconds": seconds, "history": history}
