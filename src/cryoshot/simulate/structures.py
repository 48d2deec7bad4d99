"""Structures to simulate: density maps, atomic models and procedural pseudo-molecules.

Every structure is resampled into the requested box and pixel size and centred
on its centre of mass (of its positive density), as an array indexed (z, y, x).

Sources
-------
- ``NAME`` : one of the 16 density maps bundled with cryoshot (PDB IDs, 10 Å/voxel;
  see ``data/maps/SOURCES.md``).
- ``path/to/map.mrc`` : any density map (its header's voxel size is used).
- ``path/to/model.pdb`` or ``.cif`` : an atomic model, turned into density with gemmi.
- ``procedural:K`` : procedural pseudo-molecule number K (a symmetric assembly of
  Gaussian blobs); ``procedural:A-B`` expands to numbers A..B-1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from cryoshot.errors import CryoshotError
from cryoshot.utils.seeding import item_rng

PROCEDURAL_KINDS = ("cyclic", "dihedral", "tetrahedral", "octahedral", "helical", "ring")
_STRUCTURE_STREAM = 7


@dataclass
class Structure:
    """A density resampled onto a cubic box.

    Attributes
    ----------
    name : str
    density : (D, D, D) float32, non-negative-dominated density, max 1, COM at D // 2
    pixel_size_A : float
    """

    name: str
    density: np.ndarray
    pixel_size_A: float


def bundled_structure_names() -> list[str]:
    """Names (PDB IDs) of the density maps shipped with cryoshot."""
    folder = resources.files("cryoshot.simulate") / "data" / "maps"
    return sorted(p.name.split(".")[0] for p in folder.iterdir() if p.name.endswith(".mrc.gz"))


def _bundled_path(name: str) -> Path:
    return Path(str(resources.files("cryoshot.simulate") / "data" / "maps" / f"{name}.mrc.gz"))


def center_of_mass(vol: np.ndarray) -> np.ndarray:
    """Centre of mass (z, y, x voxels) of the positive part of ``vol``."""
    pos = np.clip(vol, 0, None)
    if pos.sum() <= 0:
        raise CryoshotError("structure has no positive density; is its contrast inverted?")
    return np.array(ndimage.center_of_mass(pos))


def resample_to_box(vol: np.ndarray, src_pixel_A: float, dst_pixel_A: float, box: int) -> np.ndarray:
    """Resample a density to ``box``^3 voxels of ``dst_pixel_A``, COM at voxel ``box // 2``.

    Downsampling low-passes first (Gaussian, to avoid aliasing); interpolation is cubic.
    """
    vol = np.asarray(vol, dtype=np.float32)
    scale = dst_pixel_A / src_pixel_A
    if scale > 1.01:
        vol = ndimage.gaussian_filter(vol, sigma=0.5 * np.sqrt(scale**2 - 1.0))
    com = center_of_mass(vol)
    centre = np.full(3, box // 2, dtype=float)
    out = ndimage.affine_transform(
        vol, np.eye(3) * scale, offset=com - scale * centre, output_shape=(box,) * 3, order=3, mode="constant"
    )
    return out.astype(np.float32)


def _normalise(vol: np.ndarray) -> np.ndarray:
    m = float(np.abs(vol).max())
    if m <= 0:
        raise CryoshotError("structure is empty after resampling; is the box too small or the pixel size wrong?")
    return (vol / m).astype(np.float32)


def load_density_map(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Read a density map (MRC, optionally gzipped) and its voxel size in Å."""
    import mrcfile

    path = Path(path)
    if not path.is_file():
        raise CryoshotError(f"structure file {path} does not exist")
    try:
        with mrcfile.open(path, permissive=False) as m:
            data = np.asarray(m.data, dtype=np.float32)
            vs = float(m.voxel_size.x)
    except ValueError as exc:
        raise CryoshotError(f"cannot read density map {path}: {exc}") from exc
    if data.ndim != 3:
        raise CryoshotError(f"density map {path} is not 3D (shape {data.shape})")
    if vs <= 0:
        raise CryoshotError(f"density map {path} has no voxel size in its header; set it first")
    return data, vs


