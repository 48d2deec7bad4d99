import numpy as np
import pytest
from scipy.spatial.distance import pdist

from cryoshot.simulate.micrographs import MicrographConfig, MicrographSimulator
from cryoshot.simulate.projections import ProjectionConfig, ProjectionSimulator
from cryoshot.simulate.structures import load_structures


@pytest.fixture(scope="module")
def structs():
    return load_structures(["1bxn", "3cf3"], 8.0, 32)


def test_micrograph_particles_do_not_overlap_and_snr(structs):
    cfg = MicrographConfig(size_px=320, pixel_size_A=8.0, particle_box_px=32, n_particles=30, snr=0.2, ice_gradient=0.0)
    sim = MicrographSimulator(structs, cfg)
    mic = sim.simulate(0)
    assert len(mic.coords_px) >= 10
    assert pdist(mic.coords_px).min() >= 2 * sim.radius_px.max() - 1e-6
    # particles sit where the clean image has signal: local energy at coordinates beats random spots
    e = np.abs(mic.clean)
    at = np.mean([e[int(y) - 3 : int(y) + 4, int(x) - 3 : int(x) + 4].mean() for x, y in mic.coords_px])
    assert at > 2 * e.mean()
    noise = mic.image - mic.clean
    d, size = cfg.particle_box_px, cfg.size_px
    mask = np.zeros((size, size), bool)
    yy, xx = np.ogrid[:size, :size]
    for (x, y), lab in zip(mic.coords_px, mic.labels, strict=True):
        mask |= (xx - round(x)) ** 2 + (yy - round(y)) ** 2 <= sim.radius_px[lab] ** 2
    assert mask.sum() > 0 and d > 0
    assert mic.clean[mask].var() / noise.var() == pytest.approx(0.2, rel=0.02)


def test_micrograph_contaminants_and_determinism(structs):
    cfg = MicrographConfig(
        size_px=256,
        pixel_size_A=8.0,
        particle_box_px=32,
        n_particles=10,
        n_ice_blobs=2,
        carbon_edge=True,
        seed=3,
    )
    a = MicrographSimulator(structs, cfg).simulate(1)
    b = MicrographSimulator(structs, cfg).simulate(1)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.allclose(a.image, MicrographSimulator(structs, cfg).simulate(2).image)


def test_projection_classes(structs):
    cfg = ProjectionConfig(box_px=32, pixel_size_A=8.0, n_views=3, snr=100.0, view_jitter_deg=2.0, max_shift_px=0.0)
    sim = ProjectionSimulator(structs, cfg)
    assert sim.n_classes == 6
    b = sim.simulate(range(24))
    np.testing.assert_allclose(b.clean.var(axis=(1, 2)) / (b.images - b.clean).var(axis=(1, 2)), 100.0, rtol=1e-3)
    flat = b.clean.reshape(len(b.clean), -1)
    corr = np.corrcoef(flat)
    same = b.labels[:, None] == b.labels[None, :]
    off = ~np.eye(len(flat), dtype=bool)
    assert corr[same & off].mean() > corr[~same].mean() + 0.2  # images of a class look alike
