"""The shared Fourier helpers (cryoshot.utils.fourier): Fourier-slice invariants, and sameness with the code they replace."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation

from cryoshot.align.fourier import FourierReference
from cryoshot.simulate.projector import FourierProjector
from cryoshot.simulate.rotation import rotate_volumes
from cryoshot.utils.fourier import (
    center_crop_or_pad,
    central_slice_frequencies,
    centred_spectrum,
    crop_rfft,
    half_to_full,
    hermitian_weights,
    rfft_freqs_2d,
    rfft_freqs_3d,
    rfft_radius,
    rotate_frequencies,
    sample_centred,
)


def _blobs(d: int, seed: int = 0, n: int = 6) -> np.ndarray:
    """A smooth asymmetric volume (Gaussian blobs) centred at voxel d // 2."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:d, :d, :d] - d // 2
    vol = np.zeros((d,) * 3, np.float32)
    for c in rng.uniform(-d / 5, d / 5, (n, 3)):
        r = rng.uniform(1.2, 2.5)
        vol += np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * r * r)).astype(np.float32)
    return vol


def _centred_fft2(img: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(img, dim=(-2, -1))), dim=(-2, -1))


# -- Fourier-slice invariants ----------------------------------------------------------------------
@pytest.mark.parametrize("d", [16, 15])
def test_central_slice_is_the_ft_of_the_projection(d):
    vol = torch.from_numpy(_blobs(d))
    spec = centred_spectrum(vol, 2)  # (2, 2d, 2d, 2d)
    g = sample_centred(spec, rotate_frequencies(central_slice_frequencies(d), torch.eye(3)[None]), 2.0)
    slice_ = torch.complex(g[0], g[1]).view(d, d)
    want = _centred_fft2(vol.sum(0))
    scale = want.abs().max()
    assert (slice_ - want).abs().max() < 1e-5 * scale
    # the same slice read straight off the padded grid (every second sample of the kz = 0 plane)
    s = d - 2 * (d // 2)
    direct = torch.complex(spec[0, d, s::2, s::2], spec[1, d, s::2, s::2])
    assert (slice_ - direct).abs().max() < 1e-5 * scale


@pytest.mark.parametrize("d", [16, 15])
def test_projection_at_identity_is_the_sum_along_z(d):
    vol = _blobs(d)
    proj = FourierProjector(vol[None]).project(np.array([0]), np.eye(3)[None])[0]
    np.testing.assert_allclose(proj, vol.sum(0), atol=1e-4 * np.abs(vol.sum(0)).max())


def test_projection_along_each_axis_is_exact_for_quarter_turns():
    """A 90° turn moves grid points onto grid points: the projection is a sum along x or y."""
    d = 15  # odd: the quarter turn about voxel d // 2 keeps the box
    vol = _blobs(d, seed=2)
    about_y = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])  # x' = z, z' = -x
    about_x = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # y' = -z, z' = y
    proj = FourierProjector(vol[None]).project(np.array([0, 0]), np.stack([about_y, about_x]))
    # rotated(x, y, z) = vol(A^T (x, y, z)); (z, y, x) array indices, centre d // 2
    want_y = vol.sum(2).T  # rotated[z, y, x] = vol[x, y, -z]: sum over z of vol[x, y, .] = sum over vol's x axis
    want_x = vol.sum(1)[::-1]  # rotated[z, y, x] = vol[-y, z, x]: sum over vol's y axis, y flipped
    tol = 1e-4 * np.abs(vol.sum(0)).max()
    np.testing.assert_allclose(proj[0], want_y, atol=tol)
    np.testing.assert_allclose(proj[1], want_x, atol=tol)


