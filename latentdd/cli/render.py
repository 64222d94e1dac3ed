"""The `latentdd render` command: its flags that are not config keys, and its body."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentdd.cli.sections import (
    data_config,
    decoder_config,
    latent_config,
)

ABOUT = "Render synthetic latents with a decoder, split over the processes of `accelerate launch`."
EXAMPLES = (
    "examples:\n  latentdd render --dataset fashion_mnist --vae fit --synthetic runs/kmeans10 --out runs/kmeans10_vae\n"
    "  accelerate launch --multi_gpu --num_processes 2 -m latentdd render --dataset imagefolder --root DIR "
    "--image-size 64 --vae taesd:PATH --latents runs/latents/train --decoder diffusion --synthetic runs/kmeans10 "
    "--out runs/kmeans10_diffusion"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `latentdd render` that are not config keys (those come from `latentdd.cli.settings`)."""
    p.add_argument("--synthetic", required=True, metavar="DIR|FILE",
                   help="a `latentdd distill` folder, or its latents.safetensors")
    p.add_argument("--latents", metavar="DIR",
                   help="the train latent cache (`latentdd encode --out DIR`) that the diffusion prior is fitted to")
    p.add_argument("--seed", type=int, help="the img2img noise seed (default: the distillation's seed)")
    p.add_argument("--out", required=True, help="output folder: images/, grid.png, render.json")
    p.add_argument("--overwrite", action="store_true")


def command(args, raw) -> int:
    from latentdd.io import check_output
    from latentdd.parallel import process_state
    from latentdd.pipelines.render import check_synthetic, load_synthetic_latents, render_to_folder, setup_decoder

    data = data_config(args, raw)
    space = latent_config(args, raw)
    decoder_settings = decoder_config(args, raw)
    state = process_state()
    out = Path(args.out).expanduser()
    with state.main_process_first():  # a foreign or unwritable --out, unreadable latents: before any work
        check_output(out, overwrite=args.overwrite)
        synthetic = load_synthetic_latents(args.synthetic)
    seed = args.seed if args.seed is not None else int(synthetic.params.get("seed", 0))
    decoder, record, stages = setup_decoder(data, space, decoder_settings, state, latents_dir=args.latents,
                                            progress=not args.quiet)
    check_synthetic(synthetic, data, stages, decoder.vae.latent_shape, Path(args.synthetic).expanduser())
    config = {"dataset": data, "latent": space, "decoder": decoder_settings,
              "render": {"synthetic": args.synthetic, "seed": seed, "latents": args.latents}}
    written = render_to_folder(synthetic, decoder, record, stages, out, seed=seed, state=state,
                               overwrite=args.overwrite, config=config)
    if written is not None:
        print(f"rendered {len(synthetic)} latents ({decoder_settings.name} decoder, {state.num_processes} "
              f"process(es)) to {written}/images")
    return 0
