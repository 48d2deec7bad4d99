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

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cryoshot.data.synthetic import FLIPS, VALIDATION_OFFSET, PoolConfig, VolumePool, apply_flips
from cryoshot.errors import CryoshotError
from cryoshot.fewshot.fscc import BaseStatistics, supcon_loss
from cryoshot.fewshot.protonet import ProtoNet
from cryoshot.models.encoders3d import encoder_config
from cryoshot.train.checkpoint import load_checkpoint, save_checkpoint
from cryoshot.utils.threads import configure_threads

METHODS = ("protonet", "protonet-ce", "finetune", "fscc")
SUPERVISED = ("finetune", "fscc")


@dataclass
class TrainConfig:
    """Settings of an episodic training run."""

    method: str = "protonet"
    encoder: str = "cryoshot-small"
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
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(cfg: TrainConfig) -> ProtoNet:
    enc = encoder_config(cfg.encoder, input_box=cfg.pool.box_px, voxel_size_A=cfg.pool.pixel_size_A)
    n_base = len(cfg.pool.structure_specs()) if cfg.method in SUPERVISED else 0
    stats = cfg.stats_items_per_class if cfg.method == "fscc" else 0
    return ProtoNet(enc, adapter=cfg.method == "protonet-ce", n_base_classes=n_base, base_stats_items=stats)


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
    from cryoshot.evaluate.fewshot import embed_volumes

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


def train(
    cfg: TrainConfig, out_path: str | os.PathLike, *, resume: bool = False, force: bool = False, progress: bool = True
) -> dict:
    """Train and write the best model to ``out_path`` (``out_path``.last holds the resumable state).

    Returns
    -------
    dict with ``best_val_accuracy``, ``episodes``, ``seconds``, ``history``.
    """
    if cfg.method not in METHODS:
        raise CryoshotError(f"method must be one of {METHODS}, got '{cfg.method}'")
    need = cfg.shot + cfg.query
    if cfg.pool.items_per_class < need or cfg.val_items_per_class < need:
        raise CryoshotError(f"pools need at least shot + query = {need} items per class")
    if cfg.way > cfg.val_classes:
        raise CryoshotError(f"--way {cfg.way} exceeds the {cfg.val_classes} validation classes")
    configure_threads()
    out_path = Path(out_path)
    last_path = out_path.with_name(out_path.name + ".last")
    if out_path.exists() and not resume and not force:  # with force, replaced at the first save, not before
        raise CryoshotError(f"{out_path} exists; pass --resume to continue it or --force to start over")
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    if cfg.method == "protonet-ce":
        if not cfg.init_from:
            raise CryoshotError("protonet-ce trains on a frozen ProtoNet encoder: pass --init-from PROTONET.pt")
        base = load_checkpoint(cfg.init_from, method=("protonet", "protonet-ce"))
        base_encoder = base["config"]["encoder"]
        if base_encoder != cfg.encoder:
            raise CryoshotError(f"{cfg.init_from} holds a '{base_encoder}' encoder, but this run builds "
                                f"'{cfg.encoder}'; pass --encoder {base_encoder}")  # fmt: skip
        enc_state = {k[len("encoder.") :]: v for k, v in base["state_dict"].items() if k.startswith("encoder.")}
        model.encoder.load_state_dict(enc_state)
        for p in model.encoder.parameters():
            p.requires_grad_(False)
        model.encoder.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)
    start_ep, best_acc, best_ep, history, elapsed0 = 0, -1.0, 0, [], 0.0
    best_state = None
    if resume and last_path.exists():
        ck = load_checkpoint(last_path, method=cfg.method)
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        start_ep, best_acc, history = ck["episode"], ck["best_val_accuracy"], ck["history"]
        best_ep = ck.get("best_episode", 0)
        best_state, elapsed0 = ck["best_state_dict"], ck.get("seconds", 0.0)
    train_pool = VolumePool(cfg.pool, progress=progress)
    val_pool = VolumePool(
        PoolConfig(**{**cfg.pool.to_dict(), "n_procedural": cfg.val_classes, "procedural_offset": VALIDATION_OFFSET,
                      "bundled": [], "items_per_class": cfg.val_items_per_class, "seed": cfg.pool.seed + 1000}),
        progress=progress,
    )  # fmt: skip
    use_bf16 = cfg.bf16 and device.type == "cpu"

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16)

    def payload(ep, seconds):
        return {
            "state_dict": model.state_dict(), "config": cfg.to_dict(), "method": cfg.method, "seed": cfg.seed,
            "episode": ep, "best_episode": best_ep, "best_val_accuracy": best_acc, "history": history, "seconds": seconds,
        }  # fmt: skip

    cache = None
    if cfg.method == "protonet-ce":  # frozen encoder: embed the pool once, episodes index into it
        cache = embed_pool_rotations(model, train_pool, device, autocast, progress=progress)
    model.train()
    if cfg.method == "protonet-ce":
        model.encoder.eval()
    t0 = time.perf_counter() - elapsed0
    bar = tqdm(total=cfg.episodes, initial=start_ep, desc=f"training {cfg.method}", unit="ep", disable=not progress)
    ep = start_ep
    run_acc = []
    while ep < cfg.episodes:
        if cfg.time_budget_s is not None and time.perf_counter() - t0 > cfg.time_budget_s:
            break
        rng = np.random.default_rng([cfg.seed, 1, ep])
        if cfg.method in SUPERVISED:
            n_cls = min(cfg.batch_classes, train_pool.n_classes)
            x, y = train_pool.batch(n_cls, min(cfg.batch_items, train_pool.volumes.shape[1]), rng)
            lam = cfg.supcon_weight if cfg.method == "fscc" else 0.0
            loss, acc = _supervised_loss(model, x.to(device), y.to(device), autocast, lam, cfg.supcon_temperature)
        elif cache is not None:  # frozen encoder: the episode's embeddings from the cache
            cls, its, flips = train_pool.episode_plan(cfg.way, cfg.shot, cfg.query, rng)
            z = cache[torch.as_tensor(flips), torch.as_tensor(cls), torch.as_tensor(its)]
            ts = torch.arange(cfg.way, device=device).repeat_interleave(cfg.shot)
            tq = torch.arange(cfg.way, device=device).repeat_interleave(cfg.query)
            loss, acc = _episode_loss(model, None, ts, tq, cfg.way, cfg.method, autocast, z=z)
        else:
            x, ts, tq = train_pool.episode(cfg.way, cfg.shot, cfg.query, rng)
            loss, acc = _episode_loss(model, x.to(device), ts.to(device), tq.to(device), cfg.way, cfg.method, autocast)
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
        save_checkpoint(out_path, {**payload(ep, seconds), "best_episode": best_ep, "state_dict": model.state_dict()})
    return {"best_val_accuracy": best_acc, "episodes": ep, "seconds": seconds, "history": history}


def load_model(path: str | os.PathLike, method: str | tuple[str, ...] | None = None) -> tuple[ProtoNet, dict]:
    """Rebuild a trained ProtoNet / ProtoNet-CE from its checkpoint alone; returns (model in eval mode, checkpoint)."""
    ck = load_checkpoint(path, method=method)
    try:
        cfg = TrainConfig.from_dict(ck["config"])
        model = build_model(cfg)
        model.load_state_dict(ck["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CryoshotError(
            f"{path} is a cryoshot checkpoint whose configuration or weights this version cannot rebuild "
            f"({first}); retrain it with this version"
        ) from exc
    model.eval()
    return model, ck
