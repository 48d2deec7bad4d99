"""The Siamese 2D embedding's opinion on each candidate: is it a view of the exemplars' particle?

The shipped Siamese network (the one ``cryoshot cluster`` uses) was trained on 208
structures to bring images of one view of one structure together whatever their in-plane
rotation, shift, CTF and noise, and to push other structures away. The picker's MAE was
trained to reconstruct windows, which separates particles from background better than one
particle from another. So each candidate (a peak of the MAE's cosine map) is also cut out at
the network's pixel size (coarser for a particle too large for its box: :func:`view_pixel_size`)
and embedded, and its opinion is the mean of its ``VIEW_TOP`` highest
cosine similarities to the exemplars' embeddings: high when it looks like one of the exemplar
views. On training structures this ranks target against distractor better than the MAE's
cosine and the template's NCC do (docs/benchmarks.md, "The Siamese network's opinion").

Protein must be bright for the network; the sign is read from the exemplars (their centre
against the ring around it), so raw (dark) and inverted micrographs both work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cryoshot.data.particles2d import standardise
from cryoshot.embedding.workflow import embed_images
from cryoshot.models.siamese2d import SiameseNet
from cryoshot.picking.micrograph import flatten_background, fourier_bin
from cryoshot.picking.scan import windows_at

VIEW_TOP = 3  # mean of the 3 best exemplar cosines (better than the best one alone on training structures)
# each candidate is also embedded this many view pixels (10 Å) to either side along x and y, and moves to
# the best of the five positions: the polar network is sensitive to centring, and the MAE's peaks are
# placed on a grid of a sixth of a diameter (docs/benchmarks.md, "Re-centring the candidates")
VIEW_STEP_PX = 2
# a particle larger than VIEW_FILL x the network's box at its own 5 Å/px (64 px, 320 Å) is embedded from a micrograph
# binned coarser, so that its typed diameter spans VIEW_FILL of the box: a 360 Å particle then leaves a ring of
# surroundings in view, as the network's training images did. Never finer than 5 Å/px: smaller particles are
# embedded as the network was trained (docs/benchmarks.md, "The view network's pixel size for large particles")
VIEW_FILL = 0.6


@dataclass
class ViewImage:
    """A micrograph resampled to the Siamese network's pixel size.

    Attributes
    ----------
    image : (h, w) float32
    factor : input pixels per view pixel
    """

    image: np.ndarray
    factor: float

    def to_view(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) input pixel coordinates -> view pixel coordinates (view pixel k samples input ``k * factor``,
        as Fourier cropping does)."""
        return np.asarray(xy, dtype=np.float64) / self.factor


@dataclass
class ViewReference:
    """What the Siamese network learned from the exemplars.

    Attributes
    ----------
    net : the Siamese network (eval mode)
    features : (m, E) unit-norm embeddings of the exemplars
    polarity : +1 when protein is bright in the micrographs, -1 when dark (raw data)
    source : name and sha256 of the file the network came from (None: the shipped default)
    pixel_size_A : the view images' pixel size, Å (:func:`view_pixel_size`; None: the network's own)
    """

    net: SiameseNet
    features: np.ndarray
    polarity: float
    source: dict | None = None
    pixel_size_A: float | None = None

    @property
    def view_pixel_A(self) -> float:
        """The pixel size (Å) the exemplars were embedded at, and candidates must be (None: the network's own,
        as every picker.pt written before it was recorded)."""
        return _pixel_or_own(self.net, self.pixel_size_A)


def _pixel_or_own(net: SiameseNet, view_pixel_A: float | None) -> float:
    """``view_pixel_A`` (Å), or the network's own pixel size when it is None."""
    return float(net.cfg.pixel_size_A if view_pixel_A is None else view_pixel_A)


def view_pixel_size(net: SiameseNet, diameter_A: float, fill: float = VIEW_FILL) -> float:
    """The pixel size (Å) at which a particle of typed ``diameter_A`` is embedded: the network's own, or coarser
    so that the diameter spans ``fill`` of the network's box."""
    return max(float(net.cfg.pixel_size_A), float(diameter_A) / (fill * net.cfg.box_px))


def view_image(
    img: np.ndarray,
    pixel_size_A: float,
    net: SiameseNet,
    diameter_A: float | None = None,
    view_pixel_A: float | None = None,
) -> ViewImage:
    """The micrograph ``img`` (H, W) at ``pixel_size_A`` (Å), resampled to ``view_pixel_A`` (Å; default the network's
    pixel size) by Fourier cropping, as the network's training images were (an antialiased bilinear binning ranked
    worse).

    With the particle's ``diameter_A``, its smooth background is removed as the picker's is
    (:func:`~cryoshot.picking.micrograph.flatten_background`, :data:`FLATTEN_DIAMETERS` diameters).
    """
    view_px = _pixel_or_own(net, view_pixel_A)
    v = fourier_bin(img, view_px / pixel_size_A)
    if diameter_A is not None:
        v = flatten_background(v, diameter_A / view_px)
    return ViewImage(v, float(img.shape[1] / v.shape[1]))


