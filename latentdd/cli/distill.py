"""The `latentdd distill` command: its flags that are not config keys, and its body."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentdd.cli.sections import (
    data_config,
    decoder_config,
    latent_config,
    settings_of,
    teacher_config,
)
from latentdd.config import check_mapping, plain
from latentdd.configs import build_section

ABOUT = "Distil IPC synthetic latents per class, render them, export an image folder."
EXAMPLES = (
    "examples:\n  latentdd distill --dataset fashion_mnist --vae fit --method kmeans --ipc 10 --seed 0 --out runs/kmeans10\n"
    "  latentdd distill --dataset fashion_mnist --method dm --ipc 10 --distill.params.iterations 300 --out runs/dm10\n"
    "  latentdd evaluate --images runs/kmeans10/images --dataset fashion_mnist --use-weights\n"
    "  latentdd encode --dataset fashion_mnist --vae fit --out runs/latents/train\n"
    "  latentdd distill --dataset fashion_mnist --vae fit --latents runs/latents/train --method kmeans --ipc 10 "
    "--out runs/kmeans10"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `latentdd distill` that are not config keys (those come from `latentdd.cli.settings`)."""
    p.add_argument("--out", required=True, help="output folder: images/, latents.safetensors, distill.json")
    p.add_argument("--overwrite", action="store_true")


def command(args, raw) -> int:
    from latentdd.distill import coerce_params, make_distiller
    from latentdd.io import check_output
    from latentdd.pipelines.distill import distill_to_folder, make_decoder, prepare_latent_space
    from latentdd.presets import resolve

    data = data_config(args, raw)
    space = latent_config(args, raw)
    decoder_settings = decoder_config(args, raw)
    section = dict(check_mapping(raw.get("distill"), "distill"))
    overrides = dict(check_mapping(section.pop("params", None), "distill.params")) | settings_of(args, "distill.params")
    job = build_section("distill", section, settings_of(args, "distill"))
    method, ipc, seed = job.method, job.ipc, job.seed
    from latentdd.parallel import process_state

    state = process_state()  # under accelerate launch: the classes split over the processes (splits_by_class)
    check_output(Path(args.out).expanduser(), overwrite=args.overwrite)  # a foreign or unwritable --out: before fitting
    # The preset's parameters with the overrides over them; every parameter, the defaults included, coerced to
    # its type (and checked) before any work starts.
    resolved = resolve(method, ipc, job.preset, coerce_params(method, overrides))
    params = plain(make_distiller(method, **resolved.params))
    with state.main_process_first():  # the first process fits and encodes what is cached; the others read it
        prepared = prepare_latent_space(data, space, latents_dir=job.latents, progress=not args.quiet)
        decoder, decoder_record = make_decoder(decoder_settings, prepared, space.cache_dir, progress=not args.quiet)
    config = {"dataset": data, "latent": space,
              "distill": {"method": method, "ipc": ipc, "seed": seed, "preset": job.preset, "params": params,
                          "latents": job.latents},
              "decoder": decoder_settings}
    out = distill_to_folder(prepared, method, ipc, seed, args.out, params=params, overwrite=args.overwrite,
                            config=config, decoder=decoder, decoder_record=decoder_record,
                            preset=resolved.record(), progress=not args.quiet and state.is_main_process,
                            teacher=teacher_config(args, raw), split_by_class=True)
    if not state.is_main_process:
        return 0
    print(f"wrote {ipc} x {len(prepared.latents.class_names)} images ({method}, preset {job.preset}, seed {seed}) "
          f"to {out}/images; "
          f"evaluate with: latentdd evaluate --images {out}/images --dataset {data.name}")
    return 0
