"""Fourier-slice projector: 2D projections of rotated volumes without rotating the volume.

The projection along z of a volume rotated by A has the 2D Fourier transform
``F(A^T (kx, ky, 0))`` (Fourier-slice theorem), where F is the 3D transform of the
unrotated volume. Volumes are zero-padded twice before the transform so that
trilinear interpolation of F is accurate.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class FourierProjector:
    """Project several structures at arbitrary orientations.

    Parameters
    ----------
    volumes : (C, D, D, D) float array, indexed (z, y, x), centred at voxel D // 2
    """

    def __init__(self, volumes: np.ndarray):
        vols = torch.as_tensor(np.asarray(volumes, dtype=np.float32))
        c, d = vols.shape[0], vols.shape[-1]
        self.box = d
        p = 2 * d
        pad = torch.zeros((c, p, p, p), dtype=torch.float32)
        o = d - d // 2  # puts voxel d // 2 at index p // 2 = d
        pad[:, o : o + d, o : o + d, o : o + d] = vols
        ft = torch.fft.fftshift(
            torch.fft.fftn(torch.fft.ifftshift(pad, dim=(-3, -2, -1)), dim=(-3, -2, -1)), dim=(-3, -2, -1)
        )
        self._ft = torch.stack([ft.real, ft.imag], dim=1).contiguous()  # (C, 2, P, P, P)
        # the D x D frequency grid of the output, in units of the padded grid
        f = 2.0 * (torch.arange(d, dtype=torch.float32) - d // 2)
        fy, fx = torch.meshgrid(f, f, indexing="ij")
        self._plane = torch.stack([fx, fy, torch.zeros_like(fx)], dim=-1)  # (D, D, 3) x, y, z

    def project(self, classes: np.ndarray, matrices: np.ndarray) -> np.ndarray:
        """Projections along z of structure ``classes[i]`` rotated actively by ``matrices[i]``.

        Parameters
        ----------
        classes : (B,) int
        matrices : (B, 3, 3) rotation matrices acting on (x, y, z)

        Returns
        -------
        (B, D, D) float32 projections, centred at pixel D // 2
        """
        d, p = self.box, 2 * self.box
        classes = np.asarray(classes)
        mats = torch.as_tensor(np.asarray(matrices, dtype=np.float32))
        out = torch.empty((len(classes), d, d), dtype=torch.complex64)
        scale = 2.0 / (p - 1)
        for c in np.unique(classes):
            sel = np.nonzero(classes == c)[0]
            # source frequency = A^T k  ->  k_row @ A
            src = torch.einsum("hwj,bjk->bhwk", self._plane, mats[sel])
            grid = (src + p // 2) * scale - 1.0
            vals = F.grid_sample(self._ft[c : c + 1], grid[None], mode="bilinear", align_corners=True)[0]
            out[sel] = torch.complex(vals[0], vals[1])
        img = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(out, dim=(-2, -1))), dim=(-2, -1)).real
        return img.numpy().astype(np.float32)