def density_from_atomic_model(path: str | os.PathLike, pixel_size_A: float, box: int) -> np.ndarray:
    """Turn a PDB/mmCIF model into density with gemmi's electron scattering factors.

    The first model is used as it stands in the file (no assembly expansion). The
    density is computed on a fine grid (pixel/2, resolution 2 pixels), then resampled.
    """
    import gemmi

    path = Path(path)
    if not path.is_file():
        raise CryoshotError(f"atomic model {path} does not exist")
    try:
        st = gemmi.read_structure(str(path))
    except Exception as exc:  # gemmi raises RuntimeError/ValueError variants
        raise CryoshotError(f"cannot read atomic model {path}: {exc}") from exc
    st.setup_entities()
    st.remove_ligands_and_waters()
    if len(st) == 0 or st[0].count_atom_sites() == 0:
        raise CryoshotError(f"atomic model {path} has no atoms")
    model = st[0]
    xyz = np.array([a.pos.tolist() for ch in model for r in ch for a in r])
    lo, hi = xyz.min(0), xyz.max(0)
    fine = pixel_size_A / 2.0
    size = int(np.ceil((hi - lo).max() / fine)) + 16
    size += size % 2
    shift = gemmi.Position(*(size * fine / 2 - (lo + hi) / 2))
    for ch in model:
        for r in ch:
            for a in r:
                a.pos = a.pos + shift
    st.cell = gemmi.UnitCell(size * fine, size * fine, size * fine, 90, 90, 90)
    st.spacegroup_hm = "P 1"
    dc = gemmi.DensityCalculatorE()
    dc.d_min = 2.0 * pixel_size_A
    dc.grid.setup_from(st)
    dc.grid.set_size(size, size, size)
    dc.put_model_density_on_grid(model)
    dens = np.array(dc.grid, copy=True).transpose(2, 1, 0)  # gemmi is (x, y, z)
    return resample_to_box(dens, fine, pixel_size_A, box)


