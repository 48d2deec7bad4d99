"""``cryoshot demo``: few-shot classification of structures the shipped model never saw.

1. Simulates 40 subtomograms of each of the 8 held-out bundled structures at
   SNR 0.05 (40^3 at 10 Å, CTF, missing wedge, dose weighting).
2. Embeds them once with the shipped model and runs 100 seeded 5-way episodes
   at 5-shot and 1-shot for ProtoNet-CE (d + d*), ProtoNet3D (d) and the
   fine-tune baseline, printing accuracy ± 95% CI.
3. Classifies the whole set from 5 labelled examples per structure and draws a
   confusion matrix with central slices of the mean of each predicted set.
4. Writes support/query STAR files so the same run can be repeated with
   ``cryoshot classify``.
5. Picks particles: three micrographs of a novel structure (1bxn) among two other
   novel structures, an ice blob and a carbon edge; 15 exemplars on the first; the
   same library call as ``cryoshot pick``; F1 against the truth and a PNG of the picks.
6. 2D classification: projections of a novel structure (3cf3) in 6 views with random
   in-plane rotations; the same library call as ``cryoshot cluster`` (shipped Siamese
   embedding, automatic k); ARI against the true views, class averages and a t-SNE.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from cryoshot.evaluate.fewshot import evaluate_episodes
from cryoshot.fewshot.methods import make_method
from cryoshot.io.star import read_star_table
from cryoshot.models.embedding import embed_volumes
from cryoshot.pretrained import resolve_model
from cryoshot.simulate.splits import NOVEL_STRUCTURES
from cryoshot.simulate.structures import load_structures
from cryoshot.simulate.subtomograms import SubtomogramConfig, SubtomogramSimulator
from cryoshot.simulate.workflow import simulate_subtomograms
from cryoshot.utils.files import atomic_dir, atomic_file
from cryoshot.utils.threads import configure_threads

DEMO_SNR = 0.05
DEMO_SEED = 2026  # not a training seed; the structures are unseen anyway


def _figure(path, cm, names, means, acc):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    fig = plt.figure(figsize=(12, 5.2))
    ax = fig.add_axes([0.04, 0.1, 0.36, 0.8])
    ax.imshow(cm, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")  # fmt: skip
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"ProtoNet-CE, 5 labels per class: accuracy {acc:.2f}", fontsize=9)
    for j, (name, m) in enumerate(zip(names, means, strict=True)):
        for row in range(2):
            a = fig.add_axes([0.44 + 0.069 * j, 0.52 - 0.42 * row, 0.065, 0.36])
            if m is not None:
                c = m.shape[0] // 2
                a.imshow(m[c] if row == 0 else m[:, c, :], cmap="gray", origin="lower")
            a.set_xticks([])
            a.set_yticks([])
            if row == 0:
                a.set_title(name, fontsize=7)
            if j == 0:
                a.set_ylabel("XY" if row == 0 else "XZ", fontsize=7)
    fig.text(0.7, 0.95, "mean of each predicted set (central slices)", ha="center", fontsize=9)
    with atomic_file(path, force=True) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)


def run_demo(outdir: str | os.PathLike, *, force: bool = False, per_class: int = 40, episodes: int = 100) -> dict:
    """Run the demo into ``outdir``; return the results table as a dict (also printed)."""
    configure_threads()
    outdir = Path(outdir)
    t0 = time.perf_counter()
    model_path = resolve_model("default")
    from cryoshot.models.loading import load_model

    model, ck = load_model(model_path)
    with atomic_dir(outdir, force=force) as tmp:
        cfg = SubtomogramConfig(snr=DEMO_SNR, seed=DEMO_SEED)
        structs = load_structures(list(NOVEL_STRUCTURES), cfg.pixel_size_A, cfg.box_px)
        sim = SubtomogramSimulator(structs, cfg)
        n = per_class * len(structs)
        # the same library call as `cryoshot simulate subtomograms`
        simulate_subtomograms(list(NOVEL_STRUCTURES), tmp / "subtomograms", cfg, per_class, progress=False)
        df = read_star_table(tmp / "subtomograms" / "particles.star")
        b = sim.simulate(range(n), with_clean=False)
        labels = b.labels
        # fp32: the same figures on every CPU (bf16 autocast is taken only where the CPU has it)
        z = embed_volumes(model, b.volumes, cfg.pixel_size_A, progress=False, precision="fp32")
        rows = []
        for shot in (5, 1):
            for name in ("protonet-ce", "protonet", "finetune"):
                m = make_method(name, model, seed=0)
                r = evaluate_episodes(m, z, labels, name=name, way=5, shot=shot, query=15, episodes=episodes,
                                      seed=0, progress=False)  # fmt: skip
                rows.append(r)
        # classify everything from 5 labels per structure
        rng = np.random.default_rng(0)
        sup_idx = np.concatenate(
            [rng.choice(np.nonzero(labels == k)[0], 5, replace=False) for k in range(len(structs))]
        )
        qry_idx = np.setdiff1d(np.arange(n), sup_idx)
        m = make_method("protonet-ce", model)
        with torch.no_grad():
            ts = torch.as_tensor(labels[sup_idx])
            zq = z[qry_idx]
            chunk = 15 * len(structs)
            pred = torch.cat([m.distances(z[sup_idx], ts, zq[s : s + chunk], len(structs)).argmin(1)
                              for s in range(0, len(zq), chunk)]).numpy()  # fmt: skip
        truth = labels[qry_idx]
        k = len(structs)
        cm = np.zeros((k, k), int)
        np.add.at(cm, (truth, pred), 1)
        means = [b.volumes[qry_idx[pred == j]].mean(0) if np.any(pred == j) else None for j in range(k)]
        names = [s.name for s in structs]
        acc_all = float((pred == truth).mean())
        _figure(tmp / "demo.png", cm, names, means, acc_all)
        sub = tmp / "subtomograms"
        from cryoshot.io.star import write_star

        write_star(sub / "support.star", df.iloc[sup_idx].reset_index(drop=True))
        write_star(sub / "query.star", df.iloc[qry_idx].reset_index(drop=True))
        pick_res = _pick_demo(tmp)
        cluster_res = _cluster_demo(tmp)
    dt = time.perf_counter() - t0
    print(f"\ncryoshot demo: {len(structs)} structures the model never saw ({', '.join(names)}),")
    print(f"{per_class} subtomograms each, 40^3 at 10 Å, SNR {DEMO_SNR}; model {model_path.name} "
          f"(trained on {ck['config']['pool']['n_procedural']} procedural + 8 bundled structures)\n")  # fmt: skip
    print(f"{'method':<14} {'5-way 5-shot':>18} {'5-way 1-shot':>18}")
    by = {(r["method"], r["shot"]): r for r in rows}
    for name, label in (
        ("protonet-ce", "ProtoNet-CE"),
        ("protonet", "ProtoNet3D"),
        ("finetune", "fine-tune"),
    ):
        cells = [f"{by[(name, s)]['accuracy_mean']:.3f} ± {by[(name, s)]['accuracy_ci95']:.3f}" for s in (5, 1)]
        print(f"{label:<14} {cells[0]:>18} {cells[1]:>18}")
    print(f"\n({episodes} seeded episodes each, 15 queries per class, mean ± 95% CI)")
    print(f"8-way classification of all {len(qry_idx)} remaining subtomograms from 5 labels each: {acc_all:.3f}")
    print(f"figure: {outdir}/demo.png (confusion matrix, central slices of the predicted-set means)")
    print(f"try it yourself: cryoshot classify --support {outdir}/subtomograms/support.star "
          f"--query {outdir}/subtomograms/query.star -o predictions.star")  # fmt: skip
    print(f"\npicking {PICK_TARGET} among {', '.join(PICK_DISTRACTORS)} in {PICK_MICROGRAPHS} micrographs from 15 exemplars: "
          f"precision {pick_res['precision']:.3f}, recall {pick_res['recall']:.3f}, F1 {pick_res['f1']:.3f}")  # fmt: skip
    print(f"picks: {outdir}/picking/picks.star, drawn in {outdir}/picking_preview/mic_0001_picks.png")
    print(f"\n2D classification of {CLUSTER_STRUCTURE} projections ({CLUSTER_VIEWS} views, {len(cluster_res.labels)} images, "
          f"SNR {CLUSTER_SNR:g}): automatic k = {cluster_res.k}, ARI {cluster_res.ari:.3f} against the true views")  # fmt: skip
    print(f"class averages and t-SNE: {outdir}/cluster/class_averages.png, {outdir}/cluster/tsne_labels.png")
    print(f"done in {dt:.1f} s")
    return {"rows": rows, "accuracy_8way": acc_all, "picking": pick_res, "cluster": cluster_res.summary(),
            "seconds": dt}  # fmt: skip


PICK_TARGET, PICK_DISTRACTORS, PICK_MICROGRAPHS = "1bxn", ("3gl1", "3qm1"), 3


def _pick_demo(tmp: Path) -> dict:
    """Simulate micrographs, pick the target from 15 exemplars, score the picks against the truth."""
    from cryoshot.evaluate.picks import evaluate_picks
    from cryoshot.io.star import write_star
    from cryoshot.picking.workflow import PickConfig, pick
    from cryoshot.simulate.micrographs import MicrographConfig
    from cryoshot.simulate.workflow import simulate_micrographs

    data = tmp / "picking_data"
    cfg = MicrographConfig(size_px=1024, pixel_size_A=4.0, particle_box_px=64, n_particles=120, snr=0.05,
                           n_ice_blobs=1, carbon_edge=True, invert=True, seed=DEMO_SEED)  # fmt: skip
    simulate_micrographs([PICK_TARGET, *PICK_DISTRACTORS], data, cfg, PICK_MICROGRAPHS, progress=False)
    truth = read_star_table(data / "coordinates.star")
    ref = truth[(truth["rlnMicrographName"] == "mic_0000.mrc") & (truth["cryoshotStructureName"] == PICK_TARGET)]
    ex = ref.sample(15, random_state=0)[["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"]]
    write_star(data / "exemplars.star", ex)
    mics = [str(p) for p in sorted(data.glob("mic_*.mrc"))]
    from cryoshot.picking.stage1 import Stage1Config

    # 50 stage-1 steps instead of the default 150 keep the demo short (see the ablation in docs/benchmarks.md);
    # no time budget, so a loaded machine gives the same picks, only later (the README's transcript is tested)
    cfg_pick = PickConfig(diameter_A=160.0, seed=0, stage1=Stage1Config(steps=50))
    pick(mics, data / "exemplars.star", tmp / "picking", cfg_pick, progress=False,
         preview=tmp / "picking_preview", truth=data / "coordinates.star", log=lambda s: None)  # fmt: skip
    return evaluate_picks(data / "coordinates.star", tmp / "picking" / "picks.star", 160.0,
                          class_column="cryoshotStructureName", target=PICK_TARGET)  # fmt: skip


CLUSTER_STRUCTURE, CLUSTER_VIEWS, CLUSTER_SNR = "3cf3", 6, 0.1


def _cluster_demo(tmp: Path):
    """Simulate projections of a novel structure in 6 views, cluster them as ``cryoshot cluster`` does."""
    from cryoshot.embedding.workflow import ClusterConfig, cluster_particles
    from cryoshot.simulate.datasets import write_projections
    from cryoshot.simulate.projections import ProjectionConfig, ProjectionSimulator

    cfg = ProjectionConfig(box_px=64, pixel_size_A=5.0, n_views=CLUSTER_VIEWS, snr=CLUSTER_SNR, inplane_rotation=True,
                           seed=DEMO_SEED)  # fmt: skip
    sim = ProjectionSimulator(load_structures([CLUSTER_STRUCTURE], 5.0, 64), cfg)
    write_projections(sim, CLUSTER_VIEWS * 50, tmp / "projections", progress=False)
    return cluster_particles(tmp / "projections" / "particles.star", tmp / "cluster", ClusterConfig(seed=0),
                             label_column="rlnClassNumber", progress=False)  # fmt: skip
