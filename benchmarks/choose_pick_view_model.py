"""Another Siamese network for the picker's view opinion: does it rank the candidates better? Dev sets only.

Every candidate of a finished ``cryoshot pick`` run (as shipped) keeps its MAE cosine and template
NCC; its view opinion (0.5 of the figure of merit) is recomputed with each network given, as
``cryoshot pick`` computes it: the exemplars embedded from the reference micrograph, each
candidate scored at the best of five positions (``picking.views.view_search``) by its mean cosine
to its 3 most similar exemplars. The shipped network goes through the same path as a reference. The
candidates are cut with the shipped pooled gmm3; F1 over the
queries at that cut and at each query's best threshold, and the view score's AUC for target against
distractor candidates and against all others.

Dev sets only (training structures): the second simulator's 4 dev sets (``othersim_picking.py
--dev``) and the 10 training-map sets of ``choose_flatten.py --amps 1 --flatten 1``.

    cd benchmarks && ../.venv/bin/python choose_pick_view_model.py MODEL.pt [MODEL.pt ...] [--runs ../runs] [--ensemble]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from choose_pick_background_views import load, run_screen, scored, top_cosine

from cryoshot.io.star import read_star_table
from cryoshot.models.siamese2d import load_siamese
from cryoshot.picking.micrograph import read_micrograph
from cryoshot.picking.views import VIEW_TOP, view_image, view_pixel_size, view_reference, view_search
from cryoshot.picking.workflow import PickConfig
from cryoshot.pretrained import resolve_siamese_model
from cryoshot.utils.threads import configure_threads


def new_view_scores(
    net, ds: Path, mics: list[dict], typed: float, view_px: float | None = None, flatten: float | None = 1.0
) -> list[np.ndarray]:
    """Each micrograph's view scores (N_i,) of its candidates with ``net``, as ``cryoshot pick`` computes them: at
    its view pixel size for the typed diameter (``views.view_pixel_size``; before 2026-12-01 always the network's
    5 Å/px, as the earlier logs were made), or at ``view_px`` (Å) when given; the view image flattened as pick's
    over ``flatten`` working diameters (None: not flattened)."""
    wd = PickConfig(diameter_A=typed).work_diameter_A
    px = view_pixel_size(net, typed) if view_px is None else view_px
    flat = None if flatten is None else flatten * wd
    paths = sorted(ds.glob("mic_*.mrc"))
    img, ps = read_micrograph(paths[0])
    ex = read_star_table(ds / "ex.star")[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
    ref = view_reference(net, [(view_image(img, ps, net, flat, px), ex)], wd, px)
    out = []
    for path, m in zip(paths, mics, strict=True):
        img, ps = read_micrograph(path)
        out.append(view_search(ref, view_image(img, ps, net, flat, px), m["xy"])[1])
    return out


def view_variant_screen(runs: Path, net, variants: dict[str, Callable[[float], dict]]) -> None:
    """:func:`run_screen` over the dev sets of ``runs``: every run's candidates keep their cosine and NCC, and their
    view opinion is recomputed with ``net`` by :func:`new_view_scores` under each variant (row name -> a function of
    the typed diameter giving its keyword arguments), against the run's own view scores ("shipped")."""

    def score_set(ds: Path, target: str, typed: float) -> dict[str, tuple]:
        mics, exf = load(ds, target, typed)
        base = [top_cosine(m["e"], exf, VIEW_TOP) for m in mics]
        res = {"shipped": scored(mics, base, base)}
        for name, kwargs in variants.items():
            res[name] = scored(mics, new_view_scores(net, ds, mics, typed, **kwargs(typed)), base)
        return res

    run_screen(runs, score_set, "shipped", "the view score")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path, help="Siamese network files")
    ap.add_argument("--runs", type=Path, default=Path("../runs"))
    ap.add_argument("--ensemble", action="store_true", help="also score the mean of all networks' view scores")
    a = ap.parse_args()
    configure_threads()
    # the shipped network through the same path too: the run's written positions were already its best, so its
    # scores here can differ a little from the run's (a second search around them)
    shipped = resolve_siamese_model("default")
    nets = {f"{p.name} (re-searched)" if p == shipped else p.name: load_siamese(p)[0].eval()
            for p in [shipped, *a.models]}  # fmt: skip

    def score_set(ds: Path, target: str, typed: float) -> dict[str, tuple]:
        mics, exf = load(ds, target, typed)
        base = [top_cosine(m["e"], exf, VIEW_TOP) for m in mics]
        res = {"shipped": scored(mics, base, base)}
        every = []
        for name, net in nets.items():
            every.append(new_view_scores(net, ds, mics, typed))
            res[name] = scored(mics, every[-1], base)
        if a.ensemble:  # the mean of every network's view score, the shipped one included
            res["mean of all networks"] = scored(mics, [np.mean(v, axis=0) for v in zip(*every, strict=True)], base)
        return res

    run_screen(a.runs, score_set, "shipped", "the view score")


if __name__ == "__main__":
    main()
