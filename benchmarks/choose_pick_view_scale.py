"""The view network's pixel size chosen from the particle's diameter: does it rank the candidates better? Dev sets.

The picker embeds a 64 px box at the network's 5 Å/px around every candidate (320 Å), whatever the particle's
size: a 95 Å protein fills 0.3 of the box, a 360 Å one more than all of it. Here the micrograph is instead
binned so that the typed diameter spans ``fill`` of the box (pixel size = diameter / (fill x 64)), the exemplars
and the candidates alike; everything else is as ``cryoshot pick`` computes the view opinion (best of five
positions, the mean of the 3 best exemplar cosines), and the candidates, their cosine and NCC are the shipped
run's. Dev sets only (training structures), as ``choose_pick_view_model.py``.

    cd benchmarks && ../.venv/bin/python choose_pick_view_scale.py [--fills 0.4,0.5,0.6] [--floor] [--runs ../runs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from choose_pick_view_model import view_variant_screen

from cryoshot.models.siamese2d import load_siamese
from cryoshot.picking.views import view_pixel_size
from cryoshot.pretrained import resolve_siamese_model
from cryoshot.utils.threads import configure_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fills", default="0.4,0.5,0.6", help="typed diameter / view box, comma-separated")
    ap.add_argument(
        "--floor", action="store_true", help="never finer than the network's own 5 Å/px (bin large particles only)"
    )
    ap.add_argument("--runs", type=Path, default=Path("../runs"))
    a = ap.parse_args()
    configure_threads()
    net = load_siamese(resolve_siamese_model("default"))[0].eval()
    fills = [float(f) for f in a.fills.split(",")]

    def pixel_size(typed: float, fill: float) -> float:
        return view_pixel_size(net, typed, fill) if a.floor else typed / (fill * net.cfg.box_px)

    variants = {f"fill {f:g}": (lambda typed, f=f: {"view_px": pixel_size(typed, f)}) for f in fills}
    view_variant_screen(a.runs, net, variants)


if __name__ == "__main__":
    main()
