"""Particle tables: repeated images, labels, image paths rewritten for another folder."""

import numpy as np
import pandas as pd
import pytest

from cryoshot.errors import CryoshotError
from cryoshot.io.particles import labels_from_table, load_subtomogram_set, rebase_image_names
from cryoshot.io.star import read_star_table, write_star
from tests.fewshot.helpers import write_toy_set


def test_repeated_rows_are_used_once_and_said(tmp_path, capsys):
    star = write_toy_set(tmp_path / "s", [0, 1], per_class=3)
    table = read_star_table(star)
    tripled = tmp_path / "s" / "tripled.star"
    write_star(tripled, pd.concat([table] * 3, ignore_index=True))
    s = load_subtomogram_set(tripled, progress=False)
    assert len(s) == 6 and s.n_duplicates == 12 and len(s.table) == 6
    assert list(s.labels) == list(table["rlnClassNumber"])
    assert "12 row(s)" in capsys.readouterr().err
    clash = table.copy()
    clash.loc[0, "rlnClassNumber"] = 2
    write_star(tmp_path / "s" / "clash.star", pd.concat([table, clash.iloc[:1]], ignore_index=True))
    with pytest.raises(CryoshotError, match="different labels"):
        load_subtomogram_set(tmp_path / "s" / "clash.star", progress=False)


def test_labels_keep_their_identity():
    df = pd.DataFrame({"a": [1.0, 2.0], "b": [1e300, 2e300], "c": [1.5, 2.0], "d": [np.inf, 1.0]})
    assert labels_from_table(df, "a", "x").tolist() == [1, 2]
    b = labels_from_table(df, "b", "x")
    assert len(set(b)) == 2 and all(int(float(v)) > 0 for v in b)  # never wrapped to int64's minimum
    assert labels_from_table(df, "c", "x").tolist() == ["1.5", "2.0"]
    with pytest.raises(CryoshotError, match="non-finite"):
        labels_from_table(df, "d", "x")


def test_rebase_image_names(tmp_path):
    names = ["a.mrc", "000003@stacks/s.mrcs", "/abs/x.mrc"]
    out = rebase_image_names(names, tmp_path / "in" / "sets", tmp_path / "out")
    assert out == ["../in/sets/a.mrc", "000003@../in/sets/stacks/s.mrcs", "/abs/x.mrc"]
