"""Fourier-slice projector: 2D projections of rotated volumes without rotating the volume.

The projection along z of a volume rotated by A has the 2D Fourier transform
``F(A^T (kx, ky, 0))`` (Fourier-slice theorem), where F is the 3D transform of the
unrotated volume. Volumes are zero-padded twice before the transform so that
trilinear interpolation of F is accurate. The sampler is :mod:`cryoshot.utils.fourier`'s,
shared with the alignment's Fourier-space rotation.
"""

from __future__ import annotations

import numpy as np
import torch

from cryoshot.utils.fourier import central_slice_frequencies, centred_spectrum, rotate_frequencies, sample_centred

_PAD = 2


class FourierProjector:
    """Project several structures at arbitrary orientations.

    Parameters
    ----------
    volumes : (C, D, D, D) float array, indexed (z, y, x), centred at voxel D // 2
    """

    def __init__(self, volumes: np.ndarray):
        vols = torch.as_tensor(np.asarray(volumes, dtype=np.float32))
        self.box = vols.shape[-1]
        self._ft = centred_spectrum(vols, _PAD)  # (C, 2, P, P, P)
        self._plane = central_slice_frequencies(self.box)  # (D * D, 3) x, y, z in cycles per box

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
        d = self.box
        classes = np.asarray(classes)
        mats = torch.as_tensor(np.asarray(matrices, dtype=np.float32))
        out = torch.empty((len(classes), d, d), dtype=torch.complex64)
        for c in np.unique(classes):
            sel = np.nonzero(classes == c)[0]
            vals = sample_centred(self._ft[c], rotate_frequencies(self._plane, mats[sel]), _PAD)
            out[sel] = torch.complex(vals[0], vals[1]).view(len(sel), d, d)
        img = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(out, dim=(-2, -1))), dim=(-2, -1)).real
        return img.numpy().astype(np.float32)
