"""Siamese embedding networks for 2D particle images (triplet loss, Lorenzana Santuyo thesis).

Two backbones share one head, the thesis's three dense layers (512, 256, 256) ending in
a 256-d embedding:

``polar`` (default, designed for noisy particle images)
    The image is low-passed, resampled onto polar rings (radius x angle), and passed
    through convolutions that wrap around in angle; features are then pooled over angle.
    A rotation of the image is a cyclic shift along angle, so the embedding is invariant
    to in-plane rotation by construction (up to interpolation), which is exactly what 2D
    classification must ignore. It costs a few MFLOP per image.
``resnet50``
    The thesis's ResNet50 convolutional base (torchvision's layer names, so a torchvision
    ``resnet50`` state dict loads into ``backbone``), on the image replicated to 3 channels.
    Its ImageNet weights cannot be downloaded here; ``load_backbone_weights`` reads a file
    the user gives.

Embeddings are L2-normalised (the thesis's Euclidean distance on unnormalised vectors,
with margin 0.5, otherwise has no scale); cosine similarity is then a dot product.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cryoshot.errors import CryoshotError

BACKBONES = ("polar", "resnet50")


@dataclass
class SiameseConfig:
    """Architecture of a Siamese embedding network (units in the names).

    Attributes
    ----------
    box_px, pixel_size_A : the grid the network expects; other images are resampled to it.
    backbone : ``polar`` or ``resnet50``.
    rings, angles : polar grid (radial samples out to ``radius_frac`` of half the box, angular samples).
    lowpass_px : the image is area-resampled to this size before the polar resampling.
    harmonics : angular Fourier harmonics per ring in the invariant branch (0: no branch).
    channels : widths of the polar backbone's three stages.
    dense : the head's dense layers; the last is the embedding size.
    """

    box_px: int = 64
    pixel_size_A: float = 5.0
    backbone: str = "polar"
    rings: int = 24
    angles: int = 48
    radius_frac: float = 0.95
    lowpass_px: int = 64
    harmonics: int = 13
    channels: tuple[int, int, int] = (16, 32, 64)
    dense: tuple[int, int, int] = (512, 256, 256)

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise CryoshotError(f"unknown backbone '{self.backbone}'; choose one of {', '.join(BACKBONES)}")
        if self.box_px < 16 or self.rings < 4 or self.angles < 8 or self.angles % 4:
            raise CryoshotError("the Siamese grid needs box >= 16, rings >= 4 and angles >= 8 (a multiple of 4)")
        if not 0 <= self.harmonics <= self.angles // 2 + 1:
            raise CryoshotError(f"harmonics must be in 0..{self.angles // 2 + 1}, got {self.harmonics}")
        if len(self.dense) < 1 or min(self.dense) < 2:
            raise CryoshotError("the dense head needs at least one layer of width >= 2")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["dense"] = list(self.channels), list(self.dense)
        return d

    @staticmethod
    def from_dict(d: dict) -> SiameseConfig:
        d = dict(d)
        d["channels"], d["dense"] = tuple(d["channels"]), tuple(d["dense"])
        return SiameseConfig(**d)


def polar_grid(box: int, rings: int, angles: int, radius_frac: float = 0.95) -> torch.Tensor:
    """``grid_sample`` coordinates of a polar grid centred at pixel ``box // 2``.

    Returns
    -------
    (1, rings, angles, 2) float32 in [-1, 1] (x, y), rings from near the centre outwards,
    angles counter-clockwise from +x in steps of 2π / angles.
    """
    r = (torch.arange(rings, dtype=torch.float64) + 0.5) / rings * radius_frac * (box / 2)
    t = torch.arange(angles, dtype=torch.float64) * (2 * math.pi / angles)
    x = r[:, None] * torch.cos(t)[None, :]
    y = r[:, None] * torch.sin(t)[None, :]
    c = box // 2
    # align_corners=True: -1 and 1 are the centres of the first and last pixels
    gx = (x + c) / (box - 1) * 2 - 1
    gy = (y + c) / (box - 1) * 2 - 1
    return torch.stack([gx, gy], dim=-1).float()[None]


class _PolarConv(nn.Module):
    """3x3 convolution, circular in angle (last axis) and zero-padded in radius."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 0, 0), mode="circular")
        x = F.pad(x, (0, 0, 1, 1))
        return F.relu(self.bn(self.conv(x)))


