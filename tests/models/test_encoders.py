"""The encoder presets: the paper encoders' documented shapes, and a few Adam steps lower a prototypical loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoshot.models.encoders3d import Encoder3d, encoder_config
from cryoshot.models.protonet import ProtoNet

from ..fewshot.helpers import BOX, toy_shape

# preset -> (ConvBlocks, pooled blocks, final size, embedding dim) at the documented 40^3 input, 10 Å voxels
DOCUMENTED = {
    "protonet3d-paper": (4, 4, 2, 64 * 2**3),  # 40 -> 20 -> 10 -> 5 -> 2, flattened
    "conv6-paper": (6, 5, 1, 64),  # 40 -> 20 -> 10 -> 5 -> 2 -> 1, no pooling at 1, flattened
    "cryoshot-small": (4, 4, 1, 2 * 128),  # resampled to 24 -> 12 -> 6 -> 3 -> 1, average + max pooling
}


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_encoder_presets_have_the_documented_shapes(name):
    n_blocks, n_pooled, final, dim = DOCUMENTED[name]
    torch.manual_seed(0)
    enc = Encoder3d(encoder_config(name, input_box=40, voxel_size_A=10.0)).eval()
    assert len(enc.blocks) == n_blocks and enc.final_size == final and enc.dim == dim
    pooled = [any(isinstance(m, torch.nn.MaxPool3d) for m in block) for block in enc.blocks]
    assert pooled == [True] * n_pooled + [False] * (n_blocks - n_pooled)
    x = torch.randn(2, 40, 40, 40)
    with torch.no_grad():
        z = enc(x)
        assert z.shape == (2, dim) and torch.isfinite(z).all()
        torch.testing.assert_close(enc(x[:, None]), z)  # (B, 1, D, D, D) is the same input
        # each volume is standardised first: offset and scale do not change the embedding
        torch.testing.assert_close(enc(3.0 * x + 1.0), z, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(z[0], z[1])


def _toy_batch(per_class: int, seed: int, noise: float = 1.5):
    """Ball vs cube at high noise: not separable by an untrained encoder (initial loss 0.9-5)."""
    rng = np.random.default_rng(seed)
    x = np.stack([toy_shape(k, rng, noise) for k in (0, 5) for _ in range(per_class)])
    return torch.from_numpy(x), torch.from_numpy(np.repeat(np.arange(2), per_class))


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_a_few_adam_steps_lower_the_prototypical_loss(name):
    # the paper encoders at their 40^3 box cost about 1 s a step on one core; the same architecture (blocks,
    # channels, pooling) on a 16^3 box (work_box overridden too, so nothing is resampled) is 20x cheaper
    torch.manual_seed(0)
    model = ProtoNet(encoder_config(name, input_box=BOX, work_box=BOX, voxel_size_A=10.0), adapter=False)
    x, y = _toy_batch(4, seed=0)
    support = torch.tensor([0, 1, 4, 5])  # 2 of each class
    query = torch.tensor([2, 3, 6, 7])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        z = model.embed(x)
        loss = torch.nn.functional.cross_entropy(-model.distances(z[support], y[support], z[query], 2, "d"), y[query])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # measured over seeds 0-4: the last loss is 0-5% of the first (protonet3d-paper, conv6-paper, cryoshot-small)
    assert losses[-1] < 0.25 * losses[0], losses
