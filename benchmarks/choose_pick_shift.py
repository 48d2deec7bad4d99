"""Re-centring picking candidates where the Siamese network sees the exemplars' particle best.

Many target particles are lost before any threshold: the MAE's cosine peaks (on a grid a sixth
of a diameter wide) sit off the particle's centre, the polar view network scores an off-centre
box lower, and a peak further than about a fifth of a diameter from the centre fails the IoU 0.5
rule. This script embeds every candidate of the dev sets at a 5 x 5 grid of shifts (0, ±2, ±4
view pixels of 5 Å) once, then compares, on the same candidates: the view score where the peak
is (as shipped until 2026-11-29); the best view score over a neighbourhood, with the candidate
kept in place ("score") or moved there ("move": the template's NCC is read at the new place and
candidates that came within 0.7 diameters of a better one are dropped); and a hill-climb.
Mean F1 (gmm3 cut) and the share of target particles that some candidate matches.

Dev sets only (structures the benchmark never uses): the procedural sets of
``choose_pick_procedural.py`` and the training-map sets of ``choose_pick_cut.py``, whose cached
candidates (cut.pkl, the MAE's peaks with each opinion read there) must exist.

    cd benchmarks && ../.venv/bin/python choose_pick_shift.py [--runs ../runs]
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
from bench_picking import typed_diameter_A
from choose_pick_cut import cached_sets

from cryoshot.picking.matching import MatchCounts, count_matches, match_picks
from cryoshot.picking.merit import fuse_scores
from cryoshot.picking.micrograph import bin_micrograph, read_micrograph
from cryoshot.picking.scan import greedy_nms
from cryoshot.picking.template import ncc_at, ncc_map
from cryoshot.picking.threshold import auto_threshold
from cryoshot.picking.views import VIEW_TOP, crops_at, embed_crops, view_image
from cryoshot.picking.workflow import PickConfig, _load_picker
from cryoshot.utils.threads import configure_threads

GRID = np.array([(dx, dy) for dy in (-4, -2, 0, 2, 4) for dx in (-4, -2, 0, 2, 4)], float)  # view pixels
CENTRE = {(0.0, 0.0)}
PLUS = {(0.0, 0.0), (2.0, 0.0), (-2.0, 0.0), (0.0, 2.0), (0.0, -2.0)}  # the shipped search (VIEW_STEP_PX = 2)
SQUARE3 = {(x, y) for x in (-2.0, 0.0, 2.0) for y in (-2.0, 0.0, 2.0)}
SQUARE5 = {(float(x), float(y)) for x, y in GRID}


def dev_sets(runs: Path) -> list[tuple[str, Path]]:
    """(group, dataset folder): procedural with distractors, procedural alone, training maps."""
    out = [("alone" if p.parent.parent.name == "alone" else "distractors", p.parent)
           for p in sorted((runs / "choose_pick_procedural").glob("**/cut.pkl"))]  # fmt: skip
    return out + [("training maps", ds) for ds, _ in cached_sets(runs / "choose_flatten")]


def cached_dev_data(runs: Path, cache_name: str, collect) -> list[tuple[str, dict, object]]:
    """(group, cached candidates (cut.pkl), what ``collect(ds, candidates)`` returns) for each dev set;
    ``collect``'s result is kept in ``ds / cache_name`` and read from there on later runs."""
    out = []
    for group, ds in dev_sets(runs):
        d = pickle.loads((ds / "cut.pkl").read_bytes())
        cache = ds / cache_name
        if not cache.exists():
            cache.write_bytes(pickle.dumps(collect(ds, d)))
            print(f"{ds.name}: collected", flush=True)
        out.append((group, d, pickle.loads(cache.read_bytes())))
    return out


def collect(ds: Path, d: dict) -> dict:
    """View scores (top-3 mean) and template NCC of every cached query candidate (``d``) at each shift of GRID."""
    net, _, template, views = _load_picker(str(ds / "cut_stage1" / "picker.pt"))
    cfg = PickConfig(diameter_A=typed_diameter_A(d["key"].split("_")[0]))
    qs = []
    for m, q in zip(sorted(ds.glob("mic_*.mrc"))[1:], d["queries"], strict=True):
        img, ps = read_micrograph(m)
        b = bin_micrograph(img, ps, cfg.diameter_A, net.config.particle_px)
        v = view_image(img, ps, views.net, cfg.diameter_A, views.view_pixel_A)
        n = len(q["xy"])
        pos = (q["xy"][:, None, :] + GRID[None] * v.factor).reshape(-1, 2)  # input pixels
        e = embed_crops(views.net, crops_at(v, pos, views.net.cfg.box_px), views.polarity).reshape(n, len(GRID), -1)
        cos = np.einsum("nse,me->nsm", e.astype(np.float64), views.features.astype(np.float64))
        qs.append({"view": np.sort(cos, -1)[..., -VIEW_TOP:].mean(-1),
                   "ncc": ncc_at(ncc_map(b.image, template), b.to_binned(pos)).reshape(n, len(GRID)),
                   "pos": pos.reshape(n, len(GRID), 2)})  # fmt: skip
    return {"q": qs}


