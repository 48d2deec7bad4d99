"""Which micrograph argument each exemplar's rlnMicrographName names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoshot.errors import CryoshotError
from cryoshot.io.mrc import write_mrc
from cryoshot.io.star import write_star
from cryoshot.picking.workflow import read_exemplars


def _mics(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        write_mrc(folder / n, np.zeros((32, 32), np.float32), 2.0)
    return [folder / n for n in names]


def _star(path, names):
    write_star(path, pd.DataFrame({"rlnMicrographName": names, "rlnCoordinateX": [10.0] * len(names),
                                   "rlnCoordinateY": [12.0] * len(names)}))  # fmt: skip
    return path


def test_names_resolve_as_written_relative_to_the_star_or_by_file_name(tmp_path):
    mics = _mics(tmp_path / "data", ["mic_0000.mrc", "mic_0001.mrc"])
    # relative to the STAR file
    assert read_exemplars(_star(tmp_path / "data" / "a.star", ["mic_0001.mrc"]), mics)["mic"].tolist() == [1]
    # a RELION project path that is not here: the file name names one micrograph argument
    (tmp_path / "ex").mkdir()
    star = _star(tmp_path / "ex" / "b.star", ["MotionCorr/job003/Micrographs/mic_0001.mrc", "mic_0000"])
    assert read_exemplars(star, mics)["mic"].tolist() == [1, 0]


def test_a_name_that_matches_no_micrograph_or_two_is_refused(tmp_path):
    mics = _mics(tmp_path / "a", ["mic_0000.mrc"]) + _mics(tmp_path / "b", ["mic_0000.mrc"])
    with pytest.raises(CryoshotError, match="not among the micrographs"):
        read_exemplars(_star(tmp_path / "x.star", ["Micrographs/mic_0000.mrc"]), mics)  # two share the name
    with pytest.raises(CryoshotError, match="not among the micrographs"):
        read_exemplars(_star(tmp_path / "y.star", ["nosuch.mrc"]), mics[:1])


def test_a_relion_coordinate_file_without_micrograph_names_belongs_to_the_micrograph_it_is_named_after(tmp_path):
    mics = _mics(tmp_path / "Movies", ["mic_0000.mrc", "mic_0001.mrc", "mic_0002.mrc"])
    xy = pd.DataFrame({"rlnCoordinateX": [10.0, 20.0], "rlnCoordinateY": [12.0, 14.0]})
    write_star(tmp_path / "mic_0001_manualpick.star", xy)
    assert read_exemplars(tmp_path / "mic_0001_manualpick.star", mics)["mic"].tolist() == [1, 1]
    write_star(tmp_path / "mic_0002.star", xy)
    assert read_exemplars(tmp_path / "mic_0002.star", mics)["mic"].tolist() == [2, 2]
    # one micrograph given: the coordinates are on it, whatever the file is called
    assert read_exemplars(tmp_path / "mic_0001_manualpick.star", mics[2:])["mic"].tolist() == [0, 0]
    write_star(tmp_path / "exemplars.star", xy)
    with pytest.raises(CryoshotError, match="lacks rlnMicrographName"):
        read_exemplars(tmp_path / "exemplars.star", mics)
