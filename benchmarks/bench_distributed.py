"""Dask execution (issue 17): one process against ``--scheduler local:2`` on this machine, and a SLURM estimate.

Workloads, each run once per mode, back to back in one run (the machine is shared: read
the ratios, not the absolute numbers):

- ``classify`` of N subtomograms (40^3, 10 Å, SNR 0.05, 5 novel structures) with 5 supports
  per class and the shipped ProtoNet-CE model, end to end from disk;
- ``pick`` (stage 2: an earlier run's ``picker.pt``, so no stage 1) of M micrographs
  (1024^2 at 5 Å, 1bxn, 100 particles each);
- the scheduler's overhead per unit: units that only write their result file.

Then, on paper, a 16-node SLURM cluster: per-unit cost measured here x units / workers +
overhead x units / workers, stated as an estimate.

    .venv/bin/python benchmarks/bench_distributed.py [--n 20000] [--micrographs 50] [--root runs/bench_distributed]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cryoshot.distributed import open_runner
from cryoshot.distributed.runner import probe_unit
from cryoshot.fewshot.classify import UNIT_ROWS, classify_sets
from cryoshot.io.star import read_star_table, write_star
from cryoshot.picking.stage1 import Stage1Config
from cryoshot.picking.workflow import PickConfig, pick
from cryoshot.pretrained import resolve_model
from cryoshot.simulate.micrographs import MicrographConfig
from cryoshot.simulate.splits import NOVEL_STRUCTURES
from cryoshot.simulate.subtomograms import SubtomogramConfig
from cryoshot.simulate.workflow import simulate_micrographs, simulate_subtomograms
from cryoshot.utils.threads import configure_threads
from cryoshot.utils.workunits import SerialRunner, WorkUnit

SEED = 1717  # benchmark data seed (never used in training)
QUIET = {"progress": False}


def subtomogram_data(root: Path, n: int) -> Path:
    """N queries + 5 supports per class, simulated once (on local:2: the simulate verb's own units)."""
    data = root / f"subtomo_{n}"
    if (data / "query.star").exists():
        return data
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    structs = list(NOVEL_STRUCTURES)[:5]
    cfg = SubtomogramConfig(box_px=40, pixel_size_A=10.0, snr=0.05, seed=SEED)
    t0 = time.perf_counter()
    with open_runner("local:2", log=lambda s: None) as runner:
        simulate_subtomograms(structs, data / "set", cfg, -(-(n + 25) // 5), runner=runner, **QUIET)
    print(f"(simulated {n + 25} subtomograms 40^3 on local:2 in {time.perf_counter() - t0:.0f} s)")
    t = read_star_table(data / "set" / "particles.star")
    sup = pd.concat([t[t["rlnClassNumber"] == c].iloc[:5] for c in sorted(set(t["rlnClassNumber"]))])
    write_star(data / "set" / "support.star", sup)
    write_star(data / "set" / "query.star", t.drop(sup.index).iloc[:n])
    (data / "query.star").write_text("ready\n")
    return data


def micrograph_data(root: Path, m: int) -> tuple[Path, Path]:
    """M micrographs and a picker.pt from a stage-1 run on the first (made once)."""
    data = root / f"mics_{m}"
    if not (data / "picker" / "picker.pt").exists():
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        cfg = MicrographConfig(size_px=1024, pixel_size_A=5.0, particle_box_px=40, n_particles=100, snr=0.1,
                               seed=SEED)  # fmt: skip
        simulate_micrographs(["1bxn"], data / "set", cfg, m, **QUIET)
        truth = read_star_table(data / "set" / "coordinates.star")
        ex = truth[truth["rlnMicrographName"] == "mic_0000.mrc"].iloc[:15]
        write_star(data / "set" / "ex.star", ex[["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"]])
        mic0 = [str(data / "set" / "mic_0000.mrc")]
        pick(mic0, data / "set" / "ex.star", data / "picker", PickConfig(diameter_A=160.0), log=lambda s: None,
             **QUIET)  # fmt: skip
    return data / "set", data / "picker" / "picker.pt"


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="query subtomograms")
    ap.add_argument("--micrographs", type=int, default=50)
    ap.add_argument("--probe-units", type=int, default=400)
    ap.add_argument("--root", default="runs/bench_distributed")
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--cores-per-node", type=int, default=32)
    args = ap.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    threads = configure_threads()
    print(f"# Distributed execution: one process ({threads} torch threads) against local:2 (2 workers x 1 thread)\n")
    sub = subtomogram_data(root, args.n)
    mics, picker = micrograph_data(root, args.micrographs)
    mic_list = sorted(str(p) for p in mics.glob("mic_*.mrc"))
    out = root / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()

    def classify(runner, name):
        return classify_sets(sub / "set" / "support.star", sub / "set" / "query.star", out / f"{name}.star",
                             model_path=resolve_model("default"), runner=runner, **QUIET)  # fmt: skip

    def pick_all(runner, name):
        return pick(mic_list, None, out / name, PickConfig(diameter_A=160.0, stage1=Stage1Config(steps=0)),
                    model=str(picker), runner=runner, log=lambda s: None, **QUIET)  # fmt: skip

    probe_dir = out / "probe"

    def probes(runner, name):
        folder = probe_dir / name
        folder.mkdir(parents=True)
        units = [WorkUnit(f"p{i:06d}", f"probe {i}", probe_unit, (), folder / f"p{i:06d}.txt")
                 for i in range(args.probe_units)]  # fmt: skip
        (runner or SerialRunner()).run(units, progress=False)

    res: dict[str, dict[str, float]] = {"one": {}, "local:2": {}}
    res["one"]["classify"] = timed(lambda: classify(None, "one"))
    res["one"]["pick"] = timed(lambda: pick_all(None, "pick_one"))
    res["one"]["probe"] = timed(lambda: probes(None, "one"))
    t0 = time.perf_counter()
    with open_runner("local:2", log=print) as runner:
        start = time.perf_counter() - t0
        runner.client.run(lambda: None)  # workers up
        res["local:2"]["classify"] = timed(lambda: classify(runner, "dask"))
        res["local:2"]["pick"] = timed(lambda: pick_all(runner, "pick_dask"))
        res["local:2"]["probe"] = timed(lambda: probes(runner, "dask"))
    a, b = read_star_table(out / "one.star"), read_star_table(out / "dask.star")
    same_cls = bool((a["cryoshotPredictedClass"] == b["cryoshotPredictedClass"]).all())
    pa, pb = read_star_table(out / "pick_one" / "picks.star"), read_star_table(out / "pick_dask" / "picks.star")
    same_pick = len(pa) == len(pb) and np.allclose(pa["rlnCoordinateX"], pb["rlnCoordinateX"], atol=1e-3)
    chunk = 15 * 5  # ProtoNet-CE's query chunk for 5 ways: a unit is UNIT_ROWS rounded up to a multiple of it
    n_units_cls = -(-args.n // (chunk * -(-UNIT_ROWS // chunk)))

    print(f"\nmachine: {os.cpu_count()} CPUs visible, {threads} available; LocalCluster start {start:.1f} s "
          "(not in the times below)\n")  # fmt: skip
    print("| workload | one process | local:2 | speed-up | same output |")
    print("|---|---|---|---|---|")
    n, m = args.n, len(mic_list)
    for key, what, count, unit in (("classify", f"classify {n} subtomograms 40^3 (+25 supports)", n, "subtomograms"),
                                   ("pick", f"pick {m} micrographs 1024^2 (stage 2)", m, "micrographs")):  # fmt: skip
        o, d = res["one"][key], res["local:2"][key]
        same = same_cls if key == "classify" else same_pick
        print(f"| {what} | {o:.1f} s ({count / o:.1f} {unit}/s) | {d:.1f} s ({count / d:.1f} {unit}/s) | "
              f"{o / d:.2f}x | {'yes' if same else 'NO'} |")  # fmt: skip
    po, pd_ = res["one"]["probe"], res["local:2"]["probe"]
    overhead_ms = 1e3 * (pd_ - po) / args.probe_units
    print(f"| {args.probe_units} empty units (scheduler overhead) | {1e3 * po / args.probe_units:.2f} ms/unit | "
          f"{1e3 * pd_ / args.probe_units:.2f} ms/unit | overhead {overhead_ms:.2f} ms per unit | |")  # fmt: skip

    # on paper: a SLURM cluster of nodes x cores single-threaded workers (what --scheduler slurm starts)
    workers = args.nodes * args.cores_per_node
    print(f"\nEstimate for {args.nodes} SLURM nodes x {args.cores_per_node} cores = {workers} single-threaded "
          "workers (per-unit cost from local:2 here, where each worker has one thread; same CPU assumed; "
          "scheduler overhead as measured, paid once per unit; shared-filesystem reads not modelled):")  # fmt: skip
    for key, units, items, unit in (("classify", n_units_cls, n, "subtomograms"), ("pick", m, m, "micrographs")):
        per_unit = res["local:2"][key] * 2 / units  # worker-seconds per unit (2 workers ran them)
        for scale in (1, 50):  # this data set, and one 50x larger
            u = units * scale
            waves = -(-u // workers)
            t = waves * per_unit + u * overhead_ms / 1e3 / workers
            print(f"- {key}, {items * scale} {unit} ({u} units of {per_unit:.1f} worker-seconds): about {t:.0f} s "
                  f"({items * scale / t:.0f} {unit}/s)")  # fmt: skip


if __name__ == "__main__":
    main()
