"""A second micrograph simulator, written apart from ``cryoshot.simulate``: an outside check on the picker.

cryoshot's simulator projects 10 Å density maps in Fourier space and adds Gaussian noise at a set
SNR. Data from elsewhere are made otherwise, so this one shares none of its code or habits:

- **Atoms, not maps.** Each particle is an atomic model (``../shared/structures/pdb``, read with
  gemmi) turned by a random rotation and projected atom by atom onto the micrograph's grid, each
  atom weighted by Z^0.75 (roughly its electron scattering) and blurred by its size and a B-factor.
  The water a particle displaces is taken off: the same projection blurred over 3 Å, times 0.7
  (water's electron density is about 0.75 of protein's), so low frequencies lose most contrast,
  as in vitreous ice.
- **A phase object through a full CTF.** The exit wave exp(i phi - 0.07 phi) (7% amplitude contrast
  from the imaginary potential) is propagated through the wave aberration (defocus with
  astigmatism, Cs 2.7 mm, 300 kV) and a coherence envelope; the image is its intensity, so
  Thon rings, delocalisation and the dark-protein contrast of underfocus arise from the physics.
- **Amorphous ice** as a phase field with a 1/k spectrum (sd half the particles' phase sd) imaged
  through the same CTF, a slow thickness gradient, **ice crystals** (strongly scattering discs
  that absorb) and an optional **carbon edge** (extra phase and absorption over a region bounded by a curve).
- **Counts.** The expected image is blurred by a counting detector's MTF (a sinc), then Poisson
  counts at a dose in e/Å² are drawn. The files hold counts (float32, or int16 with ``int16=True``),
  not standardised values. The potential's scale is set so that the SNR over the particle discs,
  var(signal) / var(shot noise), is the one asked for.
- Particles sit anywhere at least 0.3 diameters from the edge and 0.75 diameters from each other
  (touching neighbours), with abundances set per structure.

Nothing here imports ``cryoshot.simulate``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial.transform import Rotation

from cryoshot.io.star import write_star

# ../shared of the repository (CRYOSHOT_SHARED overrides it, for a copy of this script run elsewhere)
PDB_DIR = Path(os.environ.get("CRYOSHOT_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "structures" / "pdb"
WAVELENGTH_300KV_A = 0.01969
CS_A = 2.7e7
SIGMA_300KV = 6.5e-4  # interaction constant, rad / (V Å)


@dataclass
class OtherConfig:
    """One dataset's imaging (units in the names)."""

    size_px: tuple[int, int] = (3072, 3072)  # (H, W)
    pixel_size_A: float = 1.2
    n_particles: int = 150
    abundance: dict[str, float] = field(default_factory=dict)  # structure: relative abundance
    snr: float | None = 0.02  # None: the physical potential, the noise from the dose alone
    dose_e_per_A2: float = 40.0
    defocus_um: tuple[float, float] = (1.0, 2.5)
    astigmatism_um: float = 0.1
    envelope_b_A2: float = 60.0
    b_factor_A2: float = 40.0
    ice_phase_sd: float = 0.5  # amorphous ice, in units of the particles' phase sd
    n_ice_crystals: int = 1
    carbon_edge: bool = True
    int16: bool = False
    seed: int = 0


def load_atoms(pdb_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) atom positions (Å, centred) and (N,) weights Z^0.75 of the first model, waters and ligands out."""
    import gemmi

    st = gemmi.read_structure(str(PDB_DIR / f"{pdb_id}.pdb"))
    st.setup_entities()
    st.remove_ligands_and_waters()
    st.remove_hydrogens()
    xyz, w = [], []
    for ch in st[0]:
        for r in ch:
            for a in r:
                xyz.append(a.pos.tolist())
                w.append(a.element.atomic_number**0.75)
    xyz = np.asarray(xyz)
    return xyz - xyz.mean(0), np.asarray(w)


def extent_A(xyz: np.ndarray) -> float:
    """The largest distance between two atoms (Å), from the convex hull's points."""
    from scipy.spatial import ConvexHull

    p = xyz[ConvexHull(xyz).vertices]
    return float(np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1)).max())


