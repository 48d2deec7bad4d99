"""Centre each candidate by aligning it to the exemplars before the view network reads it. Dev sets only.

The view opinion separates target from distractor with AUC 0.88 at the particles' true positions
and 0.78 at the candidates (``view_centring_auc.py``): the candidates lie 0.05-0.12 diameters off.
The five-position search of ``cryoshot pick`` maximises the view score itself, which lifts
distractors as much as targets. Here each candidate's box is instead aligned to the exemplars'
boxes over in-plane rotations and shifts (``embedding.align2d.align_to_references``, the
cross-correlation of low-passed, disc-masked boxes), and the candidate moves by the best shift. A
target matches some exemplar and so lands on its centre; a distractor matches none well, and its
new position owes nothing to the view score.

Every variant re-scores the same candidates (those a finished ``cryoshot pick`` run wrote) and
cuts them with the shipped pooled gmm3, as ``choose_pick_background_views.py`` does; the same 14
dev sets (training structures only). Also printed: the median distance, in typed diameters, from
each target candidate to its particle, before and after the move.

    cd benchmarks && ../.venv/bin/python choose_pick_align_centring.py [--runs ../runs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from choose_pick_background_views import candidate_kinds, open_dev_set, run_screen, scored, top_cosine
from scipy.spatial import cKDTree

from cryoshot.embedding.align2d import align_to_references, lowpass
from cryoshot.io.star import read_star_table
from cryoshot.picking.micrograph import read_micrograph
from cryoshot.picking.template import exemplar_template
from cryoshot.picking.views import VIEW_TOP, crops_at, embed_crops, view_image, view_search
from cryoshot.utils.threads import configure_threads

LOWPASS = 0.35  # of the view image's Nyquist (10 Å at 5 Å/px): about 29 Å
MASK_RADIUS = 0.6  # typed diameters
MAX_SHIFT = 0.2  # typed diameters


def prepared(crops: np.ndarray, radius_px: float) -> np.ndarray:
    """Boxes low-passed, zero-mean inside a soft disc of ``radius_px`` and zero outside it."""
    x = lowpass(torch.as_tensor(crops, dtype=torch.float32), LOWPASS)
    d = x.shape[-1]
    yy, xx = np.mgrid[:d, :d] - d // 2
    m = torch.as_tensor(np.clip(radius_px + 2 - np.hypot(yy, xx), 0, 2) / 2, dtype=torch.float32)
    mean = (x * m).flatten(1).sum(1) / m.sum()
    return ((x - mean[:, None, None]) * m).numpy()


def aligned_positions(v, xy: np.ndarray, refs: np.ndarray, d_view: float, box: int, polarity: float, n_angles=36):
    """(N, 2) input-pixel positions of the candidates ``xy`` moved by their best alignment to ``refs``."""
    c = prepared(polarity * crops_at(v, xy, box), MASK_RADIUS * d_view)
    al = align_to_references(c, refs, n_angles=n_angles, max_shift_px=max(1, round(MAX_SHIFT * d_view)))
    return xy + al.shift_px * v.factor


def offsets(xy: np.ndarray, kind: np.ndarray, truth_xy: np.ndarray, d_px: float) -> np.ndarray:
    """Distances (diameters) from the target candidates to their nearest target particle."""
    if not (kind == 2).any() or not len(truth_xy):
        return np.zeros(0)
    return cKDTree(truth_xy).query(xy[kind == 2])[0] / d_px


def score_set(ds: Path, target: str, typed: float) -> dict[str, tuple]:
    run, (_, _, _, views), cfg, truth, ex = open_dev_set(ds, typed)
    net, box = views.net, views.net.cfg.box_px
    d_view = cfg.work_diameter_A / net.cfg.pixel_size_A
    abox = int(np.ceil(1.6 * d_view / 2) * 2)
    mics, base, moved, searched, snapped, snapped_s, radial, radial_s, off0, off1, off2 = ([] for _ in range(11))
    ex_crops = None
    for m, path in enumerate(sorted(ds.glob("mic_*.mrc"))):
        img, ps = read_micrograph(path)
        v = view_image(img, ps, net, cfg.work_diameter_A)
        if m == 0:
            ex_crops = prepared(views.polarity * crops_at(v, ex, abox), MASK_RADIUS * d_view)
            disc = exemplar_template(ex_crops[:, None])[None]
        c = read_star_table(run / "candidates" / f"{path.stem}_candidates.star")
        xy = c[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
        d_px = typed / ps
        kind, targets = candidate_kinds(truth, path.name, xy, target, d_px)
        mics.append({"xy": xy, "merit": c["rlnAutopickFigureOfMerit"].to_numpy(float), "kind": kind,
                     "truth": targets, "d_px": d_px})  # fmt: skip
        e = embed_crops(net, crops_at(v, xy, box), views.polarity)
        base.append(top_cosine(e, views.features, VIEW_TOP))
        high = (np.array(v.image.shape[::-1], float) - 1) * v.factor
        xa = np.clip(aligned_positions(v, xy, ex_crops, d_view, abox, views.polarity), 0, high)
        moved.append(top_cosine(embed_crops(net, crops_at(v, xa, box), views.polarity), views.features, VIEW_TOP))
        searched.append(view_search(views, v, xa)[1])
        xr = np.clip(aligned_positions(v, xy, disc, d_view, abox, views.polarity, n_angles=1), 0, high)
        radial.append(top_cosine(embed_crops(net, crops_at(v, xr, box), views.polarity), views.features, VIEW_TOP))
        radial_s.append(view_search(views, v, xr)[1])
        t = truth[truth["rlnMicrographName"] == path.name][["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
        snap = xy.copy()
        if len(t):  # candidates within 0.25 diameters of a particle moved onto it (an oracle)
            dist, j = cKDTree(t).query(xy)
            snap[dist <= 0.25 * d_px] = t[j[dist <= 0.25 * d_px]]
        snapped.append(top_cosine(embed_crops(net, crops_at(v, snap, box), views.polarity), views.features, VIEW_TOP))
        snapped_s.append(view_search(views, v, snap)[1])
        if m:
            off0.append(offsets(xy, kind, targets, d_px))
            off1.append(offsets(xa, kind, targets, d_px))
            off2.append(offsets(xr, kind, targets, d_px))
    o0, o1, o2 = np.concatenate(off0), np.concatenate(off1), np.concatenate(off2)
    print(f"  {ds.name}: target candidates' offset, median {np.median(o0):.3f} -> {np.median(o1):.3f} (aligned), "
          f"{np.median(o2):.3f} (radial) diameters; within 0.1: {(o0 < 0.1).mean():.2f} -> {(o1 < 0.1).mean():.2f}, "
          f"{(o2 < 0.1).mean():.2f}", flush=True)  # fmt: skip
    # the figure of merit's other parts stay as the run wrote them; only the view opinion changes (positions too,
    # but the NCC and the MAE cosine are not re-read there)
    return {
        "shipped": scored(mics, base, base),
        "aligned to the exemplars": scored(mics, moved, base),
        "aligned, then the five-position search": scored(mics, searched, base),
        "mean of shipped and aligned": scored(mics, [(a + b) / 2 for a, b in zip(base, moved, strict=True)], base),
        "centred on the exemplars' rotational average": scored(mics, radial, base),
        "centred on the rotational average, then searched": scored(mics, radial_s, base),
        "moved onto the particle (oracle)": scored(mics, snapped, base),
        "moved onto the particle, then searched (oracle)": scored(mics, snapped_s, base),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("../runs"))
    a = ap.parse_args()
    configure_threads()
    run_screen(a.runs, score_set, "shipped", "the view score")


if __name__ == "__main__":
    main()
