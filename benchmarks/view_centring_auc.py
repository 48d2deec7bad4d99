"""How much the candidates' centring costs the picker's view opinion. Dev sets only.

The view opinion (``picking.views``) of every particle of the query micrographs is read at its
true position ("exact"), at the best of five positions around it as ``cryoshot pick`` searches
("search"), and at a position moved by up to ``--jitter`` diameters in a random direction (uniform
on the disc, "jitter"). Printed: the AUC of target against distractor particles for each network
and position, per dev set and averaged. Beside ``choose_pick_view_model.py``'s AUC at the
candidates, it says how much of the gap is centring rather than the network.

    cd benchmarks && ../.venv/bin/python view_centring_auc.py [MODEL.pt ...] [--runs ../runs] [--jitter 0.15]

The shipped network always comes first. Dev sets as in ``choose_pick_view_model.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from choose_pick_background_views import dev_runs, dev_truth
from sklearn.metrics import roc_auc_score

from cryoshot.io.star import read_star_table
from cryoshot.models.siamese2d import load_siamese
from cryoshot.picking.micrograph import read_micrograph
from cryoshot.picking.views import view_image, view_reference, view_scores, view_search
from cryoshot.picking.workflow import PickConfig
from cryoshot.pretrained import resolve_siamese_model
from cryoshot.utils.threads import configure_threads

POSITIONS = ("exact", "search", "jitter")


def position_aucs(net, ds: Path, target: str, typed: float, jitter: float) -> dict[str, float] | None:
    """AUC (target against distractor particles of the queries) of the view opinion at each kind of position;
    None when the set has no distractor."""
    truth = dev_truth(ds)
    ex = read_star_table(ds / "ex.star")[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
    wd = PickConfig(diameter_A=typed).work_diameter_A
    paths = sorted(ds.glob("mic_*.mrc"))
    img, ps = read_micrograph(paths[0])
    ref = view_reference(net, [(view_image(img, ps, net, wd), ex)], wd)
    rng = np.random.default_rng(0)
    scores: dict[str, list] = {k: [] for k in POSITIONS}
    labels = []
    for path in paths[1:]:
        img, ps = read_micrograph(path)
        v = view_image(img, ps, net, wd)
        t = truth[truth["rlnMicrographName"] == path.name]
        xy = t[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
        if not len(xy):
            continue
        labels.append((t["cryoshotStructureName"].to_numpy() == target).astype(int))
        scores["exact"].append(view_scores(ref, v, xy))
        scores["search"].append(view_search(ref, v, xy)[1])
        r = jitter * typed / ps * np.sqrt(rng.uniform(size=len(xy)))
        a = rng.uniform(0, 2 * np.pi, len(xy))
        scores["jitter"].append(view_scores(ref, v, xy + np.c_[r * np.cos(a), r * np.sin(a)]))
    y = np.concatenate(labels)
    if y.min() == y.max():
        return None
    return {k: float(roc_auc_score(y, np.concatenate(s))) for k, s in scores.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", type=Path, help="Siamese network files besides the shipped one")
    ap.add_argument("--runs", type=Path, default=Path("../runs"))
    ap.add_argument("--jitter", type=float, default=0.15, help="largest displacement, in typed diameters")
    a = ap.parse_args()
    configure_threads()
    nets = {p.name: load_siamese(p)[0].eval() for p in [resolve_siamese_model("default"), *a.models]}
    table: dict[tuple[str, str, str], list[float]] = {}
    for group, ds, target, typed in dev_runs(a.runs):
        res = {name: position_aucs(net, ds, target, typed, a.jitter) for name, net in nets.items()}
        print(f"{group}: {ds.name} ({target}): " + "; ".join(
            f"{n} " + (" ".join(f"{k} {x:.3f}" for k, x in r.items()) if r else "no distractor")
            for n, r in res.items()), flush=True)  # fmt: skip
        for n, r in (kv for kv in res.items() if kv[1]):
            for k, x in r.items():
                table.setdefault((group, n, k), []).append(x)
    print(f"\nmean AUC, target against distractor particles (jitter up to {a.jitter:g} diameters)")
    for (group, n, k), v in sorted(table.items()):
        print(f"  {group:17s} {n:28s} {k:7s} {np.mean(v):.3f} ({len(v)} sets)")


if __name__ == "__main__":
    main()
