"""Topaz on the picking benchmark's datasets: trained on the same 15 exemplars, and its general model.

Needs ``benchmarks/setup_topaz.sh`` (Topaz 0.3.20 in runs/topaz-venv) and the datasets that
``bench_picking.py`` writes to runs/bench_picking. Per dataset: ``topaz preprocess`` (downsampled
so the particle spans about 20 px), ``topaz train`` on the reference micrograph with the 15
exemplars (``-n`` set to the true number of target particles there, which favours Topaz),
``topaz extract`` on the queries with the trained model and with Topaz's pre-trained general
model (resnet16_u64), and precision / recall / F1 at the best threshold chosen from the truth
(which favours Topaz again), scored as in bench_picking.py.

    .venv/bin/python benchmarks/bench_topaz.py [--epochs 5] [--epoch-size 200] [--targets 3cf3] [--snrs 0.01] [--work topaz_r2]
    .venv/bin/python benchmarks/bench_topaz.py --othersim --root runs/othersim_picking   # othersim_picking.py's sets

Topaz's training is not seeded, so a repeat (another ``--work`` folder) measures its run-to-run spread.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import pandas as pd
from bench_picking import DATASETS, DIAMETER_A, SNRS, oracle_f1

from cryoshot.io.star import read_star_table
from cryoshot.picking.matching import MatchCounts

TOPAZ = Path(__file__).resolve().parents[1] / "runs" / "topaz-venv" / "bin" / "topaz"


def run(cmd: list[str]) -> None:
    r = subprocess.run([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd[:2]))} failed:\n{r.stderr[-2000:]}")


def topaz_counts(ds: Path, target: str, picks: Path, pix: float = 2.0, diameter_A: float | None = None) -> MatchCounts:
    """Counts over a dataset's queries (every micrograph but the first) of Topaz's picks (``topaz extract``'s
    table, in input pixels) at the best threshold of each micrograph, chosen from the truth."""
    p = pd.read_csv(picks, sep="\t")
    truth = read_star_table(ds / "coordinates.star")
    c = MatchCounts(0, 0, 0)
    for mq in sorted(ds.glob("mic_*.mrc"))[1:]:
        pp = p[p["image_name"] == mq.stem]
        t = truth[(truth["rlnMicrographName"] == mq.name) & (truth["cryoshotStructureName"] == target)]
        c = c + oracle_f1(pp[["x_coord", "y_coord"]].to_numpy(float), pp["score"].to_numpy(float),
                          t[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float),
                          (diameter_A or DIAMETER_A[target]) / pix)[0]  # fmt: skip
    return c


def topaz_dataset(ds: Path, target: str, diameter_A: float, pix: float, ex: pd.DataFrame, work: Path, epochs: int,
                  epoch_size: int, train: bool = True) -> tuple[dict[str, MatchCounts], float]:  # fmt: skip
    """Topaz trained on the exemplars ``ex`` (on ``mic_0000``) and its general model (only the latter without
    ``train``), scored on the other micrographs of ``ds`` at the best threshold: ({row: counts}, seconds of
    preprocessing and training)."""
    work.mkdir(exist_ok=True)
    mics = sorted(ds.glob("mic_*.mrc"))
    scale = max(1, int(round(diameter_A / pix / 20)))
    radius = int(round(diameter_A / pix / scale / 2))
    t0 = time.perf_counter()
    run([TOPAZ, "preprocess", "-s", scale, "-o", work / "proc", *mics])
    queries = [work / "proc" / f"{m.stem}.mrc" for m in mics[1:]]
    models = {"Topaz general (resnet16_u64)": "resnet16_u64"}
    if train:
        models = {"Topaz, 15 exemplars": _train(ds, target, mics, ex, work, scale, radius, epochs, epoch_size),
                  **models}  # fmt: skip
    t_train = time.perf_counter() - t0
    rows = {}
    for name, m in models.items():
        out = work / f"picks_{'general' if m == 'resnet16_u64' else 'trained'}.txt"
        run([TOPAZ, "extract", "-m", m, "-r", radius, "-x", scale, "-o", out, "-d", "-1", *queries])
        rows[name] = topaz_counts(ds, target, out, pix, diameter_A)
    return rows, t_train


def _train(ds: Path, target: str, mics: list[Path], ex: pd.DataFrame, work: Path, scale: int, radius: int,
           epochs: int, epoch_size: int) -> Path:  # fmt: skip
    """``topaz train`` on the reference micrograph with the exemplars; the last epoch's model."""
    truth = read_star_table(ds / "coordinates.star")
    ref_truth = truth[(truth["rlnMicrographName"] == mics[0].name) & (truth["cryoshotStructureName"] == target)]
    tg = pd.DataFrame({"image_name": mics[0].stem,
                       "x_coord": (ex["rlnCoordinateX"].to_numpy(float) / scale).round().astype(int),
                       "y_coord": (ex["rlnCoordinateY"].to_numpy(float) / scale).round().astype(int)})  # fmt: skip
    tg.to_csv(work / "targets.txt", sep="\t", index=False)
    ref_dir = work / "train_images"  # Topaz reads a folder (or a list file) of training images
    ref_dir.mkdir(exist_ok=True)
    if not (ref_dir / f"{mics[0].stem}.mrc").exists():
        (ref_dir / f"{mics[0].stem}.mrc").symlink_to((work / "proc" / f"{mics[0].stem}.mrc").resolve())
    run([TOPAZ, "train", "--train-images", ref_dir, "--train-targets",
         work / "targets.txt", "-n", len(ref_truth), "-r", max(1, radius // 3), "--num-epochs", epochs,
         "--epoch-size", epoch_size, "-o", work / "train.txt", "--save-prefix", work / "model",
         "-d", "-1", "-j", "2"])  # fmt: skip
    return sorted(work.glob("model_epoch*.sav"))[-1]


def _print_rows(rows: dict[str, MatchCounts]) -> None:
    for r, c in rows.items():
        print(f"  {r:42s} {c.precision:.3f} {c.recall:.3f} {c.f1:.3f}   ({c.n_picks} picks, {c.n_truth} particles)",
              flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="runs/bench_picking")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--epoch-size", type=int, default=200)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--targets", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    ap.add_argument(
        "--snrs", nargs="+", type=float, default=None, help="SNR levels (default: all, or 0.02 with --quick)"
    )
    ap.add_argument("--work", default="topaz", help="folder name inside each dataset (a repeat writes its own)")
    ap.add_argument("--othersim", action="store_true",
                    help="the datasets of othersim_picking.py in --root (each set*/ with its config.json and ex.star); "
                         "typed diameter as there: the target's extent rounded to 10 Å")  # fmt: skip
    ap.add_argument("--general-only", action="store_true", help="only Topaz's general model (no training)")
    ap.add_argument("--sets", nargs="*", help="with --othersim: only these set folders (e.g. set3 set4)")
    a = ap.parse_args()
    root = Path(a.root)
    print("Topaz 0.3.20 (CPU); precision recall F1 over the queries at the best threshold (chosen from the truth)")
    if a.othersim:
        for ds in sorted(p.parent for p in root.glob("set*/config.json")):
            if a.sets and ds.name not in a.sets:
                continue
            meta = json.loads((ds / "config.json").read_text())
            target = meta["target"]
            typed = float(round(meta["diameters_A"][target] / 10) * 10)
            ex = read_star_table(ds / "ex.star")
            rows, t_train = topaz_dataset(ds, target, typed, meta["pixel_size_A"], ex, ds / a.work, a.epochs,
                                          a.epoch_size, train=not a.general_only)  # fmt: skip
            print(f"\n{ds.name} ({target}, typed {typed:g} Å): preprocess + train {t_train:.0f} s")
            _print_rows(rows)
        return
    snrs = a.snrs if a.snrs else (SNRS[:1] if a.quick else SNRS)
    for target in a.targets:
        for snr in snrs:
            ds = root / f"{target}_snr{snr:g}"
            if not (ds / "coordinates.star").exists():
                print(f"{ds} missing: run bench_picking.py first")
                continue
            ex = read_star_table(ds / "exemplars25.star").iloc[:15]
            rows, t_train = topaz_dataset(ds, target, DIAMETER_A[target], 2.0, ex, ds / a.work, a.epochs,
                                          a.epoch_size, train=not a.general_only)  # fmt: skip
            print(f"\n{target} (+{', '.join(DATASETS[target])}) SNR {snr:g}: preprocess + train {t_train:.0f} s")
            _print_rows(rows)


if __name__ == "__main__":
    main()
