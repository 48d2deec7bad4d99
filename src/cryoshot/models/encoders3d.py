"""3D encoders for subtomograms (pure nn.Modules built from a config).

``protonet3d-paper``
    The ProtoNet3D encoder of the ProtoNet-CE paper: four ConvBlocks (Conv3d 64
    filters 3^3, BatchNorm, ReLU, MaxPool 2), then flatten, at the full 40^3 input.
``conv6-paper``
    The FSCC paper's Conv-6: six ConvBlocks (64 filters), pooling while the size
    allows (40 -> 20 -> 10 -> 5 -> 2 -> 1), flattened to 64-d.
``cryoshot-small`` (default)
    Fourier-downsamples the input to 24^3 (10 Å -> 16.7 Å voxels, detail to about
    33 Å), then four narrower ConvBlocks (16-32-64-128) and global average + max
    pooling (256-d). About 10x fewer multiply-adds than the paper's encoder and far
    less memory traffic; runs in ``channels_last_3d``.

All standardise each input volume (zero mean, unit variance) first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from cryoshot.data.transforms import resample_flips, standardise


@dataclass
class EncoderConfig:
    """Encoder architecture. ``input_box`` and ``voxel_size_A`` describe the data it expects."""

    name: str = "cryoshot-small"
    input_box: int = 40
    voxel_size_A: float = 10.0
    work_box: int = 24
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    pooling: str = "avgmax"  # "flatten" (paper) or "avgmax"

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "protonet3d-paper": dict(name="protonet3d-paper", work_box=40, channels=[64, 64, 64, 64], pooling="flatten"),
    "cryoshot-small": dict(name="cryoshot-small", work_box=24, channels=[16, 32, 64, 128], pooling="avgmax"),
    # FSCC paper's Conv-6: six ConvBlocks of 64 filters, pooling while the size allows, flatten (64-d at 40^3)
    "conv6-paper": dict(name="conv6-paper", work_box=40, channels=[64] * 6, pooling="flatten"),
    # for tests and quick experiments only
    "cryoshot-tiny": dict(name="cryoshot-tiny", work_box=12, channels=[8, 16, 32], pooling="avgmax"),
}


def encoder_config(name: str, **overrides) -> EncoderConfig:
    """Config of a named preset, with overrides (e.g. ``input_box``)."""
    if name not in PRESETS:
        from cryoshot.errors import CryoshotError

        raise CryoshotError(f"unknown encoder '{name}'; choose one of {', '.join(PRESETS)}")
    return EncoderConfig(**{**PRESETS[name], **overrides})


class ConvBlock3d(nn.Sequential):
    """Conv3d 3^3 -> BatchNorm -> ReLU -> MaxPool 2 (pooling skipped when the size is 1)."""

    def __init__(self, c_in: int, c_out: int, pool: bool = True):
        layers: list[nn.Module] = [
            nn.Conv3d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm3d(c_out),
            nn.ReLU(inplace=True),
        ]
        if pool:
            layers.append(nn.MaxPool3d(2))
        super().__init__(*layers)


class Encoder3d(nn.Module):
    """Subtomogram encoder.

    Forward
    -------
    x : (B, 1, D, D, D) or (B, D, D, D) float, D == config.input_box
    returns (B, dim) embeddings
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        chans = [1, *config.channels]
        size = config.work_box
        blocks = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            pool = size >= 2
            blocks.append(ConvBlock3d(a, b, pool=pool))
            size = size // 2 if pool else size
        self.blocks = nn.Sequential(*blocks)
        self.final_size = size
        c = config.channels[-1]
        self.dim = c * size**3 if config.pooling == "flatten" else 2 * c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.prepare(x)[0])

    def prepare(self, x: torch.Tensor, flips: Sequence[tuple[int, ...]] = ((),)) -> torch.Tensor:
        """(B, 1, D, D, D) or (B, D, D, D) at ``input_box`` -> standardised (R, B, 1, n, n, n) at ``work_box``.

        One grid per entry of ``flips`` (axes of a volume flipped before resampling, as ``FLIPS``); the
        flips share one forward FFT (``resample_flips``).
        """
        if x.ndim == 5:
            x = x[:, 0]
        x = standardise(x)  # commutes with the flips
        if self.config.work_box != x.shape[-1]:
            return resample_flips(x, self.config.work_box, list(flips))[:, :, None]
        return torch.stack([torch.flip(x, dims) if dims else x for dims in flips])[:, :, None]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Prepared (B, 1, n, n, n) volumes -> (B, dim) embeddings."""
        return pool_maps(self.blocks(x.contiguous(memory_format=torch.channels_last_3d)), self.config.pooling)


def pool_maps(h: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, C, s, s, s) maps -> (B, dim): "flatten" (C s³) or "avgmax" (global average and max, 2C)."""
    if pooling == "flatten":
        return h.flatten(1)
    return torch.cat([h.mean(dim=(2, 3, 4)), h.amax(dim=(2, 3, 4))], dim=1)
