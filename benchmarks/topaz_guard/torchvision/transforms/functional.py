"""rotate, hflip, vflip on (..., H, W) tensors, as torchvision.transforms.functional does them."""

import math

import torch
import torch.nn.functional as F


def rotate(img: torch.Tensor, angle: float, *args, **kwargs) -> torch.Tensor:
    """Rotate counter-clockwise by ``angle`` degrees about the centre (nearest, zero fill)."""
    shape = img.shape
    x = img.reshape(-1, 1, shape[-2], shape[-1]).float()
    a = math.radians(angle)
    theta = torch.tensor([[math.cos(a), math.sin(a), 0.0], [-math.sin(a), math.cos(a), 0.0]], dtype=x.dtype)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.reshape(shape).to(img.dtype)


def hflip(img: torch.Tensor) -> torch.Tensor:
    return img.flip(-1)


def vflip(img: torch.Tensor) -> torch.Tensor:
    return img.flip(-2)
