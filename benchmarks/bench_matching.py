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

mtt rows (`--mtt-widths`) time MTT's outer iteration (syn_steps unrolled steps on all the set, then the
backward through them) with a buffer of one expert trained 3 epochs of 10 batches: an iteration's cost does not depend on
the buffer's contents, only the setup (the buffer's training, shown apart) does. Issue 35's target: an outer
iteration at IPC 10 in <= 2 s on these cores.

A fourth field picks the embedding forward (`matching.Embedder`): eager (the default, float32),
bf16 (the real batch in bfloat16), compiled (torch.compile, once per run: its compilation is in
the setup column) or compiled-bf16 (both).

    python benchmarks/bench_matching.py                                  # IPC 10, 3 timed iterations
    python benchmarks/bench_matching.py --configs dm:pixel:method dm:pixel:method:compiled-bf16 --iterations 5
    python benchmarks/bench_matching.py --configs dm:pixel:method --mtt-widths 32 64 128 --mtt-syn-steps 20
    python benchmarks/bench_matching.py --configs dm:pixel:method --mtt-widths 32 --mtt-syn-steps 10 20 --mtt-batch-syn 0 50
"""

from __future__ import annotations

import argparse
import time

import torch

from latentdd.config import DataConfig
from latentdd.distill import DistillContext, make_distiller, matching
from latentdd.pipelines.distill import LatentSpaceConfig, prepare_latent_space

REFERENCE_SECONDS_PER_ITERATION = 21.3
DEFAULT_CONFIGS = ["bacon:pixel:method", "bacon:pixel:bank", "bacon:latent:method", "bacon:latent:bank",
                   "idm:pixel:method", "idm:pixel:bank", "dm:pixel:method", "dm:pixel:bank", "dm:latent:method",
                   "dsa:pixel:method", "dm:pixel:method:compiled-bf16", "bacon:pixel:bank:compiled-bf16",
                   "idm:pixel:bank:compiled-bf16"]
FORWARDS = {"eager": {}, "bf16": {"real_precision": "bfloat16"}, "compiled": {"compile": "auto"},
            "compiled-bf16": {"compile": "auto", "real_precision": "bfloat16"}}
SMALL_BANK = {"bank_nets": 2, "bank_steps": (0, 10, 20)}
SMALL_BUFFER = {"experts": 1, "buffer_epochs": 3, "max_start_epoch": 1, "expert_epochs": 2, "epoch_steps": 10}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--validation", type=float, default=0.1)  # the split (and fitted VAE) of results/matching_*
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--batch-real", type=int, default=256)
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="METHOD:EMBEDDING:method|bank[:" + "|".join(FORWARDS) + "]")
    p.add_argument("--cache-dir", default="~/.cache/latentdd")
    p.add_argument("--mtt-widths", type=int, nargs="*", default=[], help="add an mtt:pixel row at each network width")
    p.add_argument("--mtt-syn-steps", type=int, nargs="+", default=[20],
                   help="the mtt rows' unrolled steps (MTT's 20-30); a row per value")
    p.add_argument("--mtt-batch-syn", type=int, nargs="+", default=[0],
                   help="the mtt rows' synthetic inputs a step (0: all of them); a row per value")
    args = p.parse_args(argv)
    configs = args.configs + [f"mtt:pixel:method:eager:w{w}:s{steps}:b{batch}" for w in args.mtt_widths
                              for steps in args.mtt_syn_steps for batch in args.mtt_batch_syn]

    space = prepare_latent_space(DataConfig(name=args.dataset, validation=args.validation),
                                 LatentSpaceConfig(cache_dir=args.cache_dir), progress=False)
    context = DistillContext(decode=space.decode)  # no cache_dir: every bank is trained, and timed as setup
    _share_decoded_inputs()
    print(f"{args.dataset}: {len(space.latents)} latents {tuple(space.latents.latent_shape)}, IPC {args.ipc}, "
          f"real batch {args.batch_real}, {args.iterations} timed iterations, {torch.get_num_threads()} threads\n")
    print(f"{'method:embedding:networks:forward':<36} {'setup s':>8} {'s/iteration':>12} {'vs first':>9} "
          f"{'vs reference (21.3 s/it)':>25}")
    base = None
    for config in configs:
        method, embedding, networks, forward, *mtt = (config.split(":") + ["eager"])[:7]
        params = {"embedding": embedding, "networks": networks, "iterations": 1 + args.iterations,
                  "checkpoint_every": 1, "batch_real": args.batch_real, **(SMALL_BANK if networks == "bank" else {}),
                  **FORWARDS[forward]}
        if method == "mtt":  # mtt rows: width, unrolled steps, synthetic batch (0: all)
            width, steps, batch = (int(v[1:]) for v in mtt)
            params |= SMALL_BUFFER | {"width": width, "syn_steps": steps, "batch_syn": batch or None,
                                      "lr": 1e-6}  # a tiny lr: timing only
        start = time.perf_counter()
        syn = make_distiller(method, **params).distill(space.latents, args.ipc, seed=0, context=context)
        wall = time.perf_counter() - start
        curve = syn.extras["loss_curve"]
        per_it = (curve[-1]["seconds"] - curve[0]["seconds"]) / args.iterations  # the first iteration is left out
        base = base or per_it
        print(f"{config:<36} {wall - curve[-1]['seconds']:>8.1f} {per_it:>12.3f} {base / per_it:>8.2f}x "
              f"{REFERENCE_SECONDS_PER_ITERATION / per_it:>24.1f}x", flush=True)


def _share_decoded_inputs() -> None:
    """Decode the real latents once per embedding for all configs, not once per config: it is setup,
    left out of the per-iteration figures either way, and took minutes a config."""
    made: dict[tuple[str, int], matching.Inputs] = {}
    make = matching.Inputs.make

    def shared(embedding, latents, context):
        key = (embedding, id(latents))
        if key not in made:
            made[key] = make(embedding, latents, context)
        return made[key]

    matching.Inputs.make = staticmethod(shared)


if __name__ == "__main__":
    main()
