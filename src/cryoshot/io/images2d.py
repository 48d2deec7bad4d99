"""2D particle images from a STAR file: RELION stacks (``000001@particles.mrcs``) or single-image MRCs.

Every stack is opened once (memory-mapped) and only the listed images are read. The
pixel size comes from ``--angpix``, else the STAR file (``rlnImagePixelSize`` in the
optics group or the particle row, RELION 3.1/4/5; ``rlnDetectorPixelSize`` and
``rlnMagnification``, RELION 3.0), else the MRC headers. CTF parameters
(``rlnDefocusU/V/Angle`` in Å and degrees, ``rlnVoltage``, ``rlnSphericalAberration``,
``rlnAmplitudeContrast``) are read from the particle row or its optics group when present.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cryoshot.errors import CryoshotError
from cryoshot.io.mrc import _open, _voxel_size, require_input_file
from cryoshot.io.particles import labels_from_table, resolve_image_path
from cryoshot.io.star import read_star_blocks, read_star_blocks_once, require_columns

DEFAULT_VOLTAGE_KV, DEFAULT_CS_MM, DEFAULT_AMPLITUDE_CONTRAST = 300.0, 2.7, 0.1


@dataclass
class ParticleImages:
    """Particle images read from a STAR file.

    Attributes
    ----------
    images : (N, D, D) float32, in STAR row order
    pixel_size_A : float
    table : the particle table, unchanged (every input column, in order)
    optics : the optics table, or None (RELION 3.0 files and plain lists)
    star_path : Path
    labels : (N,) labels from ``label_column``, or None
    ctf : dict of per-particle arrays (``defocus_u_A``, ``defocus_v_A``, ``angle_deg``,
        ``voltage_kv``, ``cs_mm``, ``amplitude_contrast``), or None without defocus columns
    """

    images: np.ndarray
    pixel_size_A: float
    table: pd.DataFrame
    optics: pd.DataFrame | None
    star_path: Path
    labels: np.ndarray | None = None
    ctf: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def box(self) -> int:
        return int(self.images.shape[-1])


def _optics_values(df: pd.DataFrame, optics: pd.DataFrame | None, column: str) -> np.ndarray | None:
    """Per-particle values of ``column`` from the particle row, else from its optics group."""
    if column in df.columns:
        return pd.to_numeric(df[column], errors="coerce").to_numpy(float)
    if optics is None or column not in optics.columns:
        return None
    if "rlnOpticsGroup" not in df.columns or "rlnOpticsGroup" not in optics.columns:
        return (
            np.full(len(df), pd.to_numeric(optics[column], errors="coerce").to_numpy(float)[0])
            if len(optics) == 1
            else None
        )
    table = dict(zip(optics["rlnOpticsGroup"].astype(str), pd.to_numeric(optics[column], errors="coerce"), strict=True))
    groups = df["rlnOpticsGroup"].astype(str)
    missing = sorted(set(groups) - set(table))
    if missing:
        raise CryoshotError(f"particles name optics group {missing[0]}, which the optics table does not define")
    return groups.map(table).to_numpy(float)


def star_pixel_size(df: pd.DataFrame, optics: pd.DataFrame | None, path: Path) -> float | None:
    """The particles' pixel size from the STAR file, or None when it does not say."""
    vals = _optics_values(df, optics, "rlnImagePixelSize")
    if vals is None:
        det, mag = _optics_values(df, optics, "rlnDetectorPixelSize"), _optics_values(df, optics, "rlnMagnification")
        if det is not None and mag is not None:
            vals = det * 1e4 / mag
    if vals is None:
        return None
    if not np.all(np.isfinite(vals) & (vals > 0)):
        raise CryoshotError(f"{path}: the pixel size column holds a value that is not a positive number")
    if np.ptp(vals) > 1e-3 * vals.max():
        raise CryoshotError(f"{path} mixes pixel sizes {sorted(set(np.round(vals, 4)))} Å; split it by optics group "
                            "or pass --angpix")  # fmt: skip
    return float(vals[0])


