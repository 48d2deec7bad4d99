"""The Siamese network's opinion on picking candidates: crops, polarity, and which candidates it prefers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cryoshot.models.siamese2d import SiameseConfig, SiameseNet
from cryoshot.picking.views import (
    ViewImage,
    crops_at,
    particle_polarity,
    view_image,
    view_pixel_size,
    view_reference,
    view_scores,
    view_search,
)
from cryoshot.pretrained import resolve_siamese_model


def _shape(kind: str, d: int = 64) -> np.ndarray:
    """A bright 2D particle of 5 Å pixels: an L-shaped dimer (``l``) or a round blob (``disc``)."""
    yy, xx = np.mgrid[:d, :d] - d // 2
    if kind == "disc":
        return (np.hypot(yy, xx) <= 9).astype(np.float32)
    img = ((np.abs(yy) <= 3) & (xx >= -10) & (xx <= 10)).astype(np.float32)
    img += ((np.abs(xx - 10) <= 3) & (yy >= -3) & (yy <= 14)).astype(np.float32)
    return np.clip(img, 0, 1)


def test_crops_are_centred_on_input_coordinates_at_the_network_pixel_size():
    img = np.zeros((400, 400), np.float32)
    img[150, 230] = 1.0  # input pixel (x 230, y 150) at 2.5 Å/px
    v = view_image(img, 2.5, SiameseNet(SiameseConfig()))  # to 5 Å/px
    assert v.factor == pytest.approx(2.0) and v.image.shape == (200, 200)
    c = crops_at(v, np.array([[230.0, 150.0], [5.0, 5.0]]), 16)
    assert c.shape == (2, 16, 16)
    iy, ix = np.unravel_index(np.argmax(c[0]), c[0].shape)
    assert abs(iy - 8) <= 1 and abs(ix - 8) <= 1  # the bright pixel lands in the box's centre
    assert np.isfinite(c[1]).all()  # a box past the edge is filled


def test_a_large_particle_is_embedded_coarser_so_that_it_fills_a_set_share_of_the_box():
    net = SiameseNet(SiameseConfig())  # 64 px at 5 Å/px
    assert view_pixel_size(net, 160.0) == 5.0  # up to 0.6 x 320 Å: the network's own pixel size, never finer
    assert view_pixel_size(net, 100.0) == 5.0
    assert view_pixel_size(net, 384.0) == pytest.approx(10.0)  # 384 Å spans 0.6 x 64 px at 10 Å/px
    assert view_pixel_size(net, 300.0, fill=0.5) == pytest.approx(300.0 / 32)
    img = np.zeros((400, 400), np.float32)
    v = view_image(img, 2.5, net, view_pixel_A=10.0)
    assert v.factor == pytest.approx(4.0) and v.image.shape == (100, 100)


def test_polarity_is_read_from_the_exemplars_dark_or_bright():
    rng = np.random.default_rng(0)
    img = rng.normal(0, 2.0, (400, 400)).astype(np.float32)
    xy = np.array([(60 + 90 * (k % 4), 60 + 90 * (k // 4)) for k in range(15)], float)
    for x, y in xy.astype(int):
        img[y - 32 : y + 32, x - 32 : x + 32] += 0.5 * _shape("disc")  # faint bright blobs of radius 9 px
    v = ViewImage(img, 1.0)
    assert particle_polarity(v, xy, 9.0) == 1.0
    assert particle_polarity(ViewImage(-img, 1.0), xy, 9.0) == -1.0
    assert particle_polarity(ViewImage(-img, 1.0), xy[:1], 9.0) == -1.0  # one exemplar is enough here


def test_fourier_binning_keeps_the_low_frequencies_and_the_scale():
    from cryoshot.picking.micrograph import fourier_bin

    y, x = np.mgrid[:300, :200]
    img = (3.0 + np.cos(2 * np.pi * x / 50.0) + np.sin(2 * np.pi * y / 60.0)).astype(np.float32)
    small = fourier_bin(img, 2.5)
    assert small.shape == (120, 80)
    y2, x2 = np.mgrid[:120, :80] * 2.5  # output pixel k samples input position 2.5 k
    expect = 3.0 + np.cos(2 * np.pi * x2 / 50.0) + np.sin(2 * np.pi * y2 / 60.0)
    np.testing.assert_allclose(small, expect, atol=1e-3)


def _l_and_disc_scene():
    """The shipped network, and a 640^2 micrograph at 5 Å/px with a 6 x 6 grid of dark particles in random
    in-plane angles, alternately L-shaped dimers and round discs; returns (net, view, xy (36, 2), is_l (36,))."""
    from cryoshot.models.siamese2d import load_siamese

    net, _ = load_siamese(resolve_siamese_model("default"))
    rng = np.random.default_rng(1)
    size, n = 640, 36
    img = np.zeros((size, size), np.float32)
    xy, kinds = [], []
    for k in range(n):
        x, y = 60 + (k % 6) * 104, 60 + (k // 6) * 104
        kind = "l" if k % 2 == 0 else "disc"
        part = ndimage.rotate(_shape(kind), rng.uniform(0, 360), reshape=False, order=1)
        img[y - 32 : y + 32, x - 32 : x + 32] -= part  # dark protein, as in raw data
        xy.append((x, y))
        kinds.append(kind)
    img = ndimage.gaussian_filter(img, 1.0) + rng.normal(0, 0.3, img.shape).astype(np.float32)
    return net, ViewImage(img, 1.0), np.array(xy, float), np.array(kinds) == "l"


def test_the_shipped_network_prefers_the_exemplars_particle_to_another_one():
    """Candidates of the exemplars' shape (in new in-plane angles, with noise) outscore round distractors."""
    net, v, xy, is_l = _l_and_disc_scene()
    n = len(xy)
    ex = np.nonzero(is_l)[0][:5]
    ref = view_reference(net, [(v, xy[ex])], diameter_A=150.0)
    assert ref.polarity == -1.0 and ref.features.shape == (5, net.cfg.dense[-1])
    assert ref.view_pixel_A == net.cfg.pixel_size_A  # recorded with the embeddings
    rest = np.setdiff1d(np.arange(n), ex)
    s = view_scores(ref, v, xy[rest])
    assert s.shape == (len(rest),)
    assert s[is_l[rest]].min() > s[~is_l[rest]].max()  # every L above every disc
    wrong = view_scores(type(ref)(net, ref.features, -ref.polarity), v, xy[rest])
    assert not np.allclose(wrong, s)  # the sign matters, so it is not a no-op


