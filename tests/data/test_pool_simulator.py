"""Training pools reach every simulator setting (PoolConfig.simulator / train --simulator)."""

import numpy as np
import pytest

from cryoshot.data.synthetic import PoolConfig, VolumePool
from cryoshot.errors import CryoshotError
from cryoshot.simulate.structures import load_structures
from cryoshot.simulate.subtomograms import SubtomogramConfig, SubtomogramSimulator

SMALL = dict(n_procedural=2, bundled=[], items_per_class=2, snrs=[0.1], box_px=16, pixel_size_A=16.0, seed=3)


def test_default_pool_is_the_plain_simulator_and_overrides_change_it():
    plain = VolumePool(PoolConfig(**SMALL), progress=False).volumes.float().numpy()
    structs = load_structures(["procedural:0", "procedural:1"], 16.0, 16)
    direct = SubtomogramSimulator(structs, SubtomogramConfig(box_px=16, pixel_size_A=16.0, snr=0.1, seed=3))
    b = direct.simulate(range(4), with_clean=False)
    for k, i in enumerate(b.indices):
        np.testing.assert_allclose(plain[i % 2, i // 2], b.volumes[k], atol=2e-3, rtol=1e-2)  # float16 storage
    no_wedge = VolumePool(PoolConfig(**SMALL, simulator={"use_wedge": "false", "microscope.b_factor_A2": 100}),
                          progress=False).volumes.float().numpy()  # fmt: skip
    assert np.abs(no_wedge - plain).max() > 0.1


@pytest.mark.parametrize("bad,msg", [({"snr": 1}, "unknown simulator setting 'snr'"),
                                     ({"max_shift_px": "x"}, "needs a float"),
                                     ({"max_shift_px": 100}, "largest shift")])  # fmt: skip
def test_bad_simulator_settings_are_clear_errors(bad, msg):
    with pytest.raises(CryoshotError, match=msg):
        PoolConfig(**SMALL, simulator=bad).subtomogram_config(0.1, 0)
