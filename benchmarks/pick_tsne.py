"""The picker's feature space under each stage-1 condition (cryoMAE paper, Fig. 7), in a picture and in numbers.

On one benchmark dataset's reference micrograph, stage 1 runs from the shipped pre-trained MAE
(15 exemplars, 150 steps, seed 0) under the paper's three conditions: (a) on the exemplar
windows alone, (b) with unlabelled windows but no self-cross similarity loss (beta = 0),
(c) with the PU-adjusted loss (the default); and, for reference, no stage 1 at all. Then
windows of the reference micrograph are embedded as the scan sees them (centred on the
micrograph's background mean, unit norm): the 15 exemplars, the other target particles, the
distractor particles and 360 background windows (at least 0.6 diameters from any particle).

Numbers: ROC AUC of each window's highest cosine to the exemplars (the scan's score), other
target particles against background windows and against distractor particles. Picture: a t-SNE
of the same windows per condition. The benchmark's structures are only looked at here; nothing
is chosen from it.

    .venv/bin/python benchmarks/pick_tsne.py [--dataset runs/bench_picking/1bxn_snr0.02] [--out docs/figures/...]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from bench_picking import DIAMETER_A  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from cryoshot.io.star import read_star_table  # noqa: E402
from cryoshot.models.mae2d import load_mae  # noqa: E402
from cryoshot.picking.micrograph import bin_micrograph, read_micrograph  # noqa: E402
from cryoshot.picking.scan import background_mean, encode_windows, windows_at  # noqa: E402
from cryoshot.picking.stage1 import LossConfig, Stage1Config, fine_tune  # noqa: E402
from cryoshot.picking.workflow import PickConfig, _features, estimate_pi  # noqa: E402
from cryoshot.pretrained import resolve_picker_model  # noqa: E402
from cryoshot.utils.threads import configure_threads  # noqa: E402

N_EXEMPLARS = 15
N_BACKGROUND = 360  # as the paper's Fig. 7
NO_BUDGET = None  # the steps, not the clock, end stage 1 (the default since 2026-11-30)
CONDITIONS = {
    "no stage 1 (pre-trained only)": Stage1Config(steps=0),
    "(a) exemplars only": Stage1Config(n_unlabeled=0, n_shifted=0, time_budget_s=NO_BUDGET),
    "(b) + unlabelled, no SCS loss": Stage1Config(loss=LossConfig(beta=0.0), time_budget_s=NO_BUDGET),
    "(c) + PU-adjusted SCS (default)": Stage1Config(time_budget_s=NO_BUDGET),
}
GROUPS = ("exemplar", "other target", "distractor", "background")
COLOURS = {"exemplar": "tab:red", "other target": "tab:orange", "distractor": "tab:blue", "background": "0.6"}


def reference_windows(
    ds: Path, target: str, ref, particle_px: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list]:
    """Binned coordinates (N, 2) and group of each window on the reference, and the exemplars as (0, x, y)."""
    truth = read_star_table(ds / "coordinates.star")
    truth = truth[truth["rlnMicrographName"] == "mic_0000.mrc"]
    ex = read_star_table(ds / "exemplars25.star").iloc[:N_EXEMPLARS][["rlnCoordinateX", "rlnCoordinateY"]]
    ex_b = ref.to_binned(ex.to_numpy(float))
    is_t = (truth["cryoshotStructureName"] == target).to_numpy()
    allp = ref.to_binned(truth[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float))
    exemplar = np.array([np.min(np.hypot(*(ex_b - p).T)) < 0.5 for p in allp])
    rng = np.random.default_rng(seed)
    h, w = ref.image.shape
    far = 0.6 * particle_px
    bg = []
    while len(bg) < N_BACKGROUND:
        p = rng.uniform([far, far], [w - far, h - far])
        if np.min(np.hypot(*(allp - p).T)) >= far:
            bg.append(p)
    xy = np.concatenate([ex_b, allp[is_t & ~exemplar], allp[~is_t], np.array(bg)])
    groups = np.array(["exemplar"] * len(ex_b) + ["other target"] * int((is_t & ~exemplar).sum())
                      + ["distractor"] * int((~is_t).sum()) + ["background"] * N_BACKGROUND)  # fmt: skip
    return xy, groups, [(0, float(x), float(y)) for x, y in ex_b]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=Path("runs/bench_picking/1bxn_snr0.02"))
    ap.add_argument("--out", type=Path, default=None, help="PNG (default docs/figures/pick_tsne_<dataset>.png)")
    a = ap.parse_args()
    configure_threads()
    target = a.dataset.name.split("_")[0]
    out = a.out or Path("docs/figures") / f"pick_tsne_{a.dataset.name}.png"
    base, _ = load_mae(resolve_picker_model("default"))
    cfg = PickConfig(diameter_A=DIAMETER_A[target])
    img, ps = read_micrograph(a.dataset / "mic_0000.mrc")
    ref = bin_micrograph(img, ps, cfg.diameter_A, base.config.particle_px)
    xy, groups, ex_xy = reference_windows(a.dataset, target, ref, base.config.particle_px)
    win = windows_at(ref.image, xy, base.config.window_px)
    pi = estimate_pi(base, [ref], _features(base, [ref], ex_xy, base.config.window_px), cfg)
    fig, axes = plt.subplots(1, len(CONDITIONS), figsize=(4.2 * len(CONDITIONS), 4.4))
    print(f"{a.dataset.name}: {', '.join(f'{(groups == g).sum()} {g}' for g in GROUPS)} windows; pi {pi:.3f}")
    print(f"{'stage 1':34s} {'AUC target/background':>22s} {'AUC target/distractor':>22s} {'seconds':>8s}")
    for ax, (name, s1) in zip(axes, CONDITIONS.items(), strict=True):
        net = copy.deepcopy(base)
        t0 = time.perf_counter()
        if s1.steps:
            fine_tune(net, [ref.image], ex_xy, s1, pi, seed=0, progress=False)
        f = encode_windows(net, win, center=background_mean(net, ref.image)).numpy()
        score = (f @ f[groups == "exemplar"].T).max(axis=1)
        t, b, d = (score[groups == g] for g in ("other target", "background", "distractor"))
        auc_b = roc_auc_score(np.r_[np.ones(len(t)), np.zeros(len(b))], np.r_[t, b])
        auc_d = roc_auc_score(np.r_[np.ones(len(t)), np.zeros(len(d))], np.r_[t, d])
        print(f"{name:34s} {auc_b:22.3f} {auc_d:22.3f} {time.perf_counter() - t0:8.1f}", flush=True)
        emb = TSNE(2, perplexity=30, init="pca", random_state=0).fit_transform(f)
        for g in GROUPS[::-1]:
            sel = groups == g
            ax.scatter(emb[sel, 0], emb[sel, 1], s=16 if g == "exemplar" else 6, color=COLOURS[g], label=g,
                       marker="*" if g == "exemplar" else "o", linewidths=0)  # fmt: skip
        ax.set_title(f"{name}\nAUC target vs background {auc_b:.2f}, vs distractor {auc_d:.2f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(fontsize=7, markerscale=1.5, frameon=False)
    fig.suptitle(f"cryoshot picker features on the reference micrograph of {a.dataset.name} (t-SNE)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
