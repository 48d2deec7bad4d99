"""A fast CPU inference copy of a 3D encoder's convolutions (oneDNN blocked layout, BatchNorm folded in).

The eager encoder runs each small Conv3d in PyTorch's default layout, and reorders every activation
to and from oneDNN's blocked layout around each convolution, then runs BatchNorm as a separate pass.
For ``cryoshot-small`` at 24³ that overhead is most of the cost. The copy made here folds each
BatchNorm (running statistics) into its convolution and keeps the activations in oneDNN's layout
from the first block to the last: about 3x the eager fp32 throughput (embeddings equal to about
1e-6), and in bf16 about 6x eager bf16 autocast, on a 2-core Xeon (docs/benchmarks.md).

Only for inference: the copy is cached per encoder and rebuilt whenever a parameter or a running
statistic has changed in place (an optimiser step), and an encoder in training mode is never copied.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F

from cryoshot.models.encoders3d import ConvBlock3d, Encoder3d, pool_maps

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _state_key(encoder: Encoder3d) -> tuple:
    """Changes whenever a parameter or buffer of ``encoder`` is replaced or modified in place."""
    return tuple((id(t), t._version) for t in [*encoder.parameters(), *encoder.buffers()])


def _folded_conv(block: ConvBlock3d) -> tuple[torch.Tensor, torch.Tensor]:
    """A block's Conv3d weight (O, I, k, k, k) and bias (O,) with its BatchNorm (running statistics) folded in."""
    conv, bn = block[0], block[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return (conv.weight * scale.view(-1, 1, 1, 1, 1)).detach(), bias.detach()


def _build(encoder: Encoder3d, bf16: bool) -> Callable[[torch.Tensor], torch.Tensor] | None:
    dtype = torch.bfloat16 if bf16 else torch.float32
    layers = []
    for block in encoder.blocks:
        conv = block[0]
        w, b = _folded_conv(block)
        w = torch._C._nn.mkldnn_reorder_conv3d_weight(w.to_mkldnn(dtype), conv.padding, conv.stride, conv.dilation, 1)
        layers.append((w, b.float().to_mkldnn(), conv.padding, conv.stride, conv.dilation, len(block) > 3))
    pooling = encoder.config.pooling  # the closure must not hold the encoder (the cache's weak key)

    def features(x: torch.Tensor) -> torch.Tensor:
        h = x.float().contiguous().to_mkldnn(dtype)
        for w, b, padding, stride, dilation, pool in layers:
            h = torch.relu_(torch.mkldnn_convolution(h, w, b, padding, stride, dilation, 1))
            if pool:
                h = F.max_pool3d(h, 2)
        return pool_maps(h.to_dense(torch.float32), pooling)

    probe = torch.randn(2, 1, *(encoder.config.work_box,) * 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, got = encoder.features(probe), features(probe)
    tol = 3e-2 if bf16 else 1e-3
    if not torch.allclose(got, ref, rtol=tol, atol=tol * float(ref.abs().max())):
        return None  # a oneDNN build that disagrees: keep the eager path
    return features


def fast_features(encoder: Encoder3d, bf16: bool = False) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``encoder.features`` on the oneDNN copy (same (B, 1, n, n, n) -> (B, dim) contract), or None.

    ``bf16``: weights and activations in bfloat16 (for a CPU with native bf16, where it is about twice
    as fast again; embeddings then agree with fp32 to a few 1e-3 relative, as under autocast).

    None where it cannot apply: no oneDNN in this torch build, the encoder is on a GPU or in training
    mode, or the copy does not reproduce the eager encoder on a probe (then the eager path is used).
    """
    if encoder.training or not torch.backends.mkldnn.is_available():
        return None
    if next(encoder.parameters()).device.type != "cpu" or not all(isinstance(b, ConvBlock3d) for b in encoder.blocks):
        return None
    key = _state_key(encoder)
    slots = _CACHE.setdefault(encoder, {})  # bf16 -> (state key, features or None)
    hit = slots.get(bf16)
    if hit is not None and hit[0] == key:
        return hit[1]
    try:
        fn = _build(encoder, bf16)
    except (RuntimeError, NotImplementedError, AttributeError):  # a torch build without these oneDNN ops
        fn = None
    slots[bf16] = (key, fn)
    return fn
