"""``cryoshot evaluate-picks``: precision, recall and F1 of picks against ground truth (cryoMAE §4.1.3)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cryoshot.errors import CryoshotError
from cryoshot.io.mrc import read_mrc, require_input_file
from cryoshot.io.star import read_star_blocks, require_columns
from cryoshot.picking.matching import MatchCounts, match_picks

PIXEL_COLUMNS = ("rlnMicrographPixelSize", "rlnMicrographOriginalPixelSize", "rlnImagePixelSize")


def _table(path: Path) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    blocks = read_star_blocks(path)
    for df in blocks.values():
        if "rlnCoordinateX" in df.columns:
            return df, blocks
    raise CryoshotError(f"{path} has no table with rlnCoordinateX/rlnCoordinateY; give a coordinate STAR file")


def _pixel_size(name: str, tables: list[tuple[Path, pd.DataFrame, dict]], angpix: float | None) -> float:
    """Pixel size (Å) of micrograph ``name``: --angpix, a STAR column or optics block, else the MRC header."""
    if angpix is not None:
        return angpix
    for _, df, blocks in tables:
        for col in PIXEL_COLUMNS:
            if col in df.columns and "rlnMicrographName" in df.columns:
                rows = df[df["rlnMicrographName"].map(lambda n: Path(str(n)).name) == Path(name).name]
                if len(rows):
                    return float(rows[col].iloc[0])
        for bname, b in blocks.items():
            if "optics" in bname:
                for col in PIXEL_COLUMNS:
                    if col in b.columns:
                        return float(b[col].iloc[0])
    for star, _, _ in tables:
        for cand in (Path(name), star.parent / name, star.parent / Path(name).name):
            if cand.is_file():
                vs = read_mrc(cand, mmap=True).voxel_size_A
                if vs:
                    return float(vs)
    raise CryoshotError(f"cannot tell the pixel size of micrograph '{name}' (no pixel-size column or optics block, "
                        "and the micrograph file is not found); pass --angpix")  # fmt: skip


def evaluate_picks(
    truth: str | os.PathLike,
    picks: str | os.PathLike,
    diameter_A: float,
    *,
    angpix: float | None = None,
    class_column: str | None = None,
    target: str | None = None,
) -> dict:
    """Match picks to ground truth per micrograph (box side = diameter, IoU >= 0.5, each truth once).

    Micrographs are matched by file name (folders may differ between the two files).
    ``class_column`` + ``target`` keep only the truth rows of one structure, so picks of
    other particles count as false positives.

    Returns
    -------
    dict: ``precision``, ``recall``, ``f1``, ``n_picks``, ``n_truth``, ``true_positives`` and
    ``per_micrograph`` (name -> the same counts)
    """
    if not (np.isfinite(diameter_A) and diameter_A > 0):
        raise CryoshotError(f"--diameter must be a positive number of Å, got {diameter_A}")
    truth, picks = require_input_file(truth, "STAR"), require_input_file(picks, "STAR")
    t, tb = _table(truth)
    p, pb = _table(picks)
    for path, df in ((truth, t), (picks, p)):
        require_columns(df, ["rlnCoordinateX", "rlnCoordinateY"], path)
    if (class_column is None) != (target is None):
        raise CryoshotError("--class-column and --target go together: the column and the value to keep")
    if class_column is not None:
        require_columns(t, [class_column], truth)
        values = t[class_column].astype(str)
        if str(target) not in set(values):
            raise CryoshotError(f"no truth row has {class_column} = {target}; values there: "
                                f"{', '.join(sorted(set(values))[:10])}")  # fmt: skip
        t = t[values == str(target)]
    one = "rlnMicrographName" not in t.columns or "rlnMicrographName" not in p.columns
    key_t = pd.Series(["<one>"] * len(t)) if one else t["rlnMicrographName"].map(lambda n: Path(str(n)).name)
    key_p = pd.Series(["<one>"] * len(p)) if one else p["rlnMicrographName"].map(lambda n: Path(str(n)).name)
    tables = [(truth, t, tb), (picks, p, pb)]
    total = MatchCounts(0, 0, 0)
    per = {}
    for name in sorted(set(key_t) | set(key_p)):
        tt, pp = t[(key_t == name).to_numpy()], p[(key_p == name).to_numpy()]
        if len(tt) == 0 and len(pp) == 0:
            continue
        src = str(tt["rlnMicrographName"].iloc[0]) if not one and len(tt) else str(pp["rlnMicrographName"].iloc[0]) \
            if not one else name  # fmt: skip
        side = diameter_A / _pixel_size(src, tables, angpix)
        score = pp["rlnAutopickFigureOfMerit"].to_numpy(float) if "rlnAutopickFigureOfMerit" in pp.columns else None
        hit = match_picks(pp[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float),
                          tt[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float), side, score)  # fmt: skip
        c = MatchCounts(int(hit.sum()), len(pp), len(tt))
        per[name] = c.as_dict()
        total = total + c
    return {**total.as_dict(), "diameter_A": diameter_A, "per_micrograph": per}
