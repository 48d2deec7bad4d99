"""Does the Siamese 2D network's opinion rank the picker's candidates better? Decided on training structures.

The candidates and their MAE cosine and template NCC are those of ``choose_pick_rerank.py``
(run it first; same datasets of training maps, seed 9191, with ``--more``: 10 datasets). Each
candidate is also embedded by the shipped Siamese network (``picking.views``, as ``cryoshot
pick`` does it) and scored by its mean cosine to its 3 most similar exemplars (or the best
one, or the mean over all). Every mix of the three opinions is then cut with the gmm threshold
and with the best threshold per micrograph (oracle); F1 over the 4 query micrographs.

    cd benchmarks && ../.venv/bin/python choose_pick_views.py [--root DIR]
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
from bench_picking import typed_diameter_A
from choose_pick_rerank import MORE_SETS, f1_of
from choose_pick_threshold import DEV_SETS

from cryoshot.io.star import read_star_table
from cryoshot.models.siamese2d import load_siamese
from cryoshot.picking.merit import fuse_scores
from cryoshot.picking.micrograph import read_micrograph
from cryoshot.picking.threshold import auto_threshold
from cryoshot.picking.views import view_image, view_reference, view_scores
from cryoshot.pretrained import resolve_siamese_model
from cryoshot.utils.threads import configure_threads

# (cosine, template NCC, view) weights; the first is the previous default
WEIGHTS = [(0.4, 0.6, 0.0), (0.0, 0.0, 1.0), (0.3, 0.3, 0.4), (0.2, 0.4, 0.4), (0.2, 0.3, 0.5), (0.1, 0.4, 0.5),
           (0.0, 0.5, 0.5), (0.2, 0.2, 0.6), (0.1, 0.3, 0.6), (0.0, 0.4, 0.6), (0.1, 0.2, 0.7)]  # fmt: skip


def add_views(net, root: Path, key: str, d: dict) -> None:
    """Each query candidate's view opinions (top-3 mean, best, mean), in place."""
    ds = root / key
    mics = sorted(ds.glob("mic_*.mrc"))
    diameter = typed_diameter_A(key.split("_")[0])
    ex = read_star_table(ds / "exemplars25.star").iloc[:15]
    img, ps = read_micrograph(mics[0])
    ref = view_reference(net, [(view_image(img, ps, net), ex[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float))],
                         diameter)  # fmt: skip
    d["polarity"] = ref.polarity
    for q, m in zip(d["queries"], mics[1:], strict=True):
        img, ps = read_micrograph(m)
        v = view_image(img, ps, net)
        q["view3"], q["view1"], q["view_all"] = (view_scores(ref, v, q["xy"], top) for top in (3, 1, 15))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("../runs/choose_pick_threshold"))
    a = ap.parse_args()
    configure_threads()
    net, _ = load_siamese(resolve_siamese_model("default"))
    data = {}
    for target in {**DEV_SETS, **MORE_SETS}:
        for snr in (0.02, 0.01):
            key = f"{target}_snr{snr:g}"
            cache = a.root / f"{key}_rerank.pkl"
            if not cache.exists():
                raise SystemExit(f"{cache} is missing: run choose_pick_rerank.py --more first")
            d = pickle.loads(cache.read_bytes())
            views_cache = a.root / f"{key}_views.pkl"
            if views_cache.exists():
                d = pickle.loads(views_cache.read_bytes())
            else:
                add_views(net, a.root, key, d)
                views_cache.write_bytes(pickle.dumps(d))
            data[f"{target} {snr:g}"] = d
            print(f"{key}: polarity {d['polarity']:+.0f}", flush=True)

    def table(name, fn):
        res = np.array([f1_of(d, [fn(q) for q in d["queries"]],
                              lambda s: auto_threshold(s, "gmm", fisher=False) if len(s) else np.inf)
                        for d in data.values()])  # fmt: skip
        print(f"{name:34s} " + " ".join(f"{x:.3f}/{y:.3f}" for x, y in res) +
              f"   {res[:, 0].mean():.3f} / {res[:, 1].mean():.3f}", flush=True)  # fmt: skip

    print(f"{'figure of merit':34s} " + " ".join(f"{n:>11s}" for n in data) + "   mean (gmm / oracle)")
    for top in ("view3", "view1", "view_all"):
        table(f"{top} alone", lambda q, top=top: fuse_scores(q[top] * 0, [(q[top], 1.0)]))
    for wc, wn, wv in WEIGHTS:
        table(
            f"cos {wc} ncc {wn} view3 {wv}",
            lambda q, wn=wn, wv=wv: fuse_scores(q["s"], [(q["ncc"], wn), (q["view3"], wv)]),
        )


if __name__ == "__main__":
    main()
