"""The `latentdd encode` command: its flags that are not config keys, and its body."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentdd.cli.sections import (
    data_config,
    latent_config,
)

ABOUT = "Encode a split into a resumable latent cache (run under `accelerate launch` for several processes)."
EXAMPLES = (
    "examples:\n  latentdd encode --dataset fashion_mnist --vae fit --out runs/latents/train\n"
    "  accelerate launch --num_processes 2 -m latentdd encode --dataset imagefolder --root ~/imagenette "
    "--image-size 128 --resize center_crop --vae stabilityai/sd-vae-ft-mse --out runs/latents/train\n"
    "  accelerate launch --multi_gpu --num_processes 2 -m latentdd encode ...   # 2 CPU processes, no GPU"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `latentdd encode` that are not config keys (those come from `latentdd.cli.settings`)."""
    p.add_argument("--split", default="train", help="split to encode (default train)")
    p.add_argument("--out", required=True, help="cache folder (re-running resumes)")


def command(args, raw) -> int:
    from latentdd.io import claim_folder
    from latentdd.latents.cache import CacheConfig, encode_split, write_manifest
    from latentdd.parallel import process_state
    from latentdd.vae import VAEInputAdapter
    from latentdd.pipelines.distill import cache_dataset_record, load_or_fit_vae

    data = data_config(args, raw)
    space = latent_config(args, raw)
    # Without a GPU, processes started by `accelerate launch --multi_gpu` / torchrun join a gloo group.
    state = process_state()
    with state.main_process_first():  # --out: missing, empty or latentdd's, and writable -- before any work
        claim_folder(Path(args.out), "latent-cache")
    images, train, test = data.load(args.split), data.load("train"), data.load("test")
    with state.main_process_first():  # for --vae fit, rank 0 fits and the others load its cache entry
        vae, _ = load_or_fit_vae(space, train, test, progress=not args.quiet)
    vae = vae.to(state.device)
    adapter = VAEInputAdapter.for_vae(vae, tuple(images.load([0]).shape[1:]), space.resize)
    identity = vae.identity() | {"adapter": adapter.identity()}
    dataset = cache_dataset_record(data, train, test, args.split)  # distill's, so each reuses the other's cache
    encode_split(images, lambda x: vae.encode(adapter.to_vae(x.to(state.device))), args.out, vae=identity,
                 dataset=dataset, config=CacheConfig(space.shard_size, space.batch_size, space.workers),
                 rank=state.process_index, world_size=state.num_processes, progress=not args.quiet)
    state.wait_for_everyone()
    if state.is_main_process:
        manifest = write_manifest(args.out, list(images.class_names))
        print(f"encoded {manifest['num_images']} images of {data.name}/{args.split} into {len(manifest['shards'])} "
              f"shards of latents {tuple(manifest['latent_shape'])} in {args.out}")
    return 0
