"""Candidates from the template's NCC map as well as the MAE's cosine map. Dev sets only.

On the second simulator's dev sets a quarter to a half of the target particles off contamination
have no candidate within 0.25 diameters, mostly where particles touch: the MAE's windows are 1.5
diameters wide, and its cosine map has one peak between two neighbours. A shorter suppression
distance does not help (``choose_pick_nms.py``): there is no peak to keep. The template's NCC map
(a rotationally averaged template one diameter wide, at every binned pixel) is sharper. Here the
candidates of stage 2 are the cosine map's peaks plus the NCC map's peaks that lie at least
``--apart`` diameters from every cosine peak (at most as many as there are cosine peaks, best NCC
first), each read on the smoothed cosine map at its position. Then everything runs as ``cryoshot
pick`` runs it (view search, figure of merit, suppression) and the candidates are cut with the
pooled gmm3 over the queries. F1 over the queries at that cut and at each query's best
threshold, and the share of target particles with a candidate within 0.25 diameters ("reach").

Dev sets only (training structures), as in ``choose_pick_background_views.py``.

    cd benchmarks && ../.venv/bin/python choose_pick_union_candidates.py [--apart 0.35 0.5] [--runs ../runs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from choose_pick_background_views import candidate_kinds, dev_runs, dev_truth
from choose_pick_nms import evaluate, print_summary
from scipy import ndimage
from scipy.interpolate import RegularGridInterpolator
from scipy.spatial import cKDTree

from cryoshot.picking.micrograph import bin_micrograph, read_micrograph
from cryoshot.picking.scan import candidate_picks, peaks
from cryoshot.picking.template import ncc_map
from cryoshot.picking.workflow import PickConfig, _load_picker, _view_of, rank_by_merit
from cryoshot.utils.threads import configure_threads


def union_candidates(net, b, ex_feats, cfg: PickConfig, template, apart: float | None):
    """(xy binned (N, 2), cosine (N,)): the cosine map's peaks, plus (``apart`` not None) the NCC map's peaks at least
    ``apart`` diameters from all of them, with the smoothed cosine read at their positions."""
    xy, s, (scores, xs, ys) = candidate_picks(net, b.image, ex_feats, cfg.stride_px, cfg.nms_distance, cfg.matching)
    if apart is None or not len(xy):
        return xy, s
    d = net.config.particle_px
    ncc = ncc_map(b.image, template)
    nxy, nval = peaks(ncc, np.arange(ncc.shape[1], dtype=float), np.arange(ncc.shape[0], dtype=float),
                      cfg.nms_distance * d)  # fmt: skip
    far = cKDTree(xy).query(nxy)[0] >= apart * d
    nxy = nxy[far][: len(xy)]
    z = np.arctanh(np.clip(scores, -0.999999, 0.999999))
    smooth = ndimage.gaussian_filter(z, 0.15 * d / cfg.stride_px, mode="nearest")
    at = RegularGridInterpolator((ys, xs), smooth, bounds_error=False, fill_value=None)
    return np.concatenate([xy, nxy]), np.concatenate([s, np.tanh(at(nxy[:, ::-1]))])


def run_set(ds: Path, target: str, typed: float, apart: float | None) -> tuple[float, float, float]:
    picker = next(ds.glob("**/picker.pt"))
    net, ex_feats, template, views = _load_picker(str(picker))
    cfg = PickConfig(diameter_A=typed)
    truth = dev_truth(ds)
    qs = []
    for path in sorted(ds.glob("mic_*.mrc"))[1:]:
        img, ps = read_micrograph(path)
        b = bin_micrograph(img, ps, cfg.work_diameter_A, net.config.particle_px)
        v = _view_of(img, ps, views, cfg)
        xy, cos = union_candidates(net, b, ex_feats, cfg, template, apart)
        xy, merit, _ = rank_by_merit(b, xy, cos, cfg, template, views, v,
                                     nms_px=cfg.nms_distance * net.config.particle_px)  # fmt: skip
        xin = b.to_input(xy)
        _, targets = candidate_kinds(truth, path.name, xin, target, typed / ps)
        qs.append({"xy": xin, "merit": merit, "truth": targets, "d_px": typed / ps})
    return evaluate(qs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--apart", type=float, nargs="+", default=[0.35])
    ap.add_argument("--runs", type=Path, default=Path("../runs"))
    a = ap.parse_args()
    configure_threads()
    names = {None: "cosine peaks (shipped)", **{x: f"+ NCC peaks {x:g} d apart" for x in a.apart}}
    table: dict = {}
    for group, ds, target, typed in dev_runs(a.runs):
        row = []
        for apart, name in names.items():
            r = run_set(ds, target, typed, apart)
            table.setdefault(apart, []).append((group, *r))
            row.append(f"{name} {r[0]:.3f} / {r[1]:.3f}, reach {r[2]:.2f}")
        print(f"{group}: {ds.name} ({target}): " + "; ".join(row), flush=True)
    print_summary(table, names, None, "the shipped candidates")


if __name__ == "__main__":
    main()
