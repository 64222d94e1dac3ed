"""BACON / IDM iterations per second for each embedding, side by side.

Loads the cached latents of the fitted VAE (fitting / encoding first if missing, untimed),
then times `--iterations` iterations of `make_distiller(method, embedding=...)` at `--ipc`
(the time of 1 iteration is subtracted from that of 1 + `--iterations`, so the setup, e.g.
the pixel embedding's decoding of every real latent, is left out and shown apart),
reference settings otherwise (real batch 256 per class, 5000 at IPC 1; pool
training 2 nets x 10 steps of 256). The first embedding is the baseline of the ratio
column; the last column compares with the public reference BACON code, which takes
about 21 s per iteration on these 2 cores for Fashion-MNIST at IPC 10 (PROTOCOLS.md /
the issue), i.e. 118 hours for its 20,000 iterations.

    python benchmarks/bench_bacon.py                       # bacon, latent vs pixel, IPC 10, 10 iterations
    python benchmarks/bench_bacon.py --method idm --ipc 1 --iterations 20
"""

from __future__ import annotations

import argparse
import time

import torch

from latentdd.config import DataConfig
from latentdd.distill import DistillContext, make_distiller
from pipelines.distill import LatentSpaceConfig, prepare_latent_space

REFERENCE_SECONDS_PER_ITERATION = 21.0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--method", default="bacon", choices=("bacon", "idm"))
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--embeddings", nargs="+", default=["latent", "pixel"])
    p.add_argument("--cache-dir", default="~/.cache/latentdd")
    args = p.parse_args(argv)

    space = prepare_latent_space(DataConfig(name=args.dataset), LatentSpaceConfig(cache_dir=args.cache_dir),
                                 progress=False)
    context = DistillContext(decode=space.decode)
    print(f"{args.dataset}: {len(space.latents)} latents {tuple(space.latents.latent_shape)}, {args.method}, "
          f"IPC {args.ipc}, {args.iterations} timed iterations, {torch.get_num_threads()} threads\n")
    print(f"{'embedding':<10} {'setup s':>8} {'s/iteration':>12} {'it/s':>8} {'vs first':>9} "
          f"{'vs reference (21 s/it)':>24}")
    base = None
    for embedding in args.embeddings:
        def seconds(iterations: int) -> float:
            distiller = make_distiller(args.method, embedding=embedding, iterations=iterations)
            start = time.perf_counter()
            distiller.distill(space.latents, args.ipc, seed=0, context=context)
            return time.perf_counter() - start

        seconds(1)  # untimed: first-call allocations
        one, many = seconds(1), seconds(1 + args.iterations)
        per_it = (many - one) / args.iterations  # setup (e.g. decoding the real latents) cancels out
        base = base or per_it
        print(f"{embedding:<10} {one - per_it:>8.1f} {per_it:>12.3f} {1 / per_it:>8.2f} {base / per_it:>8.2f}x "
              f"{REFERENCE_SECONDS_PER_ITERATION / per_it:>23.1f}x")


if __name__ == "__main__":
    main()
