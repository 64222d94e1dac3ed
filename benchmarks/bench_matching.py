"""Seconds per iteration of every matching method x embedding x network source, side by side.

Loads the cached latents of the fitted VAE (fitting / encoding first if missing, untimed)
and runs each configuration for 1 + `--iterations` iterations at `--ipc` with the
method's reference settings (real batch 256 per class unless `--batch-real`). The time per
iteration is read from the loss curve (a point after every iteration), so the setup -- the
pixel embedding's decoding of every real latent, a network bank's training -- is left out
and shown apart. The first row is the baseline of the "vs first" column; the last column
compares with the public reference BACON code, 21.3 s per iteration on these 2 cores for
Fashion-MNIST at IPC 10 (20,000 iterations: 118 h).

The bank here is small (2 networks, snapshots after 0, 10 and 20 steps): an iteration's
cost does not depend on its size, only the setup does.

    python benchmarks/bench_matching.py                                  # IPC 10, 3 timed iterations
    python benchmarks/bench_matching.py --configs dm:pixel:method bacon:pixel:bank --iterations 5
"""

from __future__ import annotations

import argparse
import time

import torch

from latentdd.config import DataConfig
from latentdd.distill import DistillContext, make_distiller
from pipelines.distill import LatentSpaceConfig, prepare_latent_space

REFERENCE_SECONDS_PER_ITERATION = 21.3
DEFAULT_CONFIGS = ["bacon:pixel:method", "bacon:pixel:bank", "bacon:latent:method", "bacon:latent:bank",
                   "idm:pixel:method", "idm:pixel:bank", "dm:pixel:method", "dm:pixel:bank", "dm:latent:method",
                   "dsa:pixel:method"]
SMALL_BANK = {"bank_nets": 2, "bank_steps": (0, 10, 20)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--validation", type=float, default=0.1)  # the split (and fitted VAE) of results/matching_*
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="METHOD:EMBEDDING:method|bank")
    p.add_argument("--cache-dir", default="~/.cache/latentdd")
    args = p.parse_args(argv)

    space = prepare_latent_space(DataConfig(name=args.dataset, validation=args.validation),
                                 LatentSpaceConfig(cache_dir=args.cache_dir), progress=False)
    context = DistillContext(decode=space.decode)  # no cache_dir: every bank is trained, and timed as setup
    print(f"{args.dataset}: {len(space.latents)} latents {tuple(space.latents.latent_shape)}, IPC {args.ipc}, "
          f"real batch {args.batch_real}, {args.iterations} timed iterations, {torch.get_num_threads()} threads\n")
    print(f"{'method:embedding:networks':<26} {'setup s':>8} {'s/iteration':>12} {'vs first':>9} "
          f"{'vs reference (21.3 s/it)':>25}")
    base = None
    for config in args.configs:
        method, embedding, networks = config.split(":")
        params = {"embedding": embedding, "networks": networks, "iterations": 1 + args.iterations,
                  "checkpoint_every": 1, "batch_real": args.batch_real, **(SMALL_BANK if networks == "bank" else {})}
        start = time.perf_counter()
        syn = make_distiller(method, **params).distill(space.latents, args.ipc, seed=0, context=context)
        wall = time.perf_counter() - start
        curve = syn.extras["loss_curve"]
        per_it = (curve[-1]["seconds"] - curve[0]["seconds"]) / args.iterations  # the first iteration is left out
        base = base or per_it
        print(f"{config:<26} {wall - curve[-1]['seconds']:>8.1f} {per_it:>12.3f} {base / per_it:>8.2f}x "
              f"{REFERENCE_SECONDS_PER_ITERATION / per_it:>24.1f}x", flush=True)


if __name__ == "__main__":
    main()