def star_ctf(df: pd.DataFrame, optics: pd.DataFrame | None, path: Path) -> dict[str, np.ndarray] | None:
    """Per-particle CTF parameters, or None when the file has no ``rlnDefocusU``."""
    du = _optics_values(df, optics, "rlnDefocusU")
    if du is None:
        return None
    dv = _optics_values(df, optics, "rlnDefocusV")
    ang = _optics_values(df, optics, "rlnDefocusAngle")
    n = len(df)

    def value(col: str, default: float) -> np.ndarray:
        v = _optics_values(df, optics, col)
        return np.full(n, default) if v is None else v

    out = {"defocus_u_A": du, "defocus_v_A": du if dv is None else dv, "angle_deg": np.zeros(n) if ang is None else ang,
           "voltage_kv": value("rlnVoltage", DEFAULT_VOLTAGE_KV), "cs_mm": value("rlnSphericalAberration", DEFAULT_CS_MM),
           "amplitude_contrast": value("rlnAmplitudeContrast", DEFAULT_AMPLITUDE_CONTRAST)}  # fmt: skip
    for k, v in out.items():
        if not np.all(np.isfinite(v)):
            raise CryoshotError(f"{path}: a CTF column ({k}) holds a value that is not a number; fix or remove it")
    if np.any(out["defocus_u_A"] <= 0):
        raise CryoshotError(f"{path}: rlnDefocusU must be a positive underfocus in Å")
    return out


def _particle_table(blocks: dict[str, pd.DataFrame], star_path: Path) -> pd.DataFrame:
    """Block ``particles``, else the first non-optics block with ``rlnImageName``."""
    if "particles" in blocks:
        return blocks["particles"]
    rest = [v for k, v in blocks.items() if k != "optics" and "rlnImageName" in v.columns]
    if not rest:
        raise CryoshotError(f"STAR file {star_path} has no particle table with rlnImageName")
    return rest[0]