def test_view_search_moves_an_off_centre_candidate_back_onto_its_particle():
    net, v, xy, is_l = _l_and_disc_scene()
    ex = np.nonzero(is_l)[0][:5]
    ref = view_reference(net, [(v, xy[ex])], diameter_A=150.0)
    targets = np.nonzero(is_l)[0][5:]  # the other L particles
    rng = np.random.default_rng(3)
    off = rng.choice([-1.0, 1.0], (len(targets), 1)) * np.where(rng.random((len(targets), 1)) < 0.5, [[3, 0]], [[0, 3]])
    start = xy[targets] + off  # 3 px off along x or y
    moved, s = view_search(ref, v, start, step=3)
    before = np.linalg.norm(start - xy[targets], axis=1)
    after = np.linalg.norm(moved - xy[targets], axis=1)
    assert np.mean(after < before) >= 0.75  # most move back onto their particle (a polar embedding needs centring)
    assert (s >= view_scores(ref, v, start) - 1e-9).all()  # the position kept is never worse than the start
    np.testing.assert_allclose(s, view_scores(ref, v, moved), atol=1e-6)  # the score is the one where it ends
    same, s0 = view_search(ref, v, start, step=0)
    np.testing.assert_array_equal(same, start)
    np.testing.assert_allclose(s0, view_scores(ref, v, start))
    edge, _ = view_search(ref, v, np.array([[0.0, 0.0], [639.0, 639.0]]), step=3)
    assert (edge >= 0).all() and (edge <= 639).all()  # never moved off the micrograph
