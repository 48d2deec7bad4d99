"""Simulator speed: subtomograms per second (fast path) and one large micrograph.

Prints a table; record the figures in docs/benchmarks.md with the command,
machine and date. Run:

    .venv/bin/python benchmarks/bench_simulator.py [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from cryoshot.simulate.micrographs import MicrographConfig, MicrographSimulator
from cryoshot.simulate.splits import NOVEL_STRUCTURES
from cryoshot.simulate.structures import load_structures
from cryoshot.simulate.subtomograms import SubtomogramConfig, SubtomogramSimulator


def time_it(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--n", type=int, default=1024, help="subtomograms per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}")

    structs = load_structures(list(NOVEL_STRUCTURES), 10.0, 40)
    sim = SubtomogramSimulator(structs, SubtomogramConfig(snr=0.05))
    t_cold = time_it(lambda: sim.simulate(range(0, 64)), 1)[0]
    # warm: every defocus step of the range already has its transfer function
    for start in range(64, 1024, 64):
        sim.simulate(range(start, start + 64))

    def run(with_clean: bool):
        for start in range(0, args.n, 64):
            sim.simulate(range(10_000 + start, 10_000 + start + 64), with_clean=with_clean)

    ts = time_it(lambda: run(False), args.repeats)
    rate = args.n / np.array(ts)
    tc = time_it(lambda: run(True), args.repeats)
    rate_c = args.n / np.array(tc)
    print("| workload | min s | median s | items/s (best) | ms/item (best) |")
    print("|---|---|---|---|---|")
    print(
        f"| first 64 subtomograms 40^3, cold caches | {t_cold:.2f} | {t_cold:.2f} | {64 / t_cold:.0f} | {t_cold / 64 * 1e3:.1f} |"
    )
    print(
        f"| {args.n} subtomograms 40^3 (fast path, SNR 0.05, CTF+wedge+dose) | {min(ts):.2f} | "
        f"{np.median(ts):.2f} | {rate.max():.0f} | {1e3 / rate.max():.2f} |"
    )
    print(
        f"| {args.n} subtomograms 40^3, also returning the clean volumes | {min(tc):.2f} | "
        f"{np.median(tc):.2f} | {rate_c.max():.0f} | {1e3 / rate_c.max():.2f} |"
    )
    ts_sim = SubtomogramSimulator(structs, SubtomogramConfig(snr=0.05, method="tiltseries"))
    t_ts = time_it(lambda: ts_sim.simulate(range(8)), 1)[0]
    print(
        f"| 8 subtomograms 40^3, tilt-series + WBP path | {t_ts:.2f} | {t_ts:.2f} | {8 / t_ts:.1f} | {t_ts / 8 * 1e3:.0f} |"
    )

    mstructs = load_structures(list(NOVEL_STRUCTURES[:4]), 5.0, 64)
    mcfg = MicrographConfig(size_px=4096, pixel_size_A=5.0, particle_box_px=64, n_particles=1000,
                            n_ice_blobs=3, carbon_edge=True)  # fmt: skip
    msim = MicrographSimulator(mstructs, mcfg)
    n_placed = len(msim.simulate(0).coords_px)
    tm = time_it(lambda: msim.simulate(1), args.repeats)
    print(f"| micrograph 4096^2, {n_placed} particles, contaminants | {min(tm):.2f} | {np.median(tm):.2f} | - | - |")


if __name__ == "__main__":
    main()
