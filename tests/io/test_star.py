import numpy as np
import pandas as pd
import pytest

from cryoshot.errors import CryoshotError
from cryoshot.io.geometry import (
    centered_A_to_pixels,
    euler_to_matrix,
    matrix_to_euler,
    pixels_to_centered_A,
)
from cryoshot.io.mrc import write_mrc
from cryoshot.io.particles import (
    coordinates_px,
    labels_from_table,
    load_subtomogram_set,
    split_image_name,
)
from cryoshot.io.star import read_star_table, write_star


def _relion_matrix(rot, tilt, psi):
    """RELION's Euler_angles2matrix, written out as in euler.cpp."""
    a, b, g = np.deg2rad([rot, tilt, psi])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.array(
        [
            [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
            [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
            [sc, ss, cb],
        ]
    )


def test_euler_matches_relion_and_round_trips(rng):
    angles = np.column_stack([rng.uniform(-180, 180, 20), rng.uniform(1, 179, 20), rng.uniform(-180, 180, 20)])
    mats = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    for a, m in zip(angles, mats, strict=True):
        np.testing.assert_allclose(m, _relion_matrix(*a), atol=1e-12)
    np.testing.assert_allclose(matrix_to_euler(mats), angles, atol=1e-8)


def test_star_round_trip_with_relion5_columns(tmp_path):
    df = pd.DataFrame(
        {
            "rlnTomoName": ["TS_01", "TS_01"],
            "rlnCenteredCoordinateXAngst": [10.5, -20.0],
            "rlnCenteredCoordinateYAngst": [0.0, 5.0],
            "rlnCenteredCoordinateZAngst": [-3.0, 7.5],
            "rlnAngleRot": [10.0, 20.0],
            "rlnAngleTilt": [30.0, 40.0],
            "rlnAnglePsi": [50.0, 60.0],
            "rlnClassNumber": [1, 2],
        }
    )
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnTomoTiltSeriesPixelSize": [2.5]})
    write_star(tmp_path / "p.star", {"optics": optics, "particles": df})
    back = read_star_table(tmp_path / "p.star")
    pd.testing.assert_frame_equal(back.reset_index(drop=True), df, check_dtype=False)
    px = coordinates_px(back, "p.star", angpix=2.5, shape_xyz=(100, 80, 40))
    np.testing.assert_allclose(px[0], [10.5 / 2.5 + 50, 40, -3.0 / 2.5 + 20])
    np.testing.assert_allclose(pixels_to_centered_A(px, 2.5, (100, 80, 40)), back.iloc[:, 1:4].to_numpy())
    np.testing.assert_allclose(centered_A_to_pixels([[0, 0, 0]], 1.0, (11, 10, 9)), [[5, 5, 4]])


def test_centered_coordinates_need_pixel_size(tmp_path):
    df = pd.DataFrame(
        {
            c: [0.0]
            for c in [
                "rlnCenteredCoordinateXAngst",
                "rlnCenteredCoordinateYAngst",
                "rlnCenteredCoordinateZAngst",
            ]
        }
    )
    with pytest.raises(CryoshotError, match="--angpix"):
        coordinates_px(df, "x.star")
    with pytest.raises(CryoshotError, match="no coordinates"):
        coordinates_px(pd.DataFrame({"a": [1]}), "x.star")


def test_labels_int_and_string_and_missing():
    assert labels_from_table(pd.DataFrame({"rlnClassNumber": [1, 2]}), "rlnClassNumber", "x").dtype == np.int64
    labs = labels_from_table(pd.DataFrame({"myLabel": ["ribo", "proteasome"]}), "myLabel", "x")
    assert list(labs) == ["ribo", "proteasome"]
    with pytest.raises(CryoshotError, match="lacks column"):
        labels_from_table(pd.DataFrame({"a": [1]}), "rlnClassNumber", "x")


def test_image_names():
    assert split_image_name("000012@stack.mrcs") == (11, "stack.mrcs")
    assert split_image_name("sub/a.mrc") == (None, "sub/a.mrc")
    with pytest.raises(CryoshotError):
        split_image_name("x@a.mrcs")


def _make_set(folder, shapes, voxel=10.0, labels=None):
    (folder / "vols").mkdir(parents=True)
    names = []
    for i, s in enumerate(shapes):
        write_mrc(folder / "vols" / f"v{i}.mrc", np.full(s, i, np.float32), voxel)
        names.append(f"vols/v{i}.mrc")
    df = pd.DataFrame({"rlnImageName": names})
    if labels is not None:
        df["rlnClassNumber"] = labels
    write_star(folder / "set.star", df)
    return folder / "set.star"


def test_subtomogram_set_relative_paths(tmp_path):
    star = _make_set(tmp_path / "proj", [(6, 6, 6)] * 3, labels=["a", "b", "a"])
    s = load_subtomogram_set(star, label_column="rlnClassNumber", progress=False)
    assert s.volumes.shape == (3, 6, 6, 6) and s.voxel_size_A == 10.0
    assert [v[0, 0, 0] for v in s.volumes] == [0, 1, 2]
    assert list(s.labels) == ["a", "b", "a"]


def test_subtomogram_set_errors(tmp_path):
    star = _make_set(tmp_path / "mixed", [(6, 6, 6), (8, 8, 8)], labels=[1, 2])
    with pytest.raises(CryoshotError, match="mixed box sizes"):
        load_subtomogram_set(star, progress=False)
    star = _make_set(tmp_path / "nolab", [(6, 6, 6)] * 2)
    with pytest.raises(CryoshotError, match="rlnClassNumber"):
        load_subtomogram_set(star, progress=False)
    assert load_subtomogram_set(star, label_column=None, progress=False).labels is None
    bad = tmp_path / "bad.star"
    bad.write_text("this is not a star file\n")
    with pytest.raises(CryoshotError, match="STAR"):
        load_subtomogram_set(bad, progress=False)
    with pytest.raises(CryoshotError, match="does not exist"):
        load_subtomogram_set(tmp_path / "none.star", progress=False)


def test_mixed_voxel_sizes_are_refused_unless_overridden(tmp_path):
    (tmp_path / "v").mkdir()
    write_mrc(tmp_path / "v" / "a.mrc", np.zeros((6, 6, 6), np.float32), 10.0)
    write_mrc(tmp_path / "v" / "b.mrc", np.zeros((6, 6, 6), np.float32), 12.0)
    write_star(tmp_path / "s.star", pd.DataFrame({"rlnImageName": ["v/a.mrc", "v/b.mrc"], "rlnClassNumber": [1, 2]}))
    with pytest.raises(CryoshotError, match="mixed voxel sizes"):
        load_subtomogram_set(tmp_path / "s.star", progress=False)
    assert load_subtomogram_set(tmp_path / "s.star", angpix=10.0, progress=False).voxel_size_A == 10.0