def project(xyz: np.ndarray, w: np.ndarray, rot: np.ndarray, ps: float, box: int, b_A2: float) -> np.ndarray:
    """(box, box) projected contrast of one rotated particle: atoms minus displaced water, in arbitrary units."""
    p = xyz @ rot.T
    ix = p[:, 0] / ps + box / 2
    iy = p[:, 1] / ps + box / 2
    img = np.histogram2d(iy, ix, bins=box, range=((0, box), (0, box)), weights=w)[0]
    atom_sd = np.sqrt(0.5**2 + b_A2 / (8 * np.pi**2)) / ps
    atoms = ndimage.gaussian_filter(img, max(atom_sd, 0.3))
    water = ndimage.gaussian_filter(img, 3.0 / ps)
    return atoms - 0.7 * water


def _place(rng, names, probs, n, diam_px, shape):
    """Centres (x, y), names: random, non-overlapping beyond 0.75 of the mean of two diameters."""
    xy, who = [], []
    tries = 0
    while len(xy) < n and tries < 200 * n:
        tries += 1
        s = names[rng.choice(len(names), p=probs)]
        d = diam_px[s]
        m = 0.3 * d
        c = np.array([rng.uniform(m, shape[1] - m), rng.uniform(m, shape[0] - m)])
        if all(np.hypot(*(c - q)) >= 0.75 * (d + diam_px[o]) / 2 for q, o in zip(xy, who, strict=True)):
            xy.append(c)
            who.append(s)
    return np.array(xy), who


def _radial_k(shape, ps):
    ky = np.fft.fftfreq(shape[0], ps)[:, None]
    kx = np.fft.rfftfreq(shape[1], ps)[None, :]
    return kx, ky


def _ice_field(rng, shape, ps):
    """A zero-mean Gaussian random field with a 1/k amplitude spectrum (amorphous ice), sd 1."""
    kx, ky = _radial_k(shape, ps)
    k = np.hypot(kx, ky)
    amp = 1.0 / np.maximum(k, 1.0 / 200.0)
    f = (rng.normal(size=k.shape) + 1j * rng.normal(size=k.shape)) * amp
    f[0, 0] = 0
    g = np.fft.irfft2(f, s=shape)
    return g / g.std()


