import numpy as np
import pytest
import torch
from scipy import stats

from cryoshot.errors import CryoshotError
from cryoshot.simulate.optics import transfer_function_3d
from cryoshot.simulate.rotation import rotate_volumes
from cryoshot.simulate.subtomograms import SubtomogramConfig, SubtomogramSimulator


def _sim(structs, **kw):
    cfg = SubtomogramConfig(box_px=24, pixel_size_A=16.0, **kw)
    return SubtomogramSimulator(structs, cfg)


@pytest.mark.parametrize("snr", [0.03, 0.1, 1.0])
@pytest.mark.parametrize("method", ["fast", "tiltseries"])
def test_snr_matches_target(small_structures, snr, method):
    b = _sim(small_structures, snr=snr, method=method).simulate(range(4))
    measured = b.clean.var(axis=(1, 2, 3)) / (b.volumes - b.clean).var(axis=(1, 2, 3))
    np.testing.assert_allclose(measured, snr, rtol=0.02)


def test_projection_convention_is_per_tilt(small_structures):
    # lower per-tilt SNR gives proportionally lower box SNR; fast and tilt-series paths agree within 2x
    lo = _sim(small_structures, snr=0.05, snr_convention="projection").simulate(range(3))
    hi = _sim(small_structures, snr=0.5, snr_convention="projection").simulate(range(3))
    ts = _sim(small_structures, snr=0.05, snr_convention="projection", method="tiltseries").simulate(range(3))

    def box_snr(b):
        return b.clean.var(axis=(1, 2, 3)) / (b.volumes - b.clean).var(axis=(1, 2, 3))

    np.testing.assert_allclose(box_snr(hi) / box_snr(lo), 10.0, rtol=1e-3)
    ratio = box_snr(ts) / box_snr(lo)
    assert np.all((ratio > 0.5) & (ratio < 2.0))


@pytest.mark.parametrize("use_ctf", [False, True])
def test_no_power_inside_missing_wedge(small_structures, use_ctf):
    b = _sim(small_structures, use_ctf=use_ctf, use_dose=False).simulate(range(3))
    tf = transfer_function_3d(24, 16.0, float(b.defocus_um[0]))
    wedge = ~tf.measured
    assert wedge.sum() > 0.2 * wedge.size  # a 60-degree wedge is a big region
    for vol in b.volumes:
        power = np.abs(np.fft.rfftn(vol)) ** 2
        assert power[wedge].sum() < 1e-10 * power.sum()


def test_fast_path_agrees_with_tilt_series(small_structures):
    fast = _sim(small_structures).simulate(range(4))
    slow = _sim(small_structures, method="tiltseries").simulate(range(4))
    for a, b in zip(fast.clean, slow.clean, strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.85


def test_item_is_pure_function_of_seed_and_index(small_structures):
    sim = _sim(small_structures, seed=5)
    whole = sim.simulate(range(8))
    part = sim.simulate([6, 2])
    np.testing.assert_array_equal(part.volumes[0], whole.volumes[6])
    np.testing.assert_array_equal(part.volumes[1], whole.volumes[2])
    again = _sim(small_structures, seed=5).simulate(range(8))
    np.testing.assert_array_equal(again.volumes, whole.volumes)
    other = _sim(small_structures, seed=6).simulate(range(8))
    assert not np.allclose(other.volumes, whole.volumes)
    assert list(whole.labels) == [0, 1] * 4


def test_rotations_are_uniform_on_so3(small_structures):
    sim = _sim(small_structures)
    mats = np.stack([sim._draw(i)[1] for i in range(3000)])
    assert np.abs(mats.mean(0)).max() < 0.05  # E[R] = 0 under the Haar measure
    np.testing.assert_allclose((mats**2).mean(0), 1 / 3, atol=0.03)
    # the image of the z axis is uniform on the sphere: its z component is uniform on [-1, 1]
    assert stats.kstest(mats[:, 2, 2], "uniform", args=(-1, 2)).pvalue > 1e-3


def test_recorded_pose_reproduces_the_particle(small_structures):
    sim = _sim(small_structures, use_ctf=False, use_wedge=False, use_dose=False, max_shift_px=2.0)
    b = sim.simulate(range(4))
    dens = torch.from_numpy(np.stack([small_structures[k].density for k in b.labels]))
    ref = rotate_volumes(dens, torch.from_numpy(b.matrices), torch.from_numpy(b.shifts_px)).numpy()
    for a, r in zip(b.clean, ref, strict=True):
        assert np.corrcoef(a.ravel(), r.ravel())[0, 1] > 0.99


def test_invert_flips_contrast(small_structures):
    a = _sim(small_structures).simulate(range(2))
    b = _sim(small_structures, invert=True).simulate(range(2))
    np.testing.assert_allclose(a.clean, -b.clean, atol=1e-6)


@pytest.mark.parametrize(
    "kw,msg",
    [({"snr": 0.0}, "SNR must be positive"), ({"snr": -1.0}, "SNR must be positive"),
     ({"snr_convention": "x"}, "convention"), ({"defocus_min_um": 3, "defocus_max_um": 2}, "defocus")],
)  # fmt: skip
def test_bad_config(small_structures, kw, msg):
    with pytest.raises(CryoshotError, match=msg):
        _sim(small_structures, **kw)


def test_empty_structure_list():
    with pytest.raises(CryoshotError, match="at least one"):
        SubtomogramSimulator([], SubtomogramConfig())
