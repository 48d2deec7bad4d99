"""Per-item variation of the subtomogram simulator (domain randomisation for training pools)."""

import numpy as np
import pytest

from cryoshot.errors import CryoshotError
from cryoshot.simulate.subtomograms import SubtomogramConfig, SubtomogramSimulator


def _sim(structs, **kw):
    return SubtomogramSimulator(structs, SubtomogramConfig(box_px=24, pixel_size_A=16.0, seed=3, **kw))


def test_variation_leaves_pose_defocus_and_noise_as_they_were(small_structures):
    plain = _sim(small_structures).simulate(range(6))
    varied = _sim(small_structures, tilt_jitter_deg=15, b_factor_max_A2=300).simulate(range(6))
    np.testing.assert_array_equal(plain.matrices, varied.matrices)
    np.testing.assert_array_equal(plain.shifts_px, varied.shifts_px)
    np.testing.assert_array_equal(plain.defocus_um, varied.defocus_um)
    # the transfer function changed, so the volumes did
    assert not np.allclose(plain.clean, varied.clean)


def test_tilt_ranges_and_b_factors_vary_per_item_within_bounds(small_structures):
    sim = _sim(small_structures, tilt_jitter_deg=15, b_factor_max_A2=300)
    draws = [sim._variation(i) for i in range(40)]
    lows = np.array([v.scheme.tilt_min_deg for v in draws])
    highs = np.array([v.scheme.tilt_max_deg for v in draws])
    bs = np.array([v.microscope.b_factor_A2 for v in draws])
    assert lows.min() >= -75 and lows.max() <= -45 and highs.min() >= 45 and highs.max() <= 75
    assert np.all(lows % 5 == 0) and np.all(highs % 5 == 0)
    assert len(set(lows)) > 3 and len(set(zip(lows, highs, strict=True))) > 10  # asymmetric ranges too
    assert bs.min() >= 0 and bs.max() <= 300 and np.all(bs % 25 == 0) and len(set(bs)) > 5
    assert all(v.scheme == sim.config.scheme for v in (_sim(small_structures)._variation(i) for i in range(5)))


def test_neighbours_put_density_at_the_box_edge(small_structures):
    def edge_mass(b):
        d = b.clean.shape[-1]
        z, y, x = np.mgrid[:d, :d, :d] - d // 2
        shell = np.sqrt(x**2 + y**2 + z**2) > 0.4 * d
        return np.abs(b.clean[:, shell]).mean()

    plain = _sim(small_structures, use_ctf=False, use_wedge=False).simulate(range(12))
    crowded = _sim(small_structures, use_ctf=False, use_wedge=False, neighbours=2).simulate(range(12))
    assert edge_mass(crowded) > 2 * edge_mass(plain)
    assert sum(len(_sim(small_structures, neighbours=2)._variation(i).neighbours) for i in range(12)) > 12


def test_tiltseries_fraction_mixes_the_two_paths_item_by_item(small_structures):
    mixed_sim = _sim(small_structures, tiltseries_fraction=0.5)
    which = np.array([mixed_sim._variation(i).tiltseries for i in range(8)])
    assert 0 < which.sum() < 8
    mixed = mixed_sim.simulate(range(8))
    fast = _sim(small_structures).simulate(range(8))
    slow = _sim(small_structures, method="tiltseries").simulate(np.nonzero(which)[0])
    np.testing.assert_allclose(mixed.volumes[which], slow.volumes, atol=1e-5)
    np.testing.assert_allclose(mixed.volumes[~which], fast.volumes[~which], atol=1e-5)


@pytest.mark.parametrize(
    "setting", [{"tilt_jitter_deg": 45}, {"neighbours": -1}, {"tiltseries_fraction": 1.5}, {"b_factor_max_A2": 20000}]
)
def test_variation_settings_out_of_range_are_clear_errors(small_structures, setting):
    with pytest.raises(CryoshotError):
        _sim(small_structures, **setting)