def best_in(view: np.ndarray, allowed: set) -> np.ndarray:
    """(N,) index into GRID of each candidate's best view score among the ``allowed`` shifts (ties: first)."""
    idx = np.array([i for i, p in enumerate(map(tuple, GRID)) if p in allowed])
    return idx[np.argmax(view[:, idx], axis=1)]


def climb(view: np.ndarray, rounds: int) -> tuple[np.ndarray, float]:
    """Hill-climb from the centre over the plus-shaped neighbourhood: GRID indices, embeddings per candidate."""
    lut = {tuple(p): i for i, p in enumerate(GRID)}
    best, evals = np.zeros(len(view), int), []
    for c in range(len(view)):
        cur, seen = (0.0, 0.0), {(0.0, 0.0)}
        for _ in range(rounds):
            nb = [p for p in ((cur[0] + 2, cur[1]), (cur[0] - 2, cur[1]), (cur[0], cur[1] + 2), (cur[0], cur[1] - 2))
                  if p in lut]  # fmt: skip
            seen |= set(nb)
            nxt = max([cur, *nb], key=lambda p: view[c, lut[p]])
            if nxt == cur:
                break
            cur = nxt
        best[c] = lut[cur]
        evals.append(len(seen))
    return best, float(np.mean(evals))


def score(d: dict, shifts: dict, choose, move: bool) -> tuple[float, float]:
    """F1 over the queries (gmm3 cut) and the share of target particles any candidate matches."""
    tot, hit, n = MatchCounts(0, 0, 0), 0, 0
    for q, s in zip(d["queries"], shifts["q"], strict=True):
        best = choose(s["view"])
        r = np.arange(len(best))
        xy, ncc = (s["pos"][r, best], s["ncc"][r, best]) if move else (q["xy"], q["ncc"])
        m = fuse_scores(q["cos"], [(ncc, 0.4), (s["view"][r, best], 0.5)])
        o = np.argsort(-m, kind="stable")
        xy, m = xy[o], m[o]
        if move:
            k = greedy_nms(xy, 0.7 * d["side"])
            xy, m = xy[k], m[k]
        hit += int(match_picks(xy, q["truth"], d["side"], m).sum())
        n += len(q["truth"])
        keep = m >= auto_threshold(m, "gmm3", fisher=False)
        tot = tot + count_matches(xy[keep], q["truth"], d["side"], m[keep])
    return tot.f1, hit / max(n, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("../runs"))
    a = ap.parse_args()
    configure_threads()
    data = cached_dev_data(a.runs, "shift_emb.pkl", collect)
    variants = [("view score where the peak is (until 2026-11-29)", CENTRE, False),
                ("best of +-2 px along x, y (5 embeddings): score only", PLUS, False),
                ("best of +-2 px along x, y (5 embeddings): moved there (shipped)", PLUS, True),
                ("best of 3 x 3 (9): score only", SQUARE3, False), ("best of 3 x 3 (9): moved", SQUARE3, True),
                ("best of 5 x 5 (25, to +-4 px): score only", SQUARE5, False),
                ("best of 5 x 5 (25): moved", SQUARE5, True)]  # fmt: skip
    groups = list(dict.fromkeys(g for g, _, _ in data))
    print(f"\nmean F1 (gmm3) / share of target particles some candidate matches; groups: {', '.join(groups)}")

    def report(name, choose, move):
        res = {g: [score(d, s, choose, move) for gg, d, s in data if gg == g] for g in groups}
        allf = np.mean([f for v in res.values() for f, _ in v])
        cells = "  ".join(
            f"{g}: {np.mean([f for f, _ in v]):.3f} / {np.mean([h for _, h in v]):.3f}" for g, v in res.items()
        )
        print(f"{name:66s} {cells}  all {len(data)}: {allf:.3f}", flush=True)

    for name, allowed, move in variants:
        report(name, lambda v, allowed=allowed: best_in(v, allowed), move)
    for rounds in (2, 3):
        evals = np.mean([climb(s["view"], rounds)[1] for _, _, sh in data for s in sh["q"]])
        report(
            f"hill-climb, {rounds} rounds of +-2 px (about {evals:.1f} embeddings): moved",
            lambda v, rounds=rounds: climb(v, rounds)[0],
            True,
        )


if __name__ == "__main__":
    main()