class PolarBackbone(nn.Module):
    """Low-pass, polar resampling, circular convolutions pooled over angle, plus angular spectra.

    Two rotation-invariant branches: the convolutional features pooled over angle, and the
    magnitudes of the first ``harmonics`` angular Fourier harmonics of each ring (a rotation
    changes only their phases; the classical rotational invariants), log-compressed.
    Input (B, 1, D, D) standardised images; output (B, F) rotation-invariant features.
    """

    def __init__(self, cfg: SiameseConfig):
        super().__init__()
        self.cfg = cfg
        c1, c2, c3 = cfg.channels
        self.register_buffer(
            "grid", polar_grid(cfg.lowpass_px, cfg.rings, cfg.angles, cfg.radius_frac), persistent=False
        )
        self.stage1 = nn.Sequential(_PolarConv(1, c1))
        self.stage2 = nn.Sequential(_PolarConv(c1, c2), _PolarConv(c2, c2))
        self.stage3 = nn.Sequential(_PolarConv(c2, c3), _PolarConv(c3, c3))
        self.n_spectral = cfg.rings * cfg.harmonics
        self.spectral_norm = nn.BatchNorm1d(self.n_spectral) if cfg.harmonics else None
        self.out_features = 2 * c3 * (cfg.rings // 4) + self.n_spectral

    def polar(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, D, D) -> (B, 1, rings, angles): area-downsampled to ``lowpass_px``, then polar."""
        if x.shape[-1] != self.cfg.lowpass_px:
            x = F.interpolate(x, size=(self.cfg.lowpass_px,) * 2, mode="area")
        return F.grid_sample(x, self.grid.expand(x.shape[0], -1, -1, -1), mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.polar(x)
        h = self.stage1(p)
        h = F.max_pool2d(self.stage2(F.max_pool2d(h, 2)), 2)
        h = self.stage3(h)  # (B, C, rings/4, angles/4)
        # pool over angle only: radius stays (where a feature lies from the centre matters)
        feats = [torch.cat([h.mean(-1), h.amax(-1)], dim=1).flatten(1)]
        if self.spectral_norm is not None:
            spec = torch.fft.rfft(p[:, 0], dim=-1).abs()[..., : self.cfg.harmonics] / self.cfg.angles
            feats.append(self.spectral_norm(torch.log1p(spec.flatten(1))))
        return torch.cat(feats, dim=1)


class _Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck block (same parameter names)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        return F.relu(self.bn3(self.conv3(h)) + idt)


class ResNet50Backbone(nn.Module):
    """ResNet50 convolutional base without its top (torchvision layout), global average pooled.

    Input (B, 1, D, D); the image is repeated to 3 channels as for ImageNet weights. Output (B, 2048).
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, cin = [], 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            mods = []
            for b in range(blocks):
                mods.append(_Bottleneck(cin, width, stride if b == 0 else 1))
                cin = width * 4
            layers.append(nn.Sequential(*mods))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.out_features = 2048

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.expand(-1, 3, -1, -1)
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        h = self.layer4(self.layer3(self.layer2(self.layer1(h))))
        return h.mean(dim=(-2, -1))


class SiameseNet(nn.Module):
    """Backbone + dense head -> L2-normalised embeddings.

    ``forward``: (B, 1, D, D) float32 standardised images on the config's grid -> (B, E) unit vectors.
    """

    def __init__(self, cfg: SiameseConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.backbone = PolarBackbone(cfg) if cfg.backbone == "polar" else ResNet50Backbone()
        dims = [self.backbone.out_features, *cfg.dense]
        head: list[nn.Module] = []
        for i in range(len(cfg.dense)):
            head.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(cfg.dense) - 1:
                head.append(nn.ReLU())
        self.head = nn.Sequential(*head)

    @property
    def embedding_dim(self) -> int:
        return int(self.cfg.dense[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=-1)


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 0.5):
    """The thesis's Eq. 1, averaged: ``max(|f(A) - f(P)|² - |f(A) - f(N)|² + m, 0)``.

    Parameters
    ----------
    anchor, positive, negative : (T, E) embeddings
    margin : m (thesis default 0.5)

    Returns
    -------
    () tensor, the mean over the T triplets.
    """
    dp = (anchor - positive).pow(2).sum(-1)
    dn = (anchor - negative).pow(2).sum(-1)
    return F.relu(dp - dn + margin).mean()


def batch_triplet_loss(
    z: torch.Tensor, labels: torch.Tensor, margin: float = 0.5, reduce: str = "active"
) -> tuple[torch.Tensor, float]:
    """Eq. 1 over every valid (anchor, positive, negative) triplet of a batch ("batch all").

    With ``reduce="active"`` (training) the mean is over the triplets with a positive loss
    (Hermans et al. 2017), so easy triplets do not dilute the gradient as training
    progresses; ``reduce="all"`` is the plain mean of Eq. 1 over every valid triplet
    (validation, so that the figure falls as the embedding improves).

    Parameters
    ----------
    z : (B, E) embeddings
    labels : (B,) int class of each embedding

    Returns
    -------
    loss : () tensor
    active : fraction of valid triplets with a positive loss
    """
    d = torch.cdist(z, z).pow(2)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    pos = same & ~eye
    neg = ~same
    valid = pos[:, :, None] & neg[:, None, :]  # (a, p, n)
    loss = F.relu(d[:, :, None] - d[:, None, :] + margin) * valid
    n_active = (loss > 1e-12).sum()
    n_valid = valid.sum().clamp_min(1)
    denom = n_active.clamp_min(1) if reduce == "active" else n_valid
    return loss.sum() / denom, float(n_active) / float(n_valid)


def load_backbone_weights(model: SiameseNet, path: str) -> None:
    """Load a torchvision-style ``resnet50`` state dict (plain tensors) into ``model.backbone``.

    The top (``fc.*``) is ignored. Raises when the file is not a plain state dict or its
    tensors do not fit.
    """
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CryoshotError(f"refusing to load {path}: it holds Python objects other than tensors") from exc
    except Exception as exc:  # noqa: BLE001 - torch raises several types for corrupt files
        raise CryoshotError(f"cannot read backbone weights {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CryoshotError(f"{path} is not a state dict of a ResNet50")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.backbone.load_state_dict(state, strict=False)
    if unexpected or len(missing) == len(model.backbone.state_dict()):
        raise CryoshotError(f"{path} does not hold ResNet50 weights in torchvision's layout ({len(unexpected)} "
                            f"unexpected, {len(missing)} missing tensors)")  # fmt: skip


def build_siamese(checkpoint: dict) -> SiameseNet:
    """Rebuild a trained network from a checkpoint's config and weights (eval mode)."""
    cfg = checkpoint["config"]
    net = SiameseNet(SiameseConfig.from_dict(cfg["model"] if "model" in cfg else cfg))
    net.load_state_dict(checkpoint["state_dict"])
    return net.eval()


def load_siamese(path: str | os.PathLike) -> tuple[SiameseNet, dict]:
    """A shipped or trained Siamese model and its checkpoint (weights-only loading)."""
    from cryoshot.models.checkpoint import load_checkpoint

    ck = load_checkpoint(path, method="siamese")
    return build_siamese(ck), ck