def test_projection_matches_real_space_rotation():
    d = 24
    vol = _blobs(d, seed=3)
    mats = Rotation.random(3, random_state=4).as_matrix()
    proj = FourierProjector(vol[None]).project(np.zeros(3, int), mats)
    direct = rotate_volumes(torch.from_numpy(vol).expand(3, -1, -1, -1).contiguous(), torch.from_numpy(mats)).sum(1)
    for a, b in zip(proj, direct.numpy(), strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.995


def test_unpadded_map_at_identity_is_the_map():
    d = 12
    w = torch.rand(1, d, d, d, generator=torch.Generator().manual_seed(0))
    kz, ky, kx = torch.meshgrid(*(torch.arange(d, dtype=torch.float32) - d // 2,) * 3, indexing="ij")
    k = torch.stack([kx, ky, kz], -1).reshape(-1, 3)
    got = sample_centred(w, rotate_frequencies(k, torch.eye(3)[None]), 1.0)[0, 0].view(d, d, d)
    torch.testing.assert_close(got, w[0], atol=1e-6, rtol=1e-6)


def test_rotate_frequencies_is_a_transpose_times_k():
    k = torch.randn(50, 3, generator=torch.Generator().manual_seed(1))
    mats = torch.from_numpy(Rotation.random(4, random_state=2).as_matrix()).float()
    want = torch.einsum("rji,fj->rfi", mats, k)  # (A^T k)_i = sum_j A_ji k_j
    torch.testing.assert_close(rotate_frequencies(k, mats), want, atol=1e-6, rtol=1e-6)


# -- rfft weights and grids ------------------------------------------------------------------------
@pytest.mark.parametrize("d", [10, 11])
def test_half_to_full_and_hermitian_weights_agree_with_the_full_transform(d):
    x = torch.randn(d, d, d, generator=torch.Generator().manual_seed(d))
    full = torch.fft.fftn(x).abs()
    half = torch.fft.rfftn(x).abs()
    torch.testing.assert_close(half_to_full(half, d), full, atol=1e-4, rtol=1e-5)
    w = torch.from_numpy(hermitian_weights(d))
    torch.testing.assert_close((w * half.square()).sum(), full.square().sum(), rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("d", [8, 9])
def test_frequency_grids_match_torch(d):
    kz, ky, kx = rfft_freqs_3d(d)
    assert kz.shape == ky.shape == kx.shape == (d, d, d // 2 + 1)
    np.testing.assert_allclose(kz[:, 0, 0], torch.fft.fftfreq(d).numpy() * d, atol=1e-6)
    np.testing.assert_allclose(kx[0, 0], torch.fft.rfftfreq(d).numpy() * d, atol=1e-6)
    ky2, kx2 = rfft_freqs_2d(d)
    np.testing.assert_array_equal(ky2, ky[0])
    np.testing.assert_array_equal(kx2, kx[0])
    np.testing.assert_allclose(rfft_radius(d, 2, 5.0), np.sqrt(kx2**2 + ky2**2) / (d * 5.0))
    with pytest.raises(ValueError, match="ndim"):
        rfft_radius(d, 1)


# -- sameness with the code the helpers replaced (verbatim copies of the old functions) ------------------
def _old_project(volumes: np.ndarray, classes: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """simulate/projector.py's FourierProjector before the shared sampler."""
    vols = torch.as_tensor(np.asarray(volumes, dtype=np.float32))
    c, d = vols.shape[0], vols.shape[-1]
    p = 2 * d
    pad = torch.zeros((c, p, p, p), dtype=torch.float32)
    o = d - d // 2
    pad[:, o : o + d, o : o + d, o : o + d] = vols
    ft = torch.fft.fftshift(
        torch.fft.fftn(torch.fft.ifftshift(pad, dim=(-3, -2, -1)), dim=(-3, -2, -1)), dim=(-3, -2, -1)
    )
    ft = torch.stack([ft.real, ft.imag], dim=1).contiguous()
    f = 2.0 * (torch.arange(d, dtype=torch.float32) - d // 2)
    fy, fx = torch.meshgrid(f, f, indexing="ij")
    plane = torch.stack([fx, fy, torch.zeros_like(fx)], dim=-1)
    mats = torch.as_tensor(np.asarray(matrices, dtype=np.float32))
    out = torch.empty((len(classes), d, d), dtype=torch.complex64)
    scale = 2.0 / (p - 1)
    for c in np.unique(classes):
        sel = np.nonzero(classes == c)[0]
        src = torch.einsum("hwj,bjk->bhwk", plane, mats[sel])
        grid = (src + p // 2) * scale - 1.0
        vals = F.grid_sample(ft[c : c + 1], grid[None], mode="bilinear", align_corners=True)[0]
        out[sel] = torch.complex(vals[0], vals[1])
    img = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(out, dim=(-2, -1))), dim=(-2, -1)).real
    return img.numpy().astype(np.float32)


def _old_rotated(volume: torch.Tensor, weight: torch.Tensor, k: torch.Tensor, mats: torch.Tensor):
    """align/fourier.py's FourierReference(volume, weight, k).rotated(mats) before the shared sampler."""
    d = volume.shape[-1]
    n = 2 * d
    pad = torch.zeros((n, n, n), dtype=torch.float32)
    o = d - d // 2
    pad[o : o + d, o : o + d, o : o + d] = volume
    spec = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(pad)))
    spec = torch.stack([spec.real, spec.imag])[None].contiguous()
    wfull = torch.fft.fftshift(half_to_full(weight.float(), d))[None, None].contiguous()

    def coords(scale: float, m: int) -> torch.Tensor:
        r = len(mats)
        kr = (k @ mats.float().permute(1, 0, 2).reshape(3, 3 * r)).view(-1, r, 3).transpose(0, 1)
        idx = kr * scale + m // 2
        return (idx * (2.0 / (m - 1)) - 1.0)[None, :, None]

    g = F.grid_sample(spec, coords(2.0, n), align_corners=True)[0, :, :, 0]
    w = F.grid_sample(wfull, coords(1.0, d), align_corners=True)
    return torch.complex(g[0], g[1]), w[0, 0, :, 0]


def _old_rfft_freqs_3d(box: int):
    """simulate/optics.py's rfft_freqs_3d."""
    f = np.fft.fftfreq(box) * box
    fr = np.fft.rfftfreq(box) * box
    return np.meshgrid(f, f, fr, indexing="ij")


@pytest.mark.parametrize("d", [16, 17])
def test_projector_is_unchanged(d):
    rng = np.random.default_rng(d)
    vols = rng.standard_normal((2, d, d, d)).astype(np.float32)
    classes = np.array([0, 1, 1, 0, 1])
    mats = Rotation.random(5, random_state=d).as_matrix()
    old = _old_project(vols, classes, mats)
    new = FourierProjector(vols).project(classes, mats)
    np.testing.assert_allclose(new, old, rtol=0, atol=1e-6 * np.abs(old).max())


def test_fourier_reference_is_unchanged():
    d = 20
    rng = np.random.default_rng(5)
    vol = torch.from_numpy(rng.standard_normal((d, d, d)).astype(np.float32))
    weight = torch.from_numpy(rng.uniform(size=(d, d, d // 2 + 1)).astype(np.float32))
    kz, ky, kx = _old_rfft_freqs_3d(d)
    sel = (kx**2 + ky**2 + kz**2 > 0) & (kx**2 + ky**2 + kz**2 <= 8**2)
    k = torch.from_numpy(np.stack([kx[sel], ky[sel], kz[sel]], 1)).float()
    mats = torch.from_numpy(Rotation.random(6, random_state=6).as_matrix()).float()
    old_spec, old_w = _old_rotated(vol, weight, k, mats)
    new_spec, new_w = FourierReference(vol, weight, k).rotated(mats)
    torch.testing.assert_close(new_spec, old_spec, rtol=0, atol=1e-6 * float(old_spec.abs().max()))
    torch.testing.assert_close(new_w, old_w, rtol=0, atol=1e-7)


@pytest.mark.parametrize("d", [8, 9])
def test_frequency_grids_are_unchanged(d):
    for a, b in zip(rfft_freqs_3d(d), _old_rfft_freqs_3d(d), strict=True):
        np.testing.assert_array_equal(a, b)
    kz, ky, kx = _old_rfft_freqs_3d(d)
    np.testing.assert_array_equal(rfft_radius(d, 3, 7.0), np.sqrt(kx**2 + ky**2 + kz**2) / (d * 7.0))


@pytest.mark.parametrize("n", [10, 11])
def test_fourier_crop_and_pad_are_unchanged(n):
    d = 16
    x = torch.randn(2, d, d, d, generator=torch.Generator().manual_seed(n))
    f = torch.fft.rfftn(x, dim=(-3, -2, -1))
    lo, hi = (n + 1) // 2, n // 2  # data/transforms.py's _rfft_crop before crop_rfft
    idx = torch.cat([torch.arange(lo), torch.arange(d - hi, d)])
    torch.testing.assert_close(crop_rfft(f, n), f.index_select(-3, idx).index_select(-2, idx)[..., : n // 2 + 1])
    # fourier_resample's old zero-padding of a centred spectrum, now center_crop_or_pad
    big = 2 * n
    fs = torch.fft.fftshift(torch.fft.fftn(x, dim=(-3, -2, -1)), dim=(-3, -2, -1))
    g = torch.zeros(x.shape[:-3] + (big,) * 3, dtype=fs.dtype)
    sl = slice(big // 2 - d // 2, big // 2 - d // 2 + d)
    g[..., sl, sl, sl] = fs
    torch.testing.assert_close(center_crop_or_pad(fs, big), g, rtol=0, atol=0)
    assert torch.equal(center_crop_or_pad(center_crop_or_pad(x, big), d), x)
