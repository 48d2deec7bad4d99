"""In-plane alignment, aligned averages, clustering, automatic k, MRA: invariants on toy data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoshot.embedding.align2d import (
    align_to_references,
    aligned_average,
    apply_alignment,
    rotate_images,
    rotational_invariants,
    shift_images,
)
from cryoshot.embedding.cluster import agreement, check_k, cluster_features, kneedle, similarity_matrix
from cryoshot.embedding.mra import MRAConfig, mra_classify
from cryoshot.errors import CryoshotError
from tests.embedding.helpers import rotated_copies, toy_views


def _corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_rotation_by_90_degrees_matches_numpy():
    img = toy_views(32)[0]
    out = rotate_images(torch.from_numpy(img)[None], 90.0)[0].numpy()
    # counter-clockwise by 90° about pixel (16, 16): output p samples the input at R(-90°) p = (py, -px)
    expect = np.zeros_like(img)
    for yy in range(32):
        for xx in range(32):
            sx, sy = (yy - 16) + 16, -(xx - 16) + 16  # source of output pixel (yy, xx): R(-90°) p
            if 0 <= sy < 32 and 0 <= sx < 32:
                expect[yy, xx] = img[sy, sx]
    assert np.allclose(out, expect, atol=1e-4)


def test_shifts_move_images_periodically_whole_and_fractional():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((3, 16, 16)).astype(np.float32))
    whole = torch.tensor([[2.0, -3.0], [0.0, 0.0], [-17.0, 5.0]])
    out = shift_images(x, whole).numpy()
    for i, (sx, sy) in enumerate(whole.long().tolist()):  # pixel (y, x) moves to (y + sy, x + sx), wrapped
        assert np.allclose(out[i], np.roll(x[i].numpy(), (sy, sx), axis=(0, 1)), atol=1e-6)
    # a fractional shift is the Fourier phase ramp: on a band-limited image two halves make one whole pixel
    v = torch.from_numpy(toy_views(16)[:2])
    half = shift_images(shift_images(v, torch.full((2, 2), 0.5)), torch.full((2, 2), 0.5))
    assert np.allclose(half.numpy(), np.roll(v.numpy(), (1, 1), axis=(1, 2)), atol=1e-2)  # Nyquist aside
    frac = torch.tensor([[0.3, -1.7], [2.25, 0.5]])
    assert np.allclose(shift_images(shift_images(v, frac), -frac).numpy(), v.numpy(), atol=1e-2)


def test_alignment_recovers_angle_and_shift():
    img = toy_views(32)[1]
    x = rotated_copies(img, 12, seed=3, max_shift=2.0)
    al = align_to_references(x, img[None], n_angles=72, max_shift_px=4)
    back = apply_alignment(torch.from_numpy(x), torch.from_numpy(al.angle_deg), torch.from_numpy(al.shift_px)).numpy()
    assert min(_corr(b, img) for b in back) > 0.9
    assert al.score.min() > 0.85


def test_direct_and_fft_correlation_give_the_same_alignment(monkeypatch):
    from cryoshot.embedding import align2d

    views = toy_views(32)
    x = np.concatenate([rotated_copies(v, 6, seed=5 + i, max_shift=3.0) for i, v in enumerate(views[:2])])
    direct = align_to_references(x, views[:2], n_angles=24, max_shift_px=3)
    monkeypatch.setattr(align2d, "DIRECT_MAX_SHIFTS", 0)  # force the FFT path
    fft = align_to_references(x, views[:2], n_angles=24, max_shift_px=3)
    assert np.array_equal(direct.ref, fft.ref) and np.array_equal(direct.angle_deg, fft.angle_deg)
    assert np.array_equal(direct.shift_px, fft.shift_px)
    assert np.allclose(direct.score, fft.score, atol=1e-4)
    assert np.array_equal(direct.ref, np.repeat([0, 1], 6))


def test_aligned_average_of_rotated_copies_reproduces_the_original():
    img = toy_views(32)[0]
    x = rotated_copies(img, 40, seed=1, max_shift=2.0, noise=0.3)
    avg, _ = aligned_average(x, seed_index=0, iterations=3)
    # the average sits in the frame of the first copy: bring it back onto the original
    al = align_to_references(avg[None], img[None], n_angles=360, max_shift_px=4)
    back = apply_alignment(torch.from_numpy(avg)[None], torch.from_numpy(al.angle_deg), torch.from_numpy(al.shift_px))
    assert _corr(back[0].numpy(), img) > 0.95
    # an unaligned average of the same copies is a blur, far from the original
    assert _corr(x.mean(0), img) < 0.9


def test_rotational_invariants_ignore_rotation_but_not_the_view():
    a, b = toy_views(32)
    fa = rotational_invariants(rotated_copies(a, 6, seed=2, max_shift=0))
    fb = rotational_invariants(rotated_copies(b, 6, seed=2, max_shift=0))
    within = np.linalg.norm(fa - fa.mean(0), axis=1).max()
    between = np.linalg.norm(fa.mean(0) - fb.mean(0))
    assert within < 0.2 * between


def test_kmeans_and_automatic_k_on_separated_blobs():
    rng = np.random.default_rng(0)
    for k_true in (3, 5, 7):
        centres = rng.normal(0, 10, (k_true, 8))
        y = np.repeat(np.arange(k_true), 40)
        z = centres[y] + rng.normal(0, 0.5, (len(y), 8))
        cl = cluster_features(z, None, k_max=15)
        assert cl.k == k_true and cl.k_auto == k_true
        assert agreement(y, cl.labels)["ari"] > 0.99


def test_kneedle_on_a_textbook_curve():
    ks = np.arange(1, 11)
    inertia = np.array([100, 50, 20, 18, 16, 14.5, 13, 12, 11, 10.0])
    assert kneedle(ks, inertia, "kneedle") == 3
    assert kneedle(ks, inertia, "log-kneedle") == 3


def test_log_kneedle_keeps_a_small_last_split_that_plain_kneedle_misses():
    ks = np.arange(1, 13)
    # four big drops, then a fifth cluster that removes little in absolute terms, then noise
    inertia = np.array([1000, 400, 150, 40, 10, 2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4])
    assert kneedle(ks, inertia, "log-kneedle") == 6
    assert kneedle(ks, inertia, "kneedle") < 6


def test_agreement_is_one_for_a_relabelling_and_low_for_noise():
    y = np.repeat([0, 1, 2], 20)
    assert agreement(y, (y + 1) % 3)["ari"] == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    assert agreement(y, rng.integers(0, 3, len(y)))["ari"] < 0.2


def test_similarity_matrix_is_symmetric_with_a_dominant_diagonal():
    rng = np.random.default_rng(1)
    c = rng.normal(size=(3, 16))
    g = np.repeat([0, 1, 2], 10)
    z = c[g] + 0.1 * rng.normal(size=(30, 16))
    names, m = similarity_matrix(z, g)
    assert list(names) == ["0", "1", "2"]
    assert np.allclose(m, m.T)
    assert (np.diag(m) > 0.95).all() and (m[~np.eye(3, dtype=bool)] < np.diag(m).min()).all()


def test_mra_separates_two_easy_toy_views():
    a, b = toy_views(32)
    x = np.concatenate([rotated_copies(a, 20, seed=4, noise=0.5), rotated_copies(b, 20, seed=5, noise=0.5)])
    y = np.repeat([0, 1], 20)
    x = (x - x.mean((1, 2), keepdims=True)) / x.std((1, 2), keepdims=True)
    res = mra_classify(x, 2, MRAConfig(iterations=6, n_angles=24, seed=0), progress=False)
    assert agreement(y, res.labels)["ari"] > 0.9


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (11, 10), (None, 2)])
def test_impossible_k_is_a_clear_error(k, n):
    with pytest.raises(CryoshotError):
        check_k(k, n)


def _two_views_with_noisy_labels():
    """16 noisy rotated copies of each of two toy views (standardised), true labels, and labels with five wrong."""
    a, b = toy_views(32)
    x = np.concatenate([rotated_copies(a, 16, seed=6, noise=0.5), rotated_copies(b, 16, seed=7, noise=0.5)])
    x = (x - x.mean((1, 2), keepdims=True)) / x.std((1, 2), keepdims=True)
    y = np.repeat([0, 1], 16)
    noisy_init = y.copy()
    noisy_init[[0, 1, 2, 20, 21]] = 1 - noisy_init[[0, 1, 2, 20, 21]]  # five wrong
    return (a, b), x, y, noisy_init


def test_mra_from_initial_labels_and_on_a_cropped_grid():
    _, x, y, noisy_init = _two_views_with_noisy_labels()
    res = mra_classify(x, 2, MRAConfig(iterations=3, n_angles=24, work_box_px=16), progress=False,
                       init_labels=noisy_init)  # fmt: skip
    assert agreement(y, res.labels)["ari"] > 0.9
    assert res.averages.shape == (2, 32, 32)  # averages on the full grid


def test_coarse_to_fine_search_finds_the_exhaustive_alignment():
    from cryoshot.embedding.align2d import align_locally

    views = toy_views(32)
    x = np.concatenate([rotated_copies(v, 8, seed=11 + i, max_shift=3.0, noise=0.3) for i, v in enumerate(views[:2])])
    exhaustive = align_to_references(x, views[:2], n_angles=72, max_shift_px=4)
    coarse = align_to_references(x, views[:2], n_angles=36, max_shift_px=4, top_references=2)
    assert coarse.candidates.shape == (16, 2) and (coarse.candidates[:, 0] == coarse.ref).all()
    fine = align_locally(x, views[:2], coarse.candidates, coarse.candidate_angle_deg, n_angles=72, max_shift_px=4)
    assert np.array_equal(fine.ref, exhaustive.ref)
    assert np.abs((fine.angle_deg - exhaustive.angle_deg + 180) % 360 - 180).max() <= 5.0
    assert np.abs(fine.shift_px - exhaustive.shift_px).max() <= 1.0
    assert (fine.score >= exhaustive.score - 0.02).all()


def test_mra_coarse_to_fine_separates_two_views_from_noisy_labels():
    (a, b), x, y, init = _two_views_with_noisy_labels()
    cfg = MRAConfig(iterations=3, n_angles=24, work_box_px=16, fine_search=True, fine_angles=48)
    res = mra_classify(x, 2, cfg, progress=False, init_labels=init)
    assert agreement(y, res.labels)["ari"] == 1.0
    assert res.averages.shape == (2, 32, 32)
    for avg, view in ((res.averages[res.labels[0]], a), (res.averages[res.labels[-1]], b)):  # up to a rotation
        assert (
            align_to_references(avg[None], view[None], n_angles=72, max_shift_px=4).score[0] > 0.8
        )  # exhaustive: 0.82, 0.87