def simulate_one(
    cfg: OtherConfig, m: int, atoms: dict, diam_A: dict, parts: dict | None = None
) -> tuple[np.ndarray, pd.DataFrame, float]:
    """Micrograph ``m`` of ``cfg`` (counts, (H, W)), its truth table and the SNR over the particle discs.

    ``parts``, when given, receives the expected counts (``expected``), those without the particles
    (``background``), the particle-disc mask (``inside``) and where ice crystals or carbon lie
    (``contaminated``), for measuring where the signal lies."""
    rng = np.random.default_rng([cfg.seed, m])
    shape, ps = cfg.size_px, cfg.pixel_size_A
    names = list(cfg.abundance)
    probs = np.array([cfg.abundance[s] for s in names], float)
    probs /= probs.sum()
    diam_px = {s: diam_A[s] / ps for s in names}
    xy, who = _place(rng, names, probs, cfg.n_particles, diam_px, shape)
    # particles' projected contrast, pasted into the field
    phi = np.zeros(shape)
    inside = np.zeros(shape, bool)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for (x, y), s in zip(xy, who, strict=True):
        box = int(np.ceil(diam_px[s] * 1.3 / 2)) * 2 + 8
        rot = Rotation.random(random_state=rng).as_matrix()
        sub = rng.uniform(-0.5, 0.5, 2)  # a sub-pixel offset the truth does not carry (at most 0.5 px)
        img = project(atoms[s][0], atoms[s][1], rot, ps, box, cfg.b_factor_A2)
        img = ndimage.shift(img, (sub[1], sub[0]), order=1)
        x0, y0 = int(round(x)) - box // 2, int(round(y)) - box // 2
        ys, xs = slice(max(y0, 0), min(y0 + box, shape[0])), slice(max(x0, 0), min(x0 + box, shape[1]))
        phi[ys, xs] += img[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        r = diam_px[s] / 2
        sl = (slice(max(int(y - r), 0), int(y + r) + 1), slice(max(int(x - r), 0), int(x + r) + 1))
        inside[sl] |= np.hypot(xx[sl] - x, yy[sl] - y) <= r
    if cfg.snr is None:  # physical: radians (protein's mean inner potential 7.5 V over ~0.23 units per Å^3)
        phi *= SIGMA_300KV * 7.5 / 0.23 / ps**2
    unit = phi[inside].std() + 1e-12
    phi /= unit  # particles' phase sd 1 before scaling
    ice = cfg.ice_phase_sd * _ice_field(rng, shape, ps)
    absorb = np.zeros(shape)
    # contaminants: ice crystals (absorbing, strongly scattering discs) and a carbon edge
    for _ in range(rng.poisson(cfg.n_ice_crystals)):
        c = rng.uniform(0, 1, 2) * shape[::-1]
        rad = rng.uniform(300, 700) / ps
        disc = ndimage.gaussian_filter((np.hypot(xx - c[0], yy - c[1]) < rad).astype(float), 4)
        absorb += 0.6 * disc
        ice += 4.0 * disc * (1 + 0.5 * _ice_field(rng, shape, ps))
    if cfg.carbon_edge:
        ang = rng.uniform(0, np.pi)
        off = rng.uniform(0.2, 0.4) * min(shape)
        d = (xx - shape[1] / 2) * np.cos(ang) + (yy - shape[0] / 2) * np.sin(ang) - off
        d = d + 40 * np.sin(2 * np.pi * ((xx * np.sin(ang) - yy * np.cos(ang)) / (0.7 * max(shape))))
        carbon = ndimage.gaussian_filter((d > 0).astype(float), 3)
        absorb += 0.25 * carbon
        ice += carbon * (2.0 + 1.5 * _ice_field(rng, shape, ps))
    contaminated = absorb > 0.05  # ice crystals and carbon
    gradient = ndimage.gaussian_filter(rng.normal(size=(8, 8)), 1.5)
    absorb += (
        0.1
        * ndimage.zoom(gradient / (gradient.std() + 1e-12), (shape[0] / 8, shape[1] / 8), order=3)[
            : shape[0], : shape[1]
        ]
    )
    # the wave through the microscope (chi on the full FFT grid; the MTF on the real FFT's)
    lam = WAVELENGTH_300KV_A
    fy, fx = np.fft.fftfreq(shape[0], ps)[:, None], np.fft.fftfreq(shape[1], ps)[None, :]
    k2 = fx**2 + fy**2
    df = rng.uniform(*cfg.defocus_um) * 1e4
    dfa, th = cfg.astigmatism_um * 1e4 * rng.uniform(0, 1), rng.uniform(0, np.pi)
    dfk = df + 0.5 * dfa * np.cos(2 * (np.arctan2(fy, fx) - th))
    chi = np.pi * lam * dfk * k2 - 0.5 * np.pi * CS_A * lam**3 * k2**2
    prop = np.exp(1j * chi) * np.exp(-cfg.envelope_b_A2 / 4 * k2)  # sign: protein dark in underfocus (-sin chi)
    kx, ky = _radial_k(shape, ps)
    mtf = np.sinc(kx * ps) * np.sinc(ky * ps)  # counting detector (pixel aperture)

    def image(scale: float, particles: bool = True) -> np.ndarray:
        ph = scale * (phi + ice if particles else ice)
        wave = np.exp(1j * ph - 0.07 * ph - absorb)
        inten = np.abs(np.fft.ifft2(np.fft.fft2(wave) * prop)) ** 2
        return np.fft.irfft2(np.fft.rfft2(inten) * mtf, s=shape)

    dose = cfg.dose_e_per_A2 * ps**2
    # scale the potential so var(signal) / var(shot noise) over the particle discs is cfg.snr (weak phase: linear);
    # physical (cfg.snr None): the scale the potential has, and the SNR it gives is only measured
    scale = unit if cfg.snr is None else 0.05
    for _ in range(1 if cfg.snr is None else 2):
        ref_img = image(scale)
        sig = dose * (ref_img - image(scale, particles=False))[inside]
        snr_now = sig.var() / (dose * ref_img[inside].mean())
        if cfg.snr is not None:
            scale *= np.sqrt(cfg.snr / snr_now)
    expected = dose * np.clip(image(scale), 0, None)
    counts = rng.poisson(expected).astype(np.float32)
    if parts is not None:
        parts.update(
            expected=expected,
            background=dose * np.clip(image(scale, particles=False), 0, None),
            inside=inside,
            contaminated=contaminated,
        )
    truth = pd.DataFrame({"rlnCoordinateX": xy[:, 0], "rlnCoordinateY": xy[:, 1], "cryoshotStructureName": who})
    return counts, truth, float(snr_now)


def simulate_dataset(out: Path, cfg: OtherConfig, n_mic: int, target: str, n_ex: int = 15) -> Path:
    """``n_mic`` micrographs in ``out`` (mic_0000.mrc ...), coordinates.star (all particles), truth_queries.star
    (every micrograph but the first), ex.star (``n_ex`` target particles of the first) and config.json."""
    if (out / "ex.star").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    atoms = {s: load_atoms(s) for s in cfg.abundance}
    diam = {s: extent_A(a[0]) for s, a in atoms.items()}
    tables, snrs = [], []
    for m in range(n_mic):
        counts, t, snr = simulate_one(cfg, m, atoms, diam)
        snrs.append(snr)
        name = f"mic_{m:04d}.mrc"
        data = np.clip(np.rint(counts), -32768, 32767).astype(np.int16) if cfg.int16 else counts
        with mrcfile.new(out / name, overwrite=True) as f:
            f.set_data(data)
            f.voxel_size = cfg.pixel_size_A
        t.insert(0, "rlnMicrographName", name)
        tables.append(t)
    df = pd.concat(tables, ignore_index=True)
    write_star(out / "coordinates.star", df, force=True)
    write_star(out / "truth_queries.star", df[df["rlnMicrographName"] != "mic_0000.mrc"], force=True)
    ref = df[(df["rlnMicrographName"] == "mic_0000.mrc") & (df["cryoshotStructureName"] == target)]
    ex = ref.sample(min(n_ex, len(ref)), random_state=cfg.seed)
    write_star(out / "ex.star", ex[["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"]], force=True)
    meta = asdict(cfg) | {"diameters_A": diam, "target": target, "snr_over_particle_discs": snrs}
    (out / "config.json").write_text(json.dumps(meta, indent=1, default=str))
    return out


def contamination_mask(ds: Path, m: int) -> np.ndarray:
    """(H, W) bool: where ice crystals or carbon lie on micrograph ``m`` of the dataset ``ds`` (simulated again
    from its config.json, the same micrograph bit for bit, and cached as ``contaminated_<m>.npy``)."""
    cache = ds / f"contaminated_{m:04d}.npy"
    if cache.exists():
        return np.load(cache)
    meta = json.loads((ds / "config.json").read_text())
    fields = OtherConfig.__dataclass_fields__
    cfg = OtherConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta.items() if k in fields})
    atoms = {s: load_atoms(s) for s in cfg.abundance}
    parts: dict = {}
    simulate_one(cfg, m, atoms, meta["diameters_A"], parts)
    np.save(cache, parts["contaminated"])
    return parts["contaminated"]
