"""The Siamese network: Eq. 1, rotation invariance by construction, ResNet50 layout, a falling loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoshot.embedding.align2d import rotate_images
from cryoshot.models.siamese2d import (
    ResNet50Backbone,
    SiameseConfig,
    SiameseNet,
    batch_triplet_loss,
    load_backbone_weights,
    polar_grid,
    triplet_loss,
)
from tests.embedding.helpers import toy_views


def test_triplet_loss_matches_equation_1():
    g = torch.Generator().manual_seed(0)
    a, p, n = (torch.randn(7, 5, generator=g) for _ in range(3))
    m = 0.5
    direct = [max(float(((a[i] - p[i]) ** 2).sum() - ((a[i] - n[i]) ** 2).sum()) + m, 0.0) for i in range(7)]
    assert float(triplet_loss(a, p, n, m)) == pytest.approx(np.mean(direct), rel=1e-5)


def test_batch_triplet_loss_averages_equation_1_over_all_valid_triplets():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 4, generator=g)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    terms = []
    for a in range(6):
        for p in range(6):
            for n in range(6):
                if a != p and y[a] == y[p] and y[n] != y[a]:
                    terms.append(float(triplet_loss(z[a : a + 1], z[p : p + 1], z[n : n + 1], 0.5)))
    loss_all, frac = batch_triplet_loss(z, y, 0.5, reduce="all")
    assert float(loss_all) == pytest.approx(np.mean(terms), rel=1e-5)
    active = [t for t in terms if t > 0]
    assert float(batch_triplet_loss(z, y, 0.5)[0]) == pytest.approx(np.mean(active), rel=1e-5)
    assert frac == pytest.approx(len(active) / len(terms))


def test_polar_grid_is_centred_and_circular():
    grid = polar_grid(32, rings=4, angles=8)
    assert grid.shape == (1, 4, 8, 2)
    centre = (16 / 31) * 2 - 1
    # every ring is a circle about pixel 16: the mean over angles is the centre
    assert torch.allclose(grid[0].mean(1), torch.full((4, 2), centre), atol=1e-5)


@pytest.mark.parametrize("angle", [30.0, 90.0, 137.0, 250.0])
def test_embeddings_are_invariant_to_in_plane_rotation(angle):
    torch.manual_seed(0)
    net = SiameseNet(SiameseConfig(box_px=32, pixel_size_A=10.0, lowpass_px=32, channels=(8, 8, 16), dense=(32, 16)))
    net.eval()
    views = torch.from_numpy(toy_views(32))
    with torch.no_grad():
        z0 = net(views[:, None])
        z1 = net(rotate_images(views, angle)[:, None])
    same = (z0 * z1).sum(-1)
    other = (z0[0] * z1[1]).sum()
    assert (same > 0.99).all(), same
    assert other < same.min()


def test_resnet50_backbone_has_torchvision_layout_and_loads_weights(tmp_path):
    net = SiameseNet(SiameseConfig(backbone="resnet50", box_px=32, pixel_size_A=10.0))
    keys = set(net.backbone.state_dict())
    assert {"conv1.weight", "layer1.0.downsample.0.weight", "layer4.2.bn3.running_var"} <= keys
    assert sum(p.numel() for p in net.backbone.parameters()) == 23_508_032  # torchvision resnet50 without fc
    with torch.no_grad():
        z = net(torch.randn(2, 1, 32, 32))
    assert z.shape == (2, 256) and torch.allclose(z.norm(dim=1), torch.ones(2))
    donor = ResNet50Backbone()
    torch.nn.init.constant_(donor.conv1.weight, 0.25)
    path = tmp_path / "resnet50.pth"
    torch.save({**donor.state_dict(), "fc.weight": torch.zeros(1000, 2048)}, path)
    load_backbone_weights(net, str(path))
    assert torch.all(net.backbone.conv1.weight == 0.25)


def test_triplet_training_lowers_the_loss_on_toy_views():
    from tests.embedding.helpers import rotated_copies

    torch.manual_seed(0)
    net = SiameseNet(SiameseConfig(box_px=32, pixel_size_A=10.0, lowpass_px=32, channels=(8, 8, 16), dense=(32, 16)))
    a, b = toy_views(32)
    x = np.concatenate([rotated_copies(a, 16, seed=1, noise=1.0), rotated_copies(b, 16, seed=2, noise=1.0)])
    x = torch.from_numpy((x - x.mean((1, 2), keepdims=True)) / x.std((1, 2), keepdims=True))[:, None]
    y = torch.repeat_interleave(torch.tensor([0, 1]), 16)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def val():  # batch statistics in BatchNorm: the running ones lag behind after a few steps
        with torch.no_grad():
            return float(batch_triplet_loss(net(x), y, 0.5, reduce="all")[0])

    before = val()
    for _ in range(20):
        net.train()
        loss, _ = batch_triplet_loss(net(x), y, 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert val() < 0.5 * before
