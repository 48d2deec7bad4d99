import os

import mrcfile
import numpy as np
import pytest

from cryoshot.errors import CryoshotError
from cryoshot.io.mrc import read_mrc, write_mrc


@pytest.mark.parametrize("shape,stack", [((8, 9, 10), False), ((12, 14), False), ((5, 6, 6), True)])
def test_round_trip_keeps_data_and_voxel_size(tmp_path, rng, shape, stack):
    data = rng.normal(size=shape).astype(np.float32)
    p = write_mrc(tmp_path / "a.mrc", data, 3.5, stack=stack)
    m = read_mrc(p)
    np.testing.assert_array_equal(m.data, data)
    assert m.voxel_size_A == pytest.approx(3.5)
    assert m.is_stack == stack


def test_float16_and_memory_map(tmp_path, rng):
    data = rng.normal(size=(6, 6, 6)).astype(np.float16)
    write_mrc(tmp_path / "h.mrc", data, 10.0)
    m = read_mrc(tmp_path / "h.mrc", mmap=True)
    assert isinstance(m.data, np.memmap)
    np.testing.assert_array_equal(np.asarray(m.data), data)


def test_refuses_overwrite_without_force(tmp_path, rng):
    p = tmp_path / "a.mrc"
    write_mrc(p, np.zeros((4, 4, 4), np.float32), 1.0)
    with pytest.raises(CryoshotError, match="--force"):
        write_mrc(p, np.ones((4, 4, 4), np.float32), 1.0)
    write_mrc(p, np.ones((4, 4, 4), np.float32), 1.0, force=True)
    assert read_mrc(p).data.mean() == 1.0
    assert sorted(os.listdir(tmp_path)) == ["a.mrc"]  # no temporary left behind


def test_errors_are_clear(tmp_path):
    with pytest.raises(CryoshotError, match="does not exist"):
        read_mrc(tmp_path / "missing.mrc")
    junk = tmp_path / "junk.mrc"
    junk.write_bytes(b"x" * 2000)
    with pytest.raises(CryoshotError, match="not an MRC"):
        read_mrc(junk)
    good = tmp_path / "t.mrc"
    write_mrc(good, np.ones((16, 16, 16), np.float32), 1.0)
    cut = tmp_path / "cut.mrc"
    cut.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(CryoshotError, match="truncated"):
        read_mrc(cut)
    with pytest.raises(CryoshotError, match="2D"):
        read_mrc(good, ndim=2)


def test_nan_is_rejected_on_read_and_write(tmp_path):
    bad = np.ones((4, 4, 4), np.float32)
    bad[1, 1, 1] = np.nan
    with pytest.raises(CryoshotError, match="NaN"):
        write_mrc(tmp_path / "n.mrc", bad, 1.0)
    assert not (tmp_path / "n.mrc").exists()
    with mrcfile.new(tmp_path / "n2.mrc") as m:
        m.set_data(bad)
        m.voxel_size = 1.0
    with pytest.raises(CryoshotError, match="NaN or Inf"):
        read_mrc(tmp_path / "n2.mrc")


def test_voxel_size_must_be_positive(tmp_path):
    with pytest.raises(CryoshotError, match="positive"):
        write_mrc(tmp_path / "a.mrc", np.zeros((4, 4, 4), np.float32), 0.0)
