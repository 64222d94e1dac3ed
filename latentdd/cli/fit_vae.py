"""The `latentdd fit-vae` command: its body (every flag it takes is a config key)."""

from __future__ import annotations

from pathlib import Path

from latentdd.cli.sections import (
    data_config,
    latent_config,
)

ABOUT = "Train the small AutoencoderKL used by --vae fit (cached: a second call is instant)."
EXAMPLES = (
    "examples:\n  latentdd fit-vae --dataset fashion_mnist\n"
    "  latentdd fit-vae --dataset fashion_mnist --latent.fit.max_steps 3000   # or --set max_steps=3000"
)


def command(args, raw) -> int:
    from latentdd.pipelines.distill import load_or_fit_vae

    data = data_config(args, raw)
    space = latent_config(args, raw)
    space.vae = "fit"
    train, test = data.load("train"), data.load("test")
    vae, report = load_or_fit_vae(space, train, test, progress=not args.quiet)
    where = "loaded from the cache" if report.get("cached") else f"trained in {report['train_seconds']:.0f} s"
    print(f"{vae.name}: {vae.num_parameters} parameters, latents {tuple(vae.latent_shape)}, {where}; "
          f"test PSNR {report['test_psnr']:.2f} dB; saved in {Path(space.cache_dir).expanduser() / 'vae'}")
    return 0
