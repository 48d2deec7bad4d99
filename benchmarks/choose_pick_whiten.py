"""The template's opinion on whitened micrographs: a matched filter for coloured background (dev sets only).

``cryoshot pick`` reads each candidate's NCC with the exemplars' rotationally averaged template on
the binned, flattened micrograph. Real micrographs (and the second simulator's) carry coloured
background: amorphous ice with a 1/k spectrum, a detector's MTF. Template matching in coloured
noise is best done after whitening (the matched filter divides by the noise spectrum; cisTEM and
pytom-match-pick whiten). Here each binned micrograph is filtered by its own radially averaged
power spectrum to the power ``-p / 2`` (p = 0: as shipped; p = 1: white), the template is rebuilt
from the whitened reference's exemplar windows, and the NCC opinion of the figure of merit is
replaced by the whitened one. The same is tried for the view opinion (the Siamese network's image at
5 Å/px whitened, the exemplars embedded from the whitened reference), alone and with the NCC's.
Every variant re-scores the same candidates (those of a finished
``cryoshot pick`` run as shipped) and cuts them with the shipped pooled gmm3; F1 over the queries at
that cut and at each query's best threshold, and the figure of merit's AUC for target against
distractor candidates and against all others.

Dev sets only (training structures): the second simulator's 4 dev sets (``othersim_picking.py
--dev``) and the 10 training-map sets of ``choose_flatten.py --amps 1 --flatten 1``.

    cd benchmarks && ../.venv/bin/python choose_pick_whiten.py [--runs ../runs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from choose_pick_background_views import candidate_kinds, cut_scores, open_dev_set, run_screen, top_cosine

from cryoshot.io.star import read_star_table
from cryoshot.picking.merit import standardise_scores
from cryoshot.picking.micrograph import bin_micrograph, read_micrograph
from cryoshot.picking.scan import windows_at
from cryoshot.picking.template import exemplar_template, ncc_at, ncc_map
from cryoshot.picking.views import VIEW_TOP, ViewImage, crops_at, embed_crops, view_image
from cryoshot.picking.workflow import TEMPLATE_WEIGHT, VIEW_WEIGHT
from cryoshot.utils.threads import configure_threads

POWERS = (0.0, 0.5, 0.75, 1.0)
VIEW_POWERS = (0.0, 0.5, 1.0)
# (NCC power, view power) pairs scored
VARIANTS = [(p, 0.0) for p in POWERS] + [(0.0, q) for q in VIEW_POWERS[1:]] + [(q, q) for q in VIEW_POWERS[1:]]


def radial_psd(img: np.ndarray, smooth: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The image's power spectrum averaged in rings of one frequency bin: (radius map (H, W//2+1), profile)."""
    h, w = img.shape
    f = np.abs(np.fft.rfft2(img - img.mean())) ** 2
    ky, kx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    r = np.rint(np.hypot(ky, kx) * max(h, w)).astype(int)
    prof = np.bincount(r.ravel(), f.ravel()) / np.maximum(np.bincount(r.ravel()), 1)
    if smooth:
        k = np.ones(2 * smooth + 1) / (2 * smooth + 1)
        prof = np.convolve(np.pad(prof, smooth, mode="edge"), k, mode="valid")
    return r, np.maximum(prof, prof.max() * 1e-6)


def whiten(img: np.ndarray, power: float) -> np.ndarray:
    """``img`` (H, W) filtered by its radial power spectrum to the power ``-power / 2`` (0: unchanged)."""
    if power == 0:
        return img
    r, prof = radial_psd(img)
    filt = prof[r] ** (-power / 2)
    filt[0, 0] = 0.0
    out = np.fft.irfft2(np.fft.rfft2(img) * filt, s=img.shape)
    return (out / out.std()).astype(np.float32)


def load(ds: Path, target: str, typed: float) -> list[dict]:
    """Every micrograph's candidates (binned), figure of merit, kind (2 target, 1 distractor, 0 other), truth,
    and, per whitening power, the candidates' NCC with the template rebuilt on that power."""
    run, (net, _, template, views), cfg, truth, ex = open_dev_set(ds, typed)
    w = net.config.window_px
    mics, binned, vimgs = [], [], []
    for mic in sorted(ds.glob("mic_*.mrc")):
        img, ps = read_micrograph(mic)
        b = bin_micrograph(img, ps, cfg.work_diameter_A, net.config.particle_px)
        c = read_star_table(run / "candidates" / f"{mic.stem}_candidates.star")
        xy = c[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
        d_px = typed / ps
        kind, targets = candidate_kinds(truth, mic.name, xy, target, d_px)
        mics.append({"xy": xy, "xyb": b.to_binned(xy), "merit": c["rlnAutopickFigureOfMerit"].to_numpy(float),
                     "kind": kind, "truth": targets, "d_px": d_px, "ncc": {}})  # fmt: skip
        binned.append(b)
        vimgs.append(view_image(img, ps, views.net, cfg.work_diameter_A, views.view_pixel_A))
    ex_b = binned[0].to_binned(ex)
    for p in POWERS:
        imgs = [whiten(b.image, p) for b in binned]
        tmpl = template if p == 0 else exemplar_template(windows_at(imgs[0], ex_b, w))
        for m, im in zip(mics, imgs, strict=True):
            m["ncc"][p] = ncc_at(ncc_map(im, tmpl), m["xyb"])
        if p in VIEW_POWERS:
            vw = [ViewImage(whiten(v.image, p), v.factor) for v in vimgs]
            box = views.net.cfg.box_px
            exf = embed_crops(views.net, crops_at(vw[0], ex, box), views.polarity).astype(np.float64)
            for m, v in zip(mics, vw, strict=True):
                e = embed_crops(views.net, crops_at(v, m["xy"], box), views.polarity).astype(np.float64)
                m.setdefault("view", {})[p] = top_cosine(e, exf, VIEW_TOP)
    return mics


def scored(mics: list[dict], p: float, q: float) -> tuple[float, float, float, float]:
    """:func:`cut_scores` with the NCC opinion of whitening power ``p`` and the view opinion of power ``q`` in place
    of the run's; the AUCs are the figure of merit's."""
    z = standardise_scores
    merits = [m["merit"] + TEMPLATE_WEIGHT * (z(m["ncc"][p]) - z(m["ncc"][0.0]))
              + VIEW_WEIGHT * (z(m["view"][q]) - z(m["view"][0.0])) for m in mics]  # fmt: skip
    return cut_scores(mics, merits, merits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("../runs"))
    a = ap.parse_args()
    configure_threads()

    def score_set(ds: Path, target: str, typed: float) -> dict[str, tuple]:
        mics = load(ds, target, typed)
        return {f"whitening powers NCC {p:g}, view {q:g}": scored(mics, p, q) for p, q in VARIANTS}

    run_screen(a.runs, score_set, "whitening powers NCC 0, view 0", "the figure of merit")


if __name__ == "__main__":
    main()