def crops_at(view: ViewImage, xy_input: np.ndarray, box: int) -> np.ndarray:
    """(N, box, box) float32 boxes of ``view`` centred (to the nearest pixel) at input-pixel ``xy_input`` (N, 2).

    Boxes reaching past the edge are filled by reflection.
    """
    # windows_at centres a window at (box - 1) / 2; the network's grid (and ``standardise``) at box // 2
    xy = np.rint(view.to_view(np.asarray(xy_input, float).reshape(-1, 2))) + ((box - 1) / 2 - box // 2)
    return windows_at(view.image, xy, box)[:, 0]


def particle_polarity(view: ViewImage, xy_input: np.ndarray, radius_px: float) -> float:
    """+1 when the particles at input-pixel ``xy_input`` (N, 2) are brighter than their surroundings in
    ``view`` (protein bright), -1 when darker (raw data).

    The mean of boxes three radii wide (``radius_px`` in view pixels), low-passed, is compared
    inside half the radius and in the ring from 1.1 to 1.5 radii.
    """
    box = max(16, int(np.ceil(3.2 * radius_px / 2)) * 2)
    mean = ndimage.gaussian_filter(crops_at(view, xy_input, box).mean(axis=0), max(1.0, radius_px / 4))
    yy, xx = np.mgrid[:box, :box] - box // 2
    r = np.hypot(yy, xx)
    inside, ring = mean[r <= 0.5 * radius_px].mean(), mean[(r >= 1.1 * radius_px) & (r <= 1.5 * radius_px)].mean()
    return 1.0 if inside >= ring else -1.0


def embed_crops(net: SiameseNet, crops: np.ndarray, polarity: float) -> np.ndarray:
    """(N, E) unit-norm embeddings of (N, D, D) crops at the network's grid, protein made bright."""
    if len(crops) == 0:
        return np.zeros((0, net.cfg.dense[-1]), np.float32)
    return embed_images(net, standardise(polarity * crops), progress=False)


def view_reference(
    net: SiameseNet, views: list[tuple[ViewImage, np.ndarray]], diameter_A: float, view_pixel_A: float | None = None
) -> ViewReference:
    """Embed the exemplars: ``views`` holds, for each reference micrograph, its view image (at ``view_pixel_A``, Å;
    default the network's pixel size) and the exemplars' input-pixel coordinates (n, 2) on it."""
    view_px = _pixel_or_own(net, view_pixel_A)
    views = [(v, np.asarray(xy, float).reshape(-1, 2)) for v, xy in views if len(xy)]
    votes = [particle_polarity(v, xy, 0.5 * diameter_A / view_px) * len(xy) for v, xy in views]
    polarity = 1.0 if sum(votes) >= 0 else -1.0
    crops = np.concatenate([crops_at(v, xy, net.cfg.box_px) for v, xy in views])
    return ViewReference(net, embed_crops(net, crops, polarity), polarity, pixel_size_A=view_px)


def view_scores(ref: ViewReference, view: ViewImage, xy_input: np.ndarray, top: int = VIEW_TOP) -> np.ndarray:
    """(N,) each candidate's mean cosine to its ``top`` most similar exemplars (input-pixel ``xy_input`` (N, 2))."""
    e = embed_crops(ref.net, crops_at(view, xy_input, ref.net.cfg.box_px), ref.polarity)
    if len(e) == 0:
        return np.zeros(0)
    cos = e.astype(np.float64) @ ref.features.T.astype(np.float64)
    k = min(top, cos.shape[1])
    return np.sort(cos, axis=1)[:, -k:].mean(axis=1)


def view_search(
    ref: ViewReference, view: ViewImage, xy_input: np.ndarray, step: float = VIEW_STEP_PX, top: int = VIEW_TOP
) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's view score at the best of five positions: where it is, and ``step`` view pixels
    to either side along x and along y.

    Parameters
    ----------
    xy_input : (N, 2) candidates, input pixels
    step : the shift, view pixels (0: the scores where the candidates are)

    Returns
    -------
    xy : (N, 2) the best position of each candidate, input pixels, kept inside the micrograph
    score : (N,) the view score there (:func:`view_scores`)
    """
    xy = np.asarray(xy_input, float).reshape(-1, 2)
    if step <= 0 or len(xy) == 0:
        return xy, view_scores(ref, view, xy, top)
    offsets = np.array([(0, 0), (step, 0), (-step, 0), (0, step), (0, -step)], float) * view.factor
    high = (np.array(view.image.shape[::-1], float) - 1) * view.factor  # the last input pixel the view samples
    pos = np.clip(xy[:, None, :] + offsets[None], 0.0, high).reshape(-1, 2)
    s = view_scores(ref, view, pos, top).reshape(len(xy), len(offsets))
    best = np.argmax(s, axis=1)  # a tie keeps the candidate where it is
    rows = np.arange(len(xy))
    return pos.reshape(len(xy), len(offsets), 2)[rows, best], s[rows, best]
