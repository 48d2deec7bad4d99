"""The view opinion's own background flattening: would a wider window (or none) rank the candidates better? Dev sets.

``cryoshot pick`` flattens the Siamese network's copy of the micrograph as it flattens the MAE's: tile medians a
quarter diameter wide, a median filter over about one diameter of tiles (``micrograph.flatten_background``). Over a
particle, or between touching ones, such a window is half protein, so it takes off part of the particle's own low
frequencies, which the network's training images kept. Here the view image alone is flattened over ``k`` working
diameters instead (or not at all: no plane, no medians), the exemplars' and the candidates' alike; everything else
is the shipped run's (candidates, cosine, NCC), and the view opinion is recomputed as ``cryoshot pick`` computes it
(its pixel size, best of five positions, mean of the 3 best exemplar cosines). Dev sets only (training structures).

    cd benchmarks && ../.venv/bin/python choose_pick_view_flatten.py [--widths 2,4,none] [--runs ../runs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from choose_pick_view_model import view_variant_screen

from cryoshot.models.siamese2d import load_siamese
from cryoshot.pretrained import resolve_siamese_model
from cryoshot.utils.threads import configure_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="1,2,4,none", help="flattening windows in working diameters (1: as shipped)")
    ap.add_argument("--runs", type=Path, default=Path("../runs"))
    a = ap.parse_args()
    configure_threads()
    net = load_siamese(resolve_siamese_model("default"))[0].eval()
    widths = [None if w == "none" else float(w) for w in a.widths.split(",")]

    variants = {
        ("not flattened" if w is None else f"{w:g} diameters" + (" (re-searched)" if w == 1 else "")):
            (lambda typed, w=w: {"flatten": w})
        for w in widths
    }  # fmt: skip
    view_variant_screen(a.runs, net, variants)


if __name__ == "__main__":
    main()
