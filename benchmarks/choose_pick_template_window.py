"""The template's window in particle diameters: does a wider one rank the candidates better? Dev sets only.

The template opinion (0.4 of the figure of merit) is the NCC of the exemplars' rotationally averaged mean, cut in
the MAE's 24 px window on the micrograph binned so that the working diameter spans 16 px. A particle up to 180 Å
then sits in a window 1.5 diameters wide, with a ring of its surroundings; a larger one is binned for 180 Å (but
at least 0.65 of its size), so it spans up to 24.6 px and fills the window edge to edge. Here the template is cut
in a window ``span`` typed diameters wide (never under the 24 px), the exemplars' and the candidates' alike, and
its NCC replaces the shipped one in each candidate's figure of merit; the candidates, their cosine and view
opinion are the shipped run's. Dev sets only (training structures), as ``choose_pick_view_model.py``.

    cd benchmarks && ../.venv/bin/python choose_pick_template_window.py [--spans 1.5,1.75,2] [--runs ../runs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from choose_pick_background_views import cut_scores, load, run_screen

from cryoshot.io.star import read_star_table
from cryoshot.models.mae2d import PARTICLE_PX, WINDOW_PX
from cryoshot.picking.merit import standardise_scores
from cryoshot.picking.micrograph import bin_micrograph, read_micrograph
from cryoshot.picking.scan import windows_at
from cryoshot.picking.template import exemplar_template, ncc_at, ncc_map
from cryoshot.picking.workflow import TEMPLATE_WEIGHT, PickConfig
from cryoshot.utils.threads import configure_threads


def binned_set(ds: Path, typed: float) -> tuple[list, np.ndarray]:
    """A dev set's micrographs binned and flattened as the picker's MAE sees them, and the exemplars' (m, 2) binned
    coordinates on the first."""
    wd = PickConfig(diameter_A=typed).work_diameter_A
    bins = [bin_micrograph(*read_micrograph(p), wd, PARTICLE_PX) for p in sorted(ds.glob("mic_*.mrc"))]
    ex = read_star_table(ds / "ex.star")[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
    return bins, bins[0].to_binned(ex)


def ncc_scores(bins: list, ex: np.ndarray, mics: list[dict], window: int) -> list[np.ndarray]:
    """Each micrograph's (N_i,) template NCC at its candidates, the template cut in ``window`` binned px around the
    exemplars ``ex`` (m, 2) on the first micrograph of ``bins``."""
    template = exemplar_template(windows_at(bins[0].image, ex, window))
    return [ncc_at(ncc_map(b.image, template), b.to_binned(m["xy"])) for b, m in zip(bins, mics, strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", default="1.5,1.75,2", help="window widths in typed diameters, comma-separated")
    ap.add_argument("--runs", type=Path, default=Path("../runs"))
    a = ap.parse_args()
    configure_threads()
    spans = [float(s) for s in a.spans.split(",")]

    def score_set(ds: Path, target: str, typed: float) -> dict[str, tuple]:
        mics, _ = load(ds, target, typed)
        span_px = PARTICLE_PX * typed / PickConfig(diameter_A=typed).work_diameter_A  # the typed diameter, binned px
        bins, ex = binned_set(ds, typed)
        base = ncc_scores(bins, ex, mics, WINDOW_PX)
        res = {"shipped": cut_scores(mics, [m["merit"] for m in mics], base)}
        for s in spans:
            w = max(WINDOW_PX, int(round(s * span_px / 2)) * 2)
            new = base if w == WINDOW_PX else ncc_scores(bins, ex, mics, w)
            merits = [m["merit"] + TEMPLATE_WEIGHT * (standardise_scores(n) - standardise_scores(b))
                      for m, n, b in zip(mics, new, base, strict=True)]  # fmt: skip
            res[f"span {s:g}"] = cut_scores(mics, merits, new)
        return res

    run_screen(a.runs, score_set, "shipped", "the template NCC")


if __name__ == "__main__":
    main()
