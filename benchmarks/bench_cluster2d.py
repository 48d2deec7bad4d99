"""2D classification of particle images of structures no model was trained on.

Datasets (``cryoshot simulate projections`` of the novel bundled structures only, 64 px
at 5 Å/px, per-particle CTF with defocus 1-3 µm, random in-plane rotation, shifts up to
1 px, views jittered by up to 5°, protein bright):

- view sets: one structure, 6 random views, 100 images each;
- mixture sets: three structures x 3 random views each (9 classes), 70 images each.

Each at SNR 0.1 and 0.02. Rows, for every set: the Siamese embedding + k-means with the
true k and with the automatic k (log-kneedle; plain kneedle reported beside it); the
default of ``cryoshot cluster`` (the same, then 2 MRA iterations at 32 px started from the
embedding's clusters), true and automatic k; the classical MRA 2D classification with the
true k; and PCA (50) + k-means on the raw phase-flipped images as a floor. ARI and NMI against the true classes, seconds for the
clustering on this machine (images in memory; reading and plots not counted).

    .venv/bin/python benchmarks/bench_cluster2d.py [--model PATH] [--snrs 0.1,0.02] [--quick]
    .venv/bin/python benchmarks/bench_cluster2d.py --large   # 6,000-image sets, SNR 0.1
    .venv/bin/python benchmarks/bench_cluster2d.py --speed     # embedding images per second
    .venv/bin/python benchmarks/bench_cluster2d.py --fewshot   # 5-way 1/5-shot views (cryoshot classify's rule)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from cryoshot.data.particles2d import prepare_images
from cryoshot.embedding.cluster import agreement, cluster_features, kmeans, kneedle, reduce_dimensions
from cryoshot.embedding.mra import MRAConfig, mra_classify
from cryoshot.embedding.workflow import ClusterConfig, _ctf_params, cluster_images, embed_images
from cryoshot.io.images2d import load_particle_images
from cryoshot.models.siamese2d import load_siamese
from cryoshot.pretrained import resolve_siamese_model
from cryoshot.simulate.datasets import write_projections
from cryoshot.simulate.projections import ProjectionConfig, ProjectionSimulator
from cryoshot.simulate.structures import load_structures
from cryoshot.utils.threads import configure_threads

BENCH_SEED = 5151  # never used in training
VIEW_SETS = ("1bxn", "3cf3", "4v4r", "6qzp")
MIXTURES = (("1u6g", "3gl1", "3ipm"), ("3qm1", "1bxn", "6qzp"))
# --large: sets of a realistic size (6,000 images), where the per-image costs dominate
LARGE_VIEW_SETS = ("1bxn", "6qzp")  # x 12 views x 500 images
LARGE_MIXTURE = ("1u6g", "3gl1", "3ipm", "3qm1")  # x 4 views x 375 images


def make_set(root: Path, structures: tuple[str, ...], views: int, per_class: int, snr: float) -> Path:
    out = root / f"{'-'.join(structures)}_v{views}_snr{snr:g}"
    if (out / "particles.star").exists():
        return out / "particles.star"
    cfg = ProjectionConfig(box_px=64, pixel_size_A=5.0, n_views=views, snr=snr, inplane_rotation=True,
                           seed=BENCH_SEED + len(structures) * 100 + views)  # fmt: skip
    sim = ProjectionSimulator(load_structures(list(structures), 5.0, 64), cfg)
    write_projections(sim, sim.n_classes * per_class, out, progress=False)
    return out / "particles.star"


def run_set(star: Path, net, quick: bool) -> list[dict]:
    p = load_particle_images(star, label_column="rlnClassNumber", progress=False)
    k_true = len(np.unique(p.labels))
    ctf = _ctf_params(p, "auto")
    rows = []
    t0 = time.perf_counter()
    prepared = prepare_images(p.images, p.pixel_size_A, net.cfg.box_px, net.cfg.pixel_size_A, ctf)
    z = embed_images(net, prepared, progress=False)
    feats = reduce_dimensions(z, 50)
    t_embed = time.perf_counter() - t0
    t1 = time.perf_counter()
    lab, _ = kmeans(feats, k_true)
    rows.append({"method": "siamese, true k", "k": k_true, "seconds": t_embed + time.perf_counter() - t1,
                 **agreement(p.labels, lab)})  # fmt: skip
    t1 = time.perf_counter()
    cl = cluster_features(feats, None)
    sec = t_embed + time.perf_counter() - t1
    k_plain = kneedle(cl.ks, cl.inertia, "kneedle")
    rows.append({"method": "siamese, auto k", "k": cl.k, "k_plain_kneedle": k_plain, "seconds": sec,
                 **agreement(p.labels, cl.labels)})  # fmt: skip
    for k, merge, name in ((k_true, True, "siamese + refine, true k"), (None, True, "siamese + refine, auto k"),
                           (None, False, "siamese + refine, auto k (elbow only)")):  # fmt: skip
        t1 = time.perf_counter()  # the whole library call of `cryoshot cluster` (images already in memory)
        res, _ = cluster_images(p, ClusterConfig(k=k, merge_k=merge), net=net, progress=False)
        rows.append({"method": name, "k": res.k, "seconds": time.perf_counter() - t1,
                     **agreement(p.labels, res.labels)})  # fmt: skip
    raw = prepare_images(p.images, p.pixel_size_A, p.box, p.pixel_size_A, ctf)
    t1 = time.perf_counter()
    lab, _ = kmeans(reduce_dimensions(raw.reshape(len(raw), -1), 50), k_true)
    rows.append({"method": "PCA + k-means (raw)", "k": k_true, "seconds": time.perf_counter() - t1,
                 **agreement(p.labels, lab)})  # fmt: skip
    if not quick:
        t1 = time.perf_counter()
        res = mra_classify(raw, k_true, MRAConfig(seed=0), progress=False)
        rows.append({"method": "MRA, true k", "k": k_true, "seconds": time.perf_counter() - t1,
                     "iterations": res.iterations, **agreement(p.labels, res.labels)})  # fmt: skip
    for r in rows:
        r.update(set=star.parent.name, k_true=k_true, n=len(p))
    return rows


def fewshot(net, root: Path, snrs: list[float], episodes: int = 300) -> None:
    """5-way K-shot episodes over the view classes of the 4 view sets (24 classes), as ``classify`` scores them."""
    import torch

    from cryoshot.fewshot.images2d import SiamesePrototypes

    for snr in snrs:
        zs, ys = [], []
        for j, s in enumerate(VIEW_SETS):
            p = load_particle_images(make_set(root, (s,), 6, 100, snr), label_column="rlnClassNumber", progress=False)
            x = prepare_images(p.images, p.pixel_size_A, net.cfg.box_px, net.cfg.pixel_size_A, _ctf_params(p, "auto"))
            zs.append(embed_images(net, x, progress=False))
            ys.append(j * 100 + p.labels.astype(int))
        z, y = torch.from_numpy(np.concatenate(zs)), np.concatenate(ys)
        classes = np.unique(y)
        for shot in (1, 5):
            rng = np.random.default_rng([BENCH_SEED, shot])
            accs = []
            for _ in range(episodes):
                way = rng.choice(classes, 5, replace=False)
                sup, qry, tq = [], [], []
                for c, cls in enumerate(way):
                    idx = rng.permutation(np.nonzero(y == cls)[0])
                    sup.append(idx[:shot])
                    qry.append(idx[shot : shot + 15])
                    tq += [c] * 15
                ts = torch.repeat_interleave(torch.arange(5), shot)
                d = SiamesePrototypes().distances(z[np.concatenate(sup)], ts, z[np.concatenate(qry)], 5)
                accs.append(float((d.argmin(1).numpy() == np.array(tq)).mean()))
            ci = 1.96 * np.std(accs) / np.sqrt(len(accs))
            print(f"2D few-shot, views of novel structures, SNR {snr:g}: 5-way {shot}-shot accuracy "
                  f"{np.mean(accs):.3f} ± {ci:.3f} ({episodes} episodes, 15 queries per class)")  # fmt: skip


def speed(net, n: int = 8192) -> None:
    from cryoshot.embedding.workflow import EMBED_BATCH

    rng = np.random.default_rng(0)
    imgs = rng.normal(size=(n, 64, 64)).astype(np.float32)
    embed_images(net, imgs[:1024], progress=False)  # warm-up
    t0 = time.perf_counter()
    prepared = prepare_images(imgs, 5.0, 64, 5.0)
    t1 = time.perf_counter()
    embed_images(net, prepared, progress=False)
    t2 = time.perf_counter()
    print(f"embedding {n} images of 64^2: preparation {n / (t1 - t0):.0f} img/s, network {n / (t2 - t1):.0f} img/s, "
          f"together {n / (t2 - t0):.0f} img/s (batches of {EMBED_BATCH})")  # fmt: skip
    for chunk in (64, 1024):  # the same network in other batch sizes, same run
        t = time.perf_counter()
        embed_images(net, prepared, chunk=chunk, progress=False)
        print(f"  network in batches of {chunk}: {n / (time.perf_counter() - t):.0f} img/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--snrs", default="0.1,0.02")
    ap.add_argument("--root", type=Path, default=Path("runs/bench_cluster2d"))
    ap.add_argument("--quick", action="store_true", help="skip MRA")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--fewshot", action="store_true", help="5-way 1/5-shot classification of views instead")
    ap.add_argument("--large", action="store_true", help="sets of 6,000 images (SNR 0.1 unless --snrs) instead")
    args = ap.parse_args()
    configure_threads()
    args.root.mkdir(parents=True, exist_ok=True)
    net, ck = load_siamese(resolve_siamese_model(args.model))
    print(f"model {args.model}: step {ck.get('best_episode')}, backbone {net.cfg.backbone}")
    if args.speed:
        speed(net)
        return
    if args.fewshot:
        fewshot(net, args.root, [float(v) for v in args.snrs.split(",")])
        return
    rows = []
    snrs = "0.1" if args.large and args.snrs == ap.get_default("snrs") else args.snrs
    for snr in (float(s) for s in snrs.split(",")):
        if args.large:
            stars = [(make_set(args.root, (s,), 12, 500, snr), "view") for s in LARGE_VIEW_SETS]
            stars += [(make_set(args.root, LARGE_MIXTURE, 4, 375, snr), "mixture")]
        else:
            stars = [(make_set(args.root, (s,), 6, 100, snr), "view") for s in VIEW_SETS]
            stars += [(make_set(args.root, m, 3, 70, snr), "mixture") for m in MIXTURES]
        for star, kind in stars:
            for r in run_set(star, net, args.quick):
                r["snr"], r["kind"] = snr, kind
                rows.append(r)
                extra = f", plain kneedle k {r['k_plain_kneedle']}" if "k_plain_kneedle" in r else ""
                print(f"{r['set']:<28} {r['method']:<22} k {r['k']:>2} (true {r['k_true']}{extra}) "
                      f"ARI {r['ari']:.3f} NMI {r['nmi']:.3f} {r['seconds']:7.2f} s", flush=True)  # fmt: skip
    print("\nsummary (mean over sets)")
    for snr in sorted({r["snr"] for r in rows}, reverse=True):
        for kind in ("view", "mixture"):
            sel = [r for r in rows if r["snr"] == snr and r["kind"] == kind]
            for m in dict.fromkeys(r["method"] for r in sel):
                rs = [r for r in sel if r["method"] == m]
                k_ok = np.mean([abs(r["k"] - r["k_true"]) <= 1 for r in rs])
                print(f"SNR {snr:<5g} {kind:<8} {m:<22} ARI {np.mean([r['ari'] for r in rs]):.3f} "
                      f"NMI {np.mean([r['nmi'] for r in rs]):.3f} seconds {np.mean([r['seconds'] for r in rs]):7.2f}"
                      + (f"  k within ±1: {k_ok:.0%}" if "auto" in m else ""))  # fmt: skip


if __name__ == "__main__":
    main()