def read_particle_table(star_path: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(particle table, optics block or None) of a 2D particle STAR file, without reading images."""
    star_path = Path(star_path)
    blocks = read_star_blocks_once(star_path)  # the units that follow read it from this parse
    df = _particle_table(blocks, star_path)
    require_columns(df, ["rlnImageName"], star_path)
    if len(df) == 0:
        raise CryoshotError(f"{star_path} lists no particles")
    return df.reset_index(drop=True), blocks.get("optics")


def _stack_reader(path: Path):
    """Open an MRC memory-mapped; return (open file, data, voxel size or None, whether it is a 3D volume)."""
    path = require_input_file(path, "MRC")
    mrc = _open(path, mmap=True)
    data = mrc.data
    if data is None:
        mrc.close()
        raise CryoshotError(f"MRC file {path} holds no data; it is truncated or empty")
    # one section (nz = 1) is a 2D image, whatever the header's space group says
    volume = int(mrc.header.ispg) != 0 and data.ndim == 3 and data.shape[0] > 1 and path.suffix.lower() != ".mrcs"
    return mrc, data, _voxel_size(mrc), volume


def load_particle_images(
    star_path: str | os.PathLike,
    *,
    label_column: str | None = None,
    angpix: float | None = None,
    progress: bool = True,
    rows: tuple[int, int] | None = None,
) -> ParticleImages:
    """Read every 2D particle image a STAR file lists (or its rows ``[start, stop)``, for work units).

    Parameters
    ----------
    star_path
        STAR file with ``rlnImageName`` (``index@stack.mrcs`` or a 2D ``.mrc``), paths
        relative to the STAR file's folder.
    label_column
        Column of known classes, or None.
    angpix
        Pixel size in Å overriding the STAR file and headers.

    Raises
    ------
    CryoshotError
        A missing column, file or stack index; a 3D volume where images are expected;
        mixed image sizes or pixel sizes; NaN or Inf in an image; no pixel size anywhere.
    """
    star_path = Path(star_path)
    blocks = read_star_blocks(star_path) if rows is None else read_star_blocks_once(star_path)  # units: parsed once
    optics = blocks.get("optics")
    df = _particle_table(blocks, star_path)
    require_columns(df, ["rlnImageName"], star_path)
    if len(df) == 0:
        raise CryoshotError(f"{star_path} lists no particles")
    df = df.reset_index(drop=True)
    labels = labels_from_table(df, label_column, star_path) if label_column else None
    if rows is not None:
        df = df.iloc[rows[0] : rows[1]].reset_index(drop=True)
        labels = labels[rows[0] : rows[1]] if labels is not None else None
        if len(df) == 0:
            raise CryoshotError(f"{star_path} has no rows {rows[0] + 1}..{rows[1]}; it changed during the run")
    parsed = [resolve_image_path(n, star_path.parent) for n in df["rlnImageName"].tolist()]
    by_file: dict[Path, list[int]] = {}
    for row, (_, p) in enumerate(parsed):
        by_file.setdefault(p, []).append(row)
    images: np.ndarray | None = None
    shape = None
    sizes: set[float] = set()
    with tqdm(total=len(df), desc="reading particles", unit="img", disable=not progress, leave=False) as bar:
        for p, rows in by_file.items():
            mrc, data, vs, volume = _stack_reader(p)
            try:
                stack = data[None] if data.ndim == 2 else data
                if vs is not None:
                    sizes.add(round(vs, 4))
                idx = np.array([parsed[r][0] if parsed[r][0] is not None else -1 for r in rows])
                if (idx < 0).any():
                    if stack.shape[0] != 1:
                        what = "a 3D volume" if volume else f"a stack of {data.shape[0]} images"
                        raise CryoshotError(f"{p} is {what} (shape {data.shape}), but {star_path} names it without an "
                                            "index; 2D particle images are needed (use N@stack.mrcs for stack images)")  # fmt: skip
                    idx[idx < 0] = 0
                elif volume:
                    raise CryoshotError(f"{p} is a 3D volume (shape {data.shape}), not a stack of 2D particle images; "
                                        "give the particle stack (.mrcs), or use classify/average for subtomograms")  # fmt: skip
                if idx.max() >= stack.shape[0]:
                    bad = int(idx.max())
                    raise CryoshotError(f"{star_path}: image {bad + 1}@{p.name} is beyond the end of {p}, which holds "
                                        f"{stack.shape[0]} image(s); fix rlnImageName or use the right stack")  # fmt: skip
                item_shape = tuple(stack.shape[1:])
                if shape is None:
                    shape = item_shape
                    if len(shape) != 2 or shape[0] != shape[1]:
                        raise CryoshotError(f"{p} holds images of shape {shape}; square 2D images are needed")
                    images = np.empty((len(df), *shape), np.float32)
                elif item_shape != shape:
                    raise CryoshotError(f"mixed image sizes in {star_path}: {p} holds {item_shape[0]}x{item_shape[1]} "
                                        f"images, the first file {shape[0]}x{shape[1]}; re-extract with one box size")  # fmt: skip
                order = np.argsort(idx, kind="stable")
                block = np.asarray(stack[np.sort(idx)], dtype=np.float32)
                images[np.asarray(rows)[order]] = block
            finally:
                mrc.close()
            bar.update(len(rows))
    bad = ~np.isfinite(images.reshape(len(images), -1)).all(1)
    if bad.any():
        r = int(np.argmax(bad))
        raise CryoshotError(f"{star_path}: {int(bad.sum())} image(s) contain NaN or Inf, the first "
                            f"{df['rlnImageName'].iloc[r]}; remove them or re-extract")  # fmt: skip
    if angpix is None:
        angpix = star_pixel_size(df, optics, star_path)
    if angpix is None:
        if not sizes:
            raise CryoshotError(f"neither {star_path} nor the MRC headers give a pixel size; pass --angpix")
        if len(sizes) > 1:
            raise CryoshotError(f"mixed pixel sizes in the MRC headers of {star_path}: {sorted(sizes)}; pass --angpix")
        angpix = sizes.pop()
    return ParticleImages(images=images, pixel_size_A=float(angpix), table=df, optics=optics, star_path=star_path,
                          labels=labels, ctf=star_ctf(df, optics, star_path))  # fmt: skip


def is_2d_particle_set(star_path: str | os.PathLike) -> bool:
    """True when the first image a STAR file names is a 2D image (a stack item or a 2D MRC).

    Unreadable files give False, so that the subtomogram reader reports the problem.
    """
    try:
        df = _particle_table(read_star_blocks(star_path), Path(star_path))
        if "rlnImageName" not in df.columns or len(df) == 0:
            return False
        idx, p = resolve_image_path(df["rlnImageName"].iloc[0], Path(star_path).parent)
        mrc, data, _, volume = _stack_reader(p)
        try:
            return (idx is not None and not volume) or data.ndim == 2 or data.shape[0] == 1
        finally:
            mrc.close()
    except (CryoshotError, OSError, ValueError):
        return False
