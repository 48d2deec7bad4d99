import numpy as np
import pandas as pd
import pytest

from cryoshot.errors import CryoshotError
from cryoshot.io.extract import extract_particles
from cryoshot.io.mrc import read_mrc, write_mrc
from cryoshot.io.particles import load_subtomogram_set
from cryoshot.io.star import write_star


def _blob_tomogram(path, centres_xyz, shape_zyx=(40, 60, 80)):
    z, y, x = np.indices(shape_zyx)
    tomo = np.zeros(shape_zyx, np.float32)
    for cx, cy, cz in centres_xyz:
        tomo += np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / 4.0)
    write_mrc(path, tomo, 8.0)


def test_known_blob_lands_at_box_centre(tmp_path):
    centres = [(20, 30, 15), (50, 22, 25), (70, 50, 30)]
    _blob_tomogram(tmp_path / "tomo.mrc", centres)
    df = pd.DataFrame(
        {
            "rlnTomoName": ["tomo.mrc"] * 3,
            "rlnCoordinateX": [c[0] for c in centres],
            "rlnCoordinateY": [c[1] for c in centres],
            "rlnCoordinateZ": [c[2] for c in centres],
            "rlnClassNumber": [1, 2, 1],
        }
    )
    write_star(tmp_path / "coords.star", df)
    rep = extract_particles(tmp_path / "coords.star", tmp_path / "out", 16, progress=False)
    assert rep.n_skipped == 0 and rep.n_padded == 0
    s = load_subtomogram_set(tmp_path / "out" / "particles.star", progress=False)
    assert s.voxel_size_A == 8.0 and list(s.labels) == [1, 2, 1]
    for v in s.volumes:
        assert np.unravel_index(np.argmax(v), v.shape) == (8, 8, 8)


def test_edge_particles_pad_or_skip(tmp_path):
    _blob_tomogram(tmp_path / "tomo.mrc", [(2, 30, 20), (40, 30, 20)])
    df = pd.DataFrame({"rlnCoordinateX": [2, 40], "rlnCoordinateY": [30, 30], "rlnCoordinateZ": [20, 20]})
    write_star(tmp_path / "c.star", df)
    rep = extract_particles(tmp_path / "c.star", tmp_path / "pad", 16, source=tmp_path / "tomo.mrc", progress=False)
    assert rep.n_padded == 1 and len(rep.table) == 2
    v = read_mrc(tmp_path / "pad" / "subtomo_000000.mrc").data
    assert np.unravel_index(np.argmax(v), v.shape) == (8, 8, 8)
    rep = extract_particles(
        tmp_path / "c.star", tmp_path / "skip", 16, source=tmp_path / "tomo.mrc", edge="skip", progress=False
    )
    assert rep.n_skipped == 1 and len(rep.table) == 1


def test_relion5_centred_and_2d(tmp_path):
    img = np.zeros((50, 70), np.float32)
    img[20, 30] = 5.0
    write_mrc(tmp_path / "mic.mrc", img, 2.0)
    df = pd.DataFrame(
        {
            "rlnMicrographName": ["mic.mrc"],
            "rlnCenteredCoordinateXAngst": [(30 - 35) * 2.0],
            "rlnCenteredCoordinateYAngst": [(20 - 25) * 2.0],
        }
    )
    write_star(tmp_path / "c.star", df)
    extract_particles(tmp_path / "c.star", tmp_path / "o", 10, dim=2, progress=False)
    stack = read_mrc(tmp_path / "o" / "particles.mrcs").data
    assert stack.shape == (1, 10, 10) and stack[0, 5, 5] == 5.0


def test_extract_errors_leave_nothing(tmp_path):
    _blob_tomogram(tmp_path / "tomo.mrc", [(20, 30, 15)])
    write_star(tmp_path / "c.star", pd.DataFrame({"rlnCoordinateX": [20], "rlnCoordinateY": [30]}))
    with pytest.raises(CryoshotError, match="rlnCoordinateZ"):
        extract_particles(tmp_path / "c.star", tmp_path / "o", 8, source=tmp_path / "tomo.mrc", progress=False)
    write_star(
        tmp_path / "d.star",
        pd.DataFrame({"rlnCoordinateX": [20], "rlnCoordinateY": [30], "rlnCoordinateZ": [5]}),
    )
    with pytest.raises(CryoshotError, match="rlnTomoName"):
        extract_particles(tmp_path / "d.star", tmp_path / "o", 8, progress=False)
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o")]
