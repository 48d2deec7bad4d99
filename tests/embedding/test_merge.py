"""Automatic k by merging over-clustered classes whose aligned averages agree."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cryoshot.embedding.merge import merge_classes


def _views(d: int = 32) -> list[np.ndarray]:
    y, x = np.mgrid[:d, :d] - (d - 1) / 2
    ring = ((np.hypot(x, y) > 5) & (np.hypot(x, y) < 10)).astype(np.float32)
    bar = ((np.abs(x) < 3) & (np.abs(y) < 11)).astype(np.float32)
    ell = ((np.abs(x + 4) < 2.5) & (np.abs(y) < 10)) | ((np.abs(y - 8) < 2.5) & (np.abs(x) < 7))
    return [ring, bar, ndimage.gaussian_filter(ell.astype(np.float32), 0.7)]


def test_classes_of_one_view_merge_and_different_views_do_not():
    rng = np.random.default_rng(0)
    views = _views()
    imgs, labels = [], []
    for v, img in enumerate(views):  # each view over-clustered into two classes of 30 images
        for half in range(2):
            imgs += [img + rng.normal(0, 0.3, img.shape) for _ in range(30)]
            labels += [2 * v + half] * 30
    m = merge_classes(np.stack(imgs).astype(np.float32), np.array(labels), 6)
    assert m.reliable and m.k == 3
    assert len(set(m.groups.tolist())) == 3
    for v in range(3):
        assert m.groups[2 * v] == m.groups[2 * v + 1]  # the two halves of a view merged
    # rotated copies of a view are the same view: alignment finds it
    rot = [ndimage.rotate(views[1], 90, reshape=False, order=1) + rng.normal(0, 0.3, (32, 32)) for _ in range(30)]
    m2 = merge_classes(np.stack([*imgs[60:90], *rot]).astype(np.float32), np.repeat([0, 1], 30), 2)
    assert m2.k == 1


def test_unreliable_classes_leave_k_alone():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1.0, (120, 32, 32)).astype(np.float32)  # nothing but noise: averages do not repeat
    m = merge_classes(noise, np.repeat(np.arange(4), 30), 4)
    assert not m.reliable and m.k == 4 and list(m.groups) == [0, 1, 2, 3]


def test_refine_and_merge_finds_the_views_from_an_over_clustered_start():
    from cryoshot.embedding.mra import MRAConfig
    from cryoshot.embedding.workflow import _refine_and_merge

    rng = np.random.default_rng(2)
    views = _views()
    imgs, truth = [], []
    for v, img in enumerate(views):  # 3 views x 60 images, random in-plane angles, some noise
        for _ in range(60):
            imgs.append(
                ndimage.rotate(img, rng.uniform(0, 360), reshape=False, order=1) + rng.normal(0, 0.3, img.shape)
            )
            truth.append(v)
    raw = np.stack(imgs).astype(np.float32)
    feats = np.eye(3)[truth] + rng.normal(0, 0.05, (len(truth), 3))  # an embedding that knows the views
    res, k, info = _refine_and_merge(raw, feats, 3, MRAConfig(iterations=3, n_angles=36, max_shift_px=2), 0, False)
    assert info["k_over"] == 9 and info["applied"]
    assert res is not None and k == 3
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth, res.labels) > 0.95
