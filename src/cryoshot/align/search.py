"""Exhaustive rotational + translational alignment of subtomograms to references.

The score is the normalised cross-correlation restricted to the Fourier region
both volumes measured (Förster et al. 2008 style constrained correlation):

    ncc(A, t) = Re Σ_k P(k) conj(R_A(k)) M(k) e^{2πi k·t/D} / sqrt(Σ |P|² M · Σ |R_A|² M)

with ``R_A`` the reference rotated by ``A``, ``M = W_p · (W_r rotated by A) · band``
(the particle's wedge, the reference's wedge, a resolution band without the
zero frequency). All translations within ``max_shift_A`` are scored at once by
a pruned Fourier sum. Rotations come from a near-uniform SO(3) grid, then
``refine_levels`` local searches halve the step around the best candidates.

Pose convention (the simulator's and RELION's): the particle is the reference
rotated by ``A`` about the box centre, then shifted by ``t``; ``A`` gives
``rlnAngleRot/Tilt/Psi`` and ``t`` gives ``rlnOriginX/Y/ZAngst``.

The search runs at a working grid whose Nyquist frequency is the low-pass
resolution (Fourier cropping), so a 40 Å low-pass on 40³ boxes at 10 Å aligns 20³
boxes: 8× fewer voxels, same information.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from cryoshot.align.fourier import FourierReference, band_mask, shift_phases, wedge_mask
from cryoshot.align.so3 import check_step, local_offsets, so3_grid
from cryoshot.data.transforms import fourier_resample
from cryoshot.errors import CryoshotError
from cryoshot.utils.fourier import hermitian_weights, rfft_freqs_3d


@dataclass
class AlignConfig:
    """Settings of an alignment search (units in the names)."""

    angular_step_deg: float = 30.0
    refine_levels: int = 1
    n_candidates: int = 3
    max_shift_A: float = 30.0
    lowpass_A: float = 40.0
    highpass_A: float | None = None
    tilt_range_deg: tuple[float, float] | None = (-60.0, 60.0)
    chunk: int = 128

    def validate(self) -> None:
        check_step(self.angular_step_deg)
        if self.refine_levels < 0 or self.n_candidates < 1:
            raise CryoshotError("refine_levels must be >= 0 and n_candidates >= 1")
        if self.max_shift_A < 0:
            raise CryoshotError(f"the maximum shift must be >= 0 Å, got {self.max_shift_A}")
        if not self.lowpass_A > 0:
            raise CryoshotError(f"the low-pass resolution must be positive, got {self.lowpass_A} Å")


@dataclass
class AlignResult:
    """Best pose of each particle.

    Attributes
    ----------
    matrices : (N, 3, 3) rotation A (particle = reference rotated by A, then shifted)
    shifts_A : (N, 3) shift t (x, y, z) in Å
    scores : (N,) constrained normalised cross-correlation
    """

    matrices: np.ndarray
    shifts_A: np.ndarray
    scores: np.ndarray


def working_grid(box: int, pixel_size_A: float, lowpass_A: float) -> tuple[int, float]:
    """The smallest even box (<= ``box``) whose Nyquist frequency reaches ``lowpass_A``; (box, pixel Å)."""
    d = min(box, max(8, 2 * math.ceil(box * pixel_size_A / lowpass_A)))
    return d, pixel_size_A * box / d


class Aligner:
    """Align particles of one box and voxel size; holds the masks and the rotation grid.

    Parameters
    ----------
    box, pixel_size_A : the particles' box (voxels) and voxel size (Å)
    config : AlignConfig
    """

    def __init__(self, box: int, pixel_size_A: float, config: AlignConfig | None = None):
        self.config = config = config or AlignConfig()
        config.validate()
        self.box, self.pixel_size_A = box, pixel_size_A
        self.work_box, self.work_pixel_A = d, px = working_grid(box, pixel_size_A, config.lowpass_A)
        self.sel = band_mask(d, px, max(config.lowpass_A, 2 * px), config.highpass_A)
        if not self.sel.any():
            raise CryoshotError("the resolution band is empty: lower --highpass or raise --lowpass")
        self._flat = torch.from_numpy(np.flatnonzero(self.sel))
        kz, ky, kx = rfft_freqs_3d(d)
        self._k = torch.from_numpy(np.stack([kx[self.sel], ky[self.sel], kz[self.sel]], 1)).float()  # (F, 3)
        self.herm = torch.from_numpy(hermitian_weights(d)[self.sel])
        self.wedge_half = torch.from_numpy(wedge_mask(d, config.tilt_range_deg))
        self.wedge = self.wedge_half[torch.from_numpy(self.sel)]
        self.phases, shifts = shift_phases(d, self.sel, int(config.max_shift_A / px + 1e-6))
        self.shifts_px = torch.from_numpy(shifts).float()
        self.grid = torch.from_numpy(so3_grid(config.angular_step_deg)).float()

    # -- data on the working grid ---------------------------------------------------------
    def to_work(self, volumes: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, D, D, D) particles at the input grid -> (N, d, d, d) float32 at the working grid."""
        x = torch.as_tensor(np.asarray(volumes, dtype=np.float32))
        if x.ndim != 4 or x.shape[1:] != (self.box,) * 3:
            raise CryoshotError(f"expected volumes of box {self.box}, got shape {tuple(x.shape[1:])}")
        if self.work_box != self.box:
            x = fourier_resample(x, self.work_box)
        return x.contiguous()

    def spectra(self, work: torch.Tensor) -> torch.Tensor:
        """(N, d, d, d) working volumes -> (N, F) complex64 band-limited spectra, phases about the box centre."""
        f = torch.fft.rfftn(torch.fft.ifftshift(work, dim=(-3, -2, -1)), dim=(-3, -2, -1))
        return f.flatten(-3)[..., self._flat]

    def reference(self, ref: torch.Tensor, ref_weight: torch.Tensor | None = None) -> FourierReference:
        """Prepare a working-grid reference (d, d, d) and its Fourier weight (d, d, d//2+1) for rotation."""
        if ref.shape != (self.work_box,) * 3:
            raise CryoshotError(f"reference box {tuple(ref.shape)} does not match the working box {self.work_box}")
        return FourierReference(ref, ref_weight, self._k)

    # -- scoring ----------------------------------------------------------------------------
    def _reference_terms(self, ref: FourierReference, mats: torch.Tensor):
        """Rotated reference spectra folded with masks: Y = conj(R_A) M w, E_ref, and w M for E_p."""
        g, wr = ref.rotated(mats)
        m = self.wedge if wr is None else self.wedge * wr
        wm = (m * self.herm).expand(len(g), -1)
        e_ref = (g.real.square() + g.imag.square()).mul(wm).sum(-1)
        return g.conj() * wm, e_ref, wm

    def _shifted(self, work: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Particle spectra times every shift phase, (N, S, F) complex, and their power (N, F)."""
        p = self.spectra(work)
        p2 = p.real.square() + p.imag.square()
        return p[:, None, :] * self.phases.T[None], p2

    @staticmethod
    def _ncc(corr: torch.Tensor, p2: torch.Tensor, e_ref: torch.Tensor, wm: torch.Tensor):
        """Best-over-shifts NCC from correlations (N, S, R); p2 (N, F), e_ref (R,) or (N, R), wm (R|N, ...)."""
        best, idx = corr.real.max(1)
        e_p = p2 @ wm.T if wm.ndim == 2 else torch.einsum("nf,njf->nj", p2, wm)
        return best / torch.sqrt(e_ref * e_p).clamp_min(1e-20), idx

    @torch.no_grad()
    def scan(self, work: torch.Tensor, ref: FourierReference) -> tuple[torch.Tensor, torch.Tensor]:
        """NCC of every particle against the reference at every grid rotation: (ncc, shift index), (N, R)."""
        ps, p2 = self._shifted(work)
        flat = ps.reshape(-1, ps.shape[-1])
        out, idx = [], []
        for s in range(0, len(self.grid), self.config.chunk):
            y, e_ref, wm = self._reference_terms(ref, self.grid[s : s + self.config.chunk])
            corr = (flat @ y.T).view(len(ps), ps.shape[1], -1)
            c, i = self._ncc(corr, p2, e_ref, wm)
            out.append(c)
            idx.append(i)
        return torch.cat(out, 1), torch.cat(idx, 1)

    @torch.no_grad()
    def score_poses(
        self, work: torch.Tensor, ref: FourierReference, mats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """NCC of particle i at its own rotations ``mats[i]`` (N, J, 3, 3): (ncc, shift index), each (N, J)."""
        n, j = mats.shape[:2]
        ps, p2 = self._shifted(work)
        per = max(1, self.config.chunk // j)
        ncc, idx = [], []
        for s in range(0, n, per):
            m = mats[s : s + per]
            y, e_ref, wm = self._reference_terms(ref, m.reshape(-1, 3, 3))
            y = y.view(len(m), j, -1)
            corr = torch.bmm(ps[s : s + per], y.transpose(1, 2))  # (n, S, J)
            c, i = self._ncc(corr, p2[s : s + per], e_ref.view(len(m), j), wm.view(len(m), j, -1))
            ncc.append(c)
            idx.append(i)
        return torch.cat(ncc), torch.cat(idx)

    @torch.no_grad()
    def align(self, work: torch.Tensor, ref: FourierReference) -> AlignResult:
        """Coarse-to-fine alignment of working-grid particles (N, d, d, d) to one working-grid reference.

        ``ref`` comes from :meth:`reference`.
        """
        cfg = self.config
        coarse, _ = self.scan(work, ref)
        k = min(cfg.n_candidates, coarse.shape[1])
        top = coarse.topk(k, dim=1).indices
        cand = self.grid[top]  # (N, k, 3, 3)
        step = cfg.angular_step_deg
        ncc, idx = self.score_poses(work, ref, cand[:, :1])
        mats = cand[:, 0]
        best_ncc, best_idx = ncc[:, 0], idx[:, 0]
        for level in range(cfg.refine_levels):
            step = step / 2 if level else step
            offs = torch.from_numpy(local_offsets(step)).float()
            mats_l = (cand[:, :, None] @ offs[None, None]).reshape(len(cand), -1, 3, 3)
            ncc, idx = self.score_poses(work, ref, mats_l)
            keep = 1 if level == cfg.refine_levels - 1 else k
            top = ncc.topk(keep, dim=1).indices
            cand = mats_l.gather(1, top[..., None, None].expand(-1, -1, 3, 3))
            best_ncc, best_idx = ncc.gather(1, top[:, :1])[:, 0], idx.gather(1, top[:, :1])[:, 0]
            mats = cand[:, 0]
        shifts = self._subvoxel(work, ref, mats, self.shifts_px[best_idx]) * self.work_pixel_A
        return AlignResult(mats.double().numpy(), shifts.double().numpy(), best_ncc.double().numpy())

    def _subvoxel(self, work: torch.Tensor, ref: FourierReference, mats: torch.Tensor, t0: torch.Tensor):
        """Refine integer shifts (N, 3) on a 0.25-voxel lattice within ±0.5 voxel of the best one."""
        g = torch.arange(-2, 3, dtype=torch.float32) * 0.25
        delta = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)  # (125, 3)
        k = self._k  # (F, 3)
        e_delta = torch.polar(torch.ones(()), 2 * math.pi * (k @ delta.T) / self.work_box)  # (F, 125)
        p = self.spectra(work)
        out = torch.empty_like(t0)
        for s in range(0, len(p), self.config.chunk):
            y, _, _ = self._reference_terms(ref, mats[s : s + self.config.chunk])
            e0 = torch.polar(torch.ones(()), 2 * math.pi * (t0[s : s + self.config.chunk] @ k.T) / self.work_box)
            corr = ((p[s : s + self.config.chunk] * y * e0) @ e_delta).real
            out[s : s + self.config.chunk] = t0[s : s + self.config.chunk] + delta[corr.argmax(1)]
        return out
