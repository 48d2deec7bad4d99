import numpy as np
import pytest
from scipy import ndimage

from cryoshot.errors import CryoshotError
from cryoshot.simulate.splits import NOVEL_STRUCTURES, TRAIN_STRUCTURES
from cryoshot.simulate.structures import (
    bundled_structure_names,
    load_structures,
    procedural_blobs,
    resample_to_box,
)


def test_bundled_maps_and_split():
    names = bundled_structure_names()
    assert len(names) == 16
    assert set(TRAIN_STRUCTURES) | set(NOVEL_STRUCTURES) == set(names)
    assert not set(TRAIN_STRUCTURES) & set(NOVEL_STRUCTURES) and len(TRAIN_STRUCTURES) <= 8


@pytest.mark.parametrize("spec", ["1bxn", "procedural:3"])
@pytest.mark.parametrize("pixel,box", [(10.0, 40), (14.0, 24)])
def test_structures_are_centred_on_their_centre_of_mass(spec, pixel, box):
    (s,) = load_structures([spec], pixel, box)
    assert s.density.shape == (box,) * 3
    com = ndimage.center_of_mass(np.clip(s.density, 0, None))
    np.testing.assert_allclose(com, box // 2, atol=0.5)


def test_procedural_is_deterministic_varied_and_sized():
    a = procedural_blobs(4, seed=0)
    b = procedural_blobs(4, seed=0)
    np.testing.assert_array_equal(a[0], b[0])
    diam = []
    kinds = set()
    for k in range(60):
        centres, sigmas, _, desc = procedural_blobs(k, seed=0)
        diam.append(2 * (np.linalg.norm(centres, axis=1).max() + 2 * sigmas.mean()))
        kinds.add(desc.split()[0].rstrip(","))
    diam = np.array(diam) / 10.0  # nm
    assert diam.min() >= 5.9 and diam.max() <= 35.1
    assert len(kinds) >= 6  # several symmetry types among 60 structures


def test_resample_scales_size():
    z, y, x = np.indices((40, 40, 40)) - 20
    ball = ((x**2 + y**2 + z**2) <= 100).astype(np.float32)  # radius 10 voxels at 5 Å = 50 Å
    out = resample_to_box(ball, 5.0, 10.0, 20)
    assert np.sum(out > 0.5) == pytest.approx(4 / 3 * np.pi * 5**3, rel=0.15)


def test_atomic_model_density(tmp_path):
    lines = []
    rng = np.random.default_rng(0)
    pts = rng.normal(0, 12, size=(200, 3)) + [100, -30, 12]  # off-centre on purpose
    for i, (x, y, z) in enumerate(pts):
        lines.append(f"ATOM  {i + 1:5d}  CA  ALA A{i + 1:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00           C")
    (tmp_path / "m.pdb").write_text("\n".join(lines) + "\nEND\n")
    (s,) = load_structures([str(tmp_path / "m.pdb")], 6.0, 24)
    com = ndimage.center_of_mass(np.clip(s.density, 0, None))
    np.testing.assert_allclose(com, 12, atol=0.6)
    assert s.density.max() == pytest.approx(1.0)


def test_bad_structure_specs(tmp_path):
    with pytest.raises(CryoshotError, match="unknown structure"):
        load_structures(["nonsense"], 10.0, 24)
    with pytest.raises(CryoshotError, match="no structures"):
        load_structures([], 10.0, 24)
    with pytest.raises(CryoshotError, match="does not exist"):
        load_structures([str(tmp_path / "x.mrc")], 10.0, 24)
    with pytest.raises(CryoshotError, match="twice"):
        load_structures(["1bxn", "1bxn"], 10.0, 24)