def _symmetry_ops(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    if kind == "cyclic":
        n = int(rng.integers(2, 9))
        return Rotation.create_group(f"C{n}").as_matrix(), f"C{n}"
    if kind == "dihedral":
        n = int(rng.integers(2, 7))
        return Rotation.create_group(f"D{n}").as_matrix(), f"D{n}"
    if kind == "tetrahedral":
        return Rotation.create_group("T").as_matrix(), "T"
    if kind == "octahedral":
        return Rotation.create_group("O").as_matrix(), "O"
    n = int(rng.integers(7, 17))
    return Rotation.create_group(f"C{n}").as_matrix(), f"ring{n}"


def procedural_blobs(index: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Blob model of procedural pseudo-molecule ``index`` (a pure function of seed, index).

    Returns
    -------
    centres : (M, 3) Å, x y z, centred on the origin
    sigmas : (M,) Å, Gaussian widths
    weights : (M,) relative masses
    description : e.g. ``"D3, 18.2 nm"``
    """
    rng = item_rng(seed, index, stream=_STRUCTURE_STREAM)
    kind = PROCEDURAL_KINDS[int(rng.integers(len(PROCEDURAL_KINDS)))]
    diameter_A = float(rng.uniform(60.0, 350.0))
    radius = diameter_A / 2
    n_blob = int(rng.integers(2, 7))
    if kind == "helical":
        n_sub = int(rng.integers(8, 21))
        twist = float(rng.uniform(20.0, 170.0))
        r_h = radius * float(rng.uniform(0.15, 0.45))
        rise = 2 * radius / n_sub
        unit = rng.normal(0, radius * 0.12, size=(n_blob, 3)) + [r_h, 0, 0]
        ops = [Rotation.from_euler("z", i * twist, degrees=True).as_matrix() for i in range(n_sub)]
        offsets = [np.array([0, 0, (i - (n_sub - 1) / 2) * rise]) for i in range(n_sub)]
        label = f"helix {n_sub}x{twist:.0f}deg"
    else:
        mats, label = _symmetry_ops(kind, rng)
        if kind == "ring":
            unit = rng.normal(0, radius * 0.08, size=(n_blob, 3)) + [radius * rng.uniform(0.6, 0.85), 0, 0]
        else:
            centre = rng.normal(size=3)
            centre = centre / np.linalg.norm(centre) * radius * rng.uniform(0.35, 0.7)
            unit = centre + rng.normal(0, radius * 0.15, size=(n_blob, 3))
        ops = list(mats)
        offsets = [np.zeros(3)] * len(ops)
    sig_unit = radius * rng.uniform(0.06, 0.16, size=n_blob)
    w_unit = rng.uniform(0.4, 1.0, size=n_blob)
    centres = np.concatenate([unit @ m.T + o for m, o in zip(ops, offsets, strict=True)])
    centres -= centres.mean(0)
    # scale so the assembly spans the drawn diameter
    extent = np.linalg.norm(centres, axis=1).max() + 2 * sig_unit.mean()
    s = radius / max(extent, 1e-6)
    centres *= s
    sigmas = np.tile(sig_unit * s, len(ops))
    weights = np.tile(w_unit, len(ops))
    return centres, sigmas, weights, f"{label}, {diameter_A / 10:.1f} nm"


def render_blobs(centres: np.ndarray, sigmas: np.ndarray, weights: np.ndarray, pixel_size_A: float, box: int):
    """Sum of isotropic Gaussians on a (box,)*3 grid, (z, y, x), origin at voxel box // 2."""
    coords = (np.arange(box) - box // 2) * pixel_size_A
    vol = np.zeros((box, box, box), dtype=np.float64)
    for (x, y, z), s, w in zip(centres, np.maximum(sigmas, 0.6 * pixel_size_A), weights, strict=True):
        gx = np.exp(-((coords - x) ** 2) / (2 * s * s))
        gy = np.exp(-((coords - y) ** 2) / (2 * s * s))
        gz = np.exp(-((coords - z) ** 2) / (2 * s * s))
        vol += w * gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
    return vol.astype(np.float32)


def procedural_structure(index: int, pixel_size_A: float, box: int, seed: int = 0) -> Structure:
    """Procedural pseudo-molecule ``index``, rendered and centred on its COM."""
    centres, sigmas, weights, desc = procedural_blobs(index, seed)
    # fit inside the box's inscribed sphere so any rotation stays inside
    limit = 0.45 * box * pixel_size_A
    extent = np.linalg.norm(centres, axis=1).max() + 2 * sigmas.mean()
    if extent > limit:
        f = limit / extent
        centres, sigmas = centres * f, sigmas * f
    vol = render_blobs(centres, sigmas, weights, pixel_size_A, box)
    vol = resample_to_box(vol, pixel_size_A, pixel_size_A, box)
    return Structure(name=f"procedural:{index}", density=_normalise(vol), pixel_size_A=pixel_size_A)


def expand_specs(specs: list[str]) -> list[str]:
    """Expand ``procedural:A-B`` ranges and ``bundled`` (all shipped maps)."""
    out: list[str] = []
    for spec in specs:
        spec = spec.strip()
        if spec == "bundled":
            out.extend(bundled_structure_names())
        elif spec.startswith("procedural:") and "-" in spec.split(":", 1)[1].lstrip("-"):
            text = spec.split(":", 1)[1]
            try:
                a, b = (int(v) for v in text.split("-", 1))
            except ValueError:
                raise CryoshotError(
                    f"bad procedural range '{spec}': use procedural:A-B with integers 0 <= A < B"
                ) from None
            if not 0 <= a < b or b - a > 1_000_000:
                raise CryoshotError(f"bad procedural range '{spec}': need 0 <= A < B and at most 1,000,000 structures")
            out.extend(f"procedural:{i}" for i in range(a, b))
        elif spec:
            out.append(spec)
    return out


@lru_cache(maxsize=512)
def _load_structure_cached(spec: str, pixel_size_A: float, box: int, seed: int) -> Structure:
    if spec.startswith("procedural:"):
        try:
            idx = int(spec.split(":", 1)[1])
        except ValueError as exc:
            raise CryoshotError(f"bad procedural structure '{spec}': use procedural:K or procedural:A-B") from exc
        if idx < 0:
            raise CryoshotError(f"bad procedural structure '{spec}': K must be a whole number >= 0")
        return procedural_structure(idx, pixel_size_A, box, seed=seed)
    low = spec.lower()
    if low in bundled_structure_names():
        data, vs = load_density_map(_bundled_path(low))
        return Structure(low, _normalise(resample_to_box(data, vs, pixel_size_A, box)), pixel_size_A)
    path = Path(spec)
    suffixes = "".join(path.suffixes).lower()
    name = path.name.split(".")[0]
    if suffixes.endswith((".mrc", ".map", ".mrc.gz")):
        data, vs = load_density_map(path)
        return Structure(name, _normalise(resample_to_box(data, vs, pixel_size_A, box)), pixel_size_A)
    if suffixes.endswith((".pdb", ".cif", ".mmcif", ".ent", ".pdb.gz", ".cif.gz")):
        return Structure(name, _normalise(density_from_atomic_model(path, pixel_size_A, box)), pixel_size_A)
    raise CryoshotError(
        f"unknown structure '{spec}': give a bundled name ({', '.join(bundled_structure_names())}), "
        "an .mrc map, a .pdb/.cif model, or procedural:K"
    )


def load_structures(specs: list[str], pixel_size_A: float, box: int, seed: int = 0) -> list[Structure]:
    """Resolve structure specs (see module docstring) into densities on one box."""
    names = expand_specs(specs)
    if not names:
        raise CryoshotError("no structures given: name at least one (e.g. 1bxn, procedural:0-10, model.pdb)")
    if box < 8:
        raise CryoshotError(f"box of {box} voxels is too small; use at least 8")
    if pixel_size_A <= 0:
        raise CryoshotError(f"pixel size must be positive, got {pixel_size_A} Å")
    if len(set(names)) != len(names):
        raise CryoshotError("the structure list names a structure twice; each class must be distinct")
    return [_load_structure_cached(s, float(pixel_size_A), int(box), int(seed)) for s in names]
