"""One training step of an encoder in fp32 and under bf16 autocast, alternately in one process.

100 random volumes of 40^3 (one 5-way 5-shot 15-query episode), Adam, 3 steps per block,
blocks fp32, bf16, fp32, bf16, so that both precisions see the same machine load.

    .venv/bin/python benchmarks/bench_train_precision.py [--encoder protonet3d-paper] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from cryoshot.models.encoders3d import Encoder3d, encoder_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--encoder", default="protonet3d-paper")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    enc = Encoder3d(encoder_config(args.encoder))
    opt = torch.optim.Adam(enc.parameters(), 1e-4)
    x = torch.randn(100, 1, 40, 40, 40)

    def step(bf16: bool) -> float:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            z = enc(x)
        loss = z.float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t

    print(f"# {args.encoder}, {args.threads} threads, torch {torch.__version__}")
    for bf16 in (False, True, False, True):
        print("bf16" if bf16 else "fp32", " ".join(f"{step(bf16):.2f}s" for _ in range(3)), flush=True)


if __name__ == "__main__":
    main()
