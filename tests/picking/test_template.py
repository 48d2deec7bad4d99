"""The exemplars' template, its NCC, and the fused figure of merit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cryoshot.picking.merit import fuse_scores
from cryoshot.picking.template import exemplar_template, ncc_at, ncc_map
from cryoshot.picking.threshold import auto_threshold


def _disc(w: int = 24, r: float = 7.0) -> np.ndarray:
    y, x = np.mgrid[:w, :w] - (w - 1) / 2
    return (np.hypot(x, y) <= r).astype(np.float32)


def test_template_of_rotated_copies_is_their_rotational_average():
    bar = np.zeros((24, 24), np.float32)
    bar[10:14, 4:20] = 1.0  # an elongated particle in random in-plane angles
    wins = np.stack([ndimage.rotate(bar, a, reshape=False, order=1) for a in (0, 40, 95, 130, 170)])[:, None]
    t = exemplar_template(wins)
    assert t.shape == (24, 24)
    # rotationally averaged: the same at four points of one ring
    ring = [t[12, 12 + 6], t[12 - 6, 12], t[12, 12 - 6], t[12 + 6, 12]]
    assert np.ptp(ring) < 0.05 * t.max()
    assert t[12, 12] > t[0, 0] + 0.5 * t.max()  # the particle in the middle, not the corners


def test_ncc_peaks_on_the_particles_and_is_one_for_the_template_itself():
    rng = np.random.default_rng(0)
    img = rng.normal(0, 0.3, (128, 128)).astype(np.float32)
    centres = [(30, 40), (90, 70), (50, 100)]
    for x, y in centres:
        img[y - 12 : y + 12, x - 12 : x + 12] += _disc()
    m = ncc_map(img, _disc())
    assert m.shape == img.shape and np.nanmax(np.abs(m)) <= 1.0 + 1e-4
    got = ncc_at(m, np.array(centres, float), radius=1)
    background = ncc_at(m, np.array([(10, 110), (110, 15), (70, 20)], float), radius=1)
    assert got.min() > 0.6 > background.max()
    clean = np.zeros((64, 64), np.float32)
    clean[20:44, 20:44] = _disc()
    assert ncc_map(clean, _disc())[32, 32] == pytest.approx(1.0, abs=1e-3)


def test_fused_score_ranks_by_each_opinion_at_the_ends_and_mixes_between():
    cos = np.array([0.9, 0.5, 0.3, 0.1])
    ncc = np.array([0.1, 0.2, 0.6, 0.3])
    assert list(np.argsort(-fuse_scores(cos, [(ncc, 0.0)]))) == [0, 1, 2, 3]
    assert list(np.argsort(-fuse_scores(cos, [(ncc, 1.0)]))) == [2, 3, 1, 0]
    f = fuse_scores(cos, [(ncc, 0.5)])
    assert abs(f.mean()) < 1e-9  # both standardised
    z = np.arctanh(cos)
    expect = 0.5 * (z - z.mean()) / z.std() + 0.5 * (ncc - ncc.mean()) / ncc.std()
    np.testing.assert_allclose(f, expect)


def test_three_opinions_mix_with_the_cosine_taking_the_rest():
    rng = np.random.default_rng(3)
    cos, ncc, view = rng.uniform(-0.5, 0.9, 50), rng.normal(0, 1, 50), rng.uniform(0, 1, 50)

    def z(v):
        return (v - v.mean()) / v.std()

    f = fuse_scores(cos, [(ncc, 0.4), (view, 0.5)])
    np.testing.assert_allclose(f, 0.1 * z(np.arctanh(cos)) + 0.4 * z(ncc) + 0.5 * z(view))
    np.testing.assert_allclose(fuse_scores(cos, []), z(np.arctanh(cos)))
    with pytest.raises(ValueError, match="sum to at most 1"):
        fuse_scores(cos, [(ncc, 0.6), (view, 0.5)])


def test_thresholds_on_standardised_scores_take_them_as_they_are():
    rng = np.random.default_rng(1)
    s = np.concatenate([rng.normal(-0.4, 0.3, 500), rng.normal(2.5, 0.4, 60)])  # beyond -1..1
    t = auto_threshold(s, "gmm", fisher=False)
    assert (s[500:] > t).mean() > 0.95 and (s[:500] > t).sum() <= 5
