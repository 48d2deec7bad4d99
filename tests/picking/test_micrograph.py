"""Micrographs for picking: reading them, and background flattening."""

from __future__ import annotations

import numpy as np
import pytest

from cryoshot.errors import CryoshotError
from cryoshot.io.mrc import write_mrc
from cryoshot.picking import micrograph
from cryoshot.picking.micrograph import bin_micrograph, flatten_background, micrograph_header, read_micrograph


def _disc(n: int, r: float, centre: tuple[float, float]) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    return (np.hypot(xx - centre[0], yy - centre[1]) <= r).astype(np.float32)


def _background(n: int, seed: int = 0) -> np.ndarray:
    """A tilted plane plus a broad bump: ice thickness and illumination, many particle diameters wide."""
    yy, xx = np.mgrid[:n, :n] / n
    return (3.0 * xx - 2.0 * yy + 2.0 * np.exp(-((xx - 0.3) ** 2 + (yy - 0.6) ** 2) / 0.1)).astype(np.float32)


def test_flattening_removes_a_smooth_background_and_keeps_particles():
    n, d = 256, 16  # particle diameter 16 px
    particles = _disc(n, d / 2, (80, 90)) + _disc(n, d / 2, (170, 150))
    bg = _background(n)
    flat = flatten_background(particles + bg, d)
    ref = flatten_background(particles, d)
    # the background is gone (away from the edges, where reflection cannot follow a tilt exactly)...
    inner = (slice(2 * d, n - 2 * d),) * 2
    assert np.abs(flat - ref)[inner].max() < 0.1 * np.ptp(bg)
    # ...the particles keep most of their contrast (a window of one diameter, the default, takes about a
    # third of an isolated flat disc's; 2.5 diameters took a tenth, but ranked worse on training structures)
    for c in ((80, 90), (170, 150)):
        inside = _disc(n, d / 4, c).astype(bool)
        assert flat[inside].mean() - np.median(flat) > 0.6
    # without flattening the background would dominate
    assert np.abs((particles + bg) - particles)[inner].max() > 1.0


def test_zero_diameters_keeps_the_micrograph(monkeypatch):
    img = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    monkeypatch.setattr(micrograph, "FLATTEN_DIAMETERS", 0.0)
    assert flatten_background(img, 16) is img


def test_binned_micrograph_is_the_same_with_and_without_a_background_gradient(monkeypatch):
    rng = np.random.default_rng(0)
    n = 1024  # 2 Å/px; a 160 Å particle spans 80 px, 16 px once binned
    img = rng.standard_normal((n, n)).astype(np.float32)
    for _ in range(20):
        img -= 1.0 * _disc(n, 40, tuple(rng.uniform(100, n - 100, 2)))
    tilted = img + img.std() * _background(n)  # about one noise sd: mild for real ice

    def agreement() -> float:
        a = bin_micrograph(img, 2.0, 160.0, 16).image
        b = bin_micrograph(tilted, 2.0, 160.0, 16).image
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    assert agreement() > 0.95
    monkeypatch.setattr(micrograph, "FLATTEN_DIAMETERS", 0.0)  # unflattened, the background dominates
    assert agreement() < 0.7


def test_a_carbon_edge_stays_a_step_not_a_ridge():
    # a Gaussian high-pass turns a step into a ridge a diameter wide on each side, which looks like a
    # row of particles; the running median keeps the step, so only the pixels within half a diameter of it differ
    n, d = 410, 16
    yy, xx = np.mgrid[:n, :n]
    dist = (xx + 0.7 * yy - 300) / np.hypot(1, 0.7)  # signed distance to the edge (px)
    step = 3.0 * (dist > 0).astype(np.float32)
    flat = flatten_background(step, d)
    assert np.abs(flat[np.abs(dist) > d / 2]).max() < 0.5 * 3.0
    assert np.abs(flat[np.abs(dist) > d]).max() < 0.1 * 3.0


def test_a_micrograph_written_as_one_section_reads_as_the_2d_image(tmp_path):
    """Some programs write a 2D micrograph as a volume with nz = 1; it is the same micrograph."""
    img = np.random.default_rng(0).normal(size=(48, 64)).astype(np.float32)
    write_mrc(tmp_path / "flat.mrc", img, 1.5)
    write_mrc(tmp_path / "section.mrc", img[None], 1.5)
    a, pa = read_micrograph(tmp_path / "flat.mrc")
    b, pb = read_micrograph(tmp_path / "section.mrc")
    np.testing.assert_array_equal(a, b)
    assert pa == pb == 1.5 and micrograph_header(tmp_path / "section.mrc") == ((48, 64), 1.5)
    write_mrc(tmp_path / "two.mrc", np.stack([img, img]), 1.5)  # two sections are still a volume
    with pytest.raises(CryoshotError, match="3D volume"):
        read_micrograph(tmp_path / "two.mrc")
