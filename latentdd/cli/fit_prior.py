"""The `latentdd fit-prior` command: its body (every flag it takes is a config key)."""

from __future__ import annotations

from latentdd.cli.sections import (
    data_config,
    decoder_config,
    latent_config,
)

ABOUT = "Fit the class-conditional diffusion prior behind --decoder diffusion (cached: a second call is instant)."
EXAMPLES = (
    "examples:\n  latentdd fit-prior --dataset fashion_mnist --vae fit\n"
    "  latentdd fit-prior --dataset fashion_mnist --decoder.prior.max_steps 3000 --decoder.prior.block_out_channels "
    "'[64, 128]'"
)


def command(args, raw) -> int:
    from latentdd.pipelines.distill import load_or_fit_prior, prepare_latent_space

    data = data_config(args, raw)
    space = latent_config(args, raw)
    decoder = decoder_config(args, raw)
    prepared = prepare_latent_space(data, space, progress=not args.quiet)
    _, _, report = load_or_fit_prior(decoder, prepared, space.cache_dir, progress=not args.quiet)
    where = "loaded from the cache" if report["cached"] else f"trained in {report['train_seconds']:.0f} s"
    print(f"{report['name']}: {report['num_parameters']} parameters, {report['num_classes']} classes + the null class, "
          f"latents {tuple(prepared.latents.latent_shape)}, {report['steps']} steps, final loss "
          f"{report['final_loss']:.4f}, {where}; saved in {report['directory']}")
    return 0
