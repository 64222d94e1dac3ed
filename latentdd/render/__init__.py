"""Rendering: synthetic latents -> synthetic images at the dataset's shape.

A decoder is a small object with `render(synthetic, seed) -> SyntheticImages`, an image a
latent, and `record() -> dict` (the decoder part of the protocol record). `render_set` makes
a set's stored images from those: where a set tiles several latents into each stored image
(`SyntheticLatents.tile_factor`), it tiles them after the decoder has rendered each whole
(as does `latentdd.render.parallel.render_split`). `DECODERS` maps each name
to the factory that builds it, and is what the CLI's --decoder choices and
`latentdd.pipelines.distill.make_decoder` both read:

    vae         `latentdd.render.vae.VAEDecoder`: decode each latent directly
    diffusion   `latentdd.render.diffusion.DiffusionDecoder`: img2img with the prior fitted
                to the train latents (`latentdd.prior.fit_prior`, cached by content)
    dit         `latentdd.render.dit.DiTDecoder`: img2img with a pretrained class-conditional
                DiT (config.prior: hub id or folder)
    sd-img2img  `latentdd.render.sd_img2img.StableDiffusionImg2ImgDecoder`: D4M's Stable
                Diffusion img2img, prompted with the class name (config.prior: hub id or folder)

The img2img decoders share their render loop (batches, per-latent noise, the plain VAE
decoding at strength 0): `latentdd.render.img2img.Img2ImgDecoder`.

A factory takes (config, vae, adapter, latents, cache_dir, progress) -> (decoder, record):
config has the fields of `latentdd.render.config.DecoderConfig`; a factory checks that the
model fits the train latents before it returns, so that nothing is distilled in vain.
"""

from __future__ import annotations


import dataclasses
from collections.abc import Callable
from pathlib import Path

from latentdd.data.base import SyntheticImages
from latentdd.latents.types import SyntheticLatents
from latentdd.nn.factorization import tile_set
from latentdd.render.diffusion import DiffusionDecoder
from latentdd.render.dit import DIT_DEFAULT, DiTDecoder, make_dit_decoder
from latentdd.render.sd_img2img import SD_DEFAULT, StableDiffusionImg2ImgDecoder, make_sd_img2img_decoder
from latentdd.render.vae import VAEDecoder


def render_set(decoder, synthetic: SyntheticLatents, *, seed: int = 0) -> SyntheticImages:
    """The images `synthetic` stores, rendered by `decoder`: one a latent, or with `synthetic.tile_factor`
    f > 1, f x f latents of a class, each rendered whole, pooled and tiled into one (`tile_set`)."""
    return tile_set(decoder.render(synthetic, seed=seed), synthetic.tile_factor)


def make_vae_decoder(config, vae, adapter, latents, cache_dir, *, progress: bool = True):
    decoder = VAEDecoder(vae, adapter, config.batch_size)
    return decoder, decoder.record()


def load_or_fit_prior(config, latents, cache_dir, *, device, progress: bool = True):
    """The diffusion prior of `config.prior` (FitPriorConfig overrides) fitted to `latents`, or loaded
    from cache_dir/prior -> (unet, scheduler, report)."""
    from latentdd.prior import FitPriorConfig, fit_prior

    return fit_prior(latents, FitPriorConfig(**config.prior), Path(cache_dir).expanduser() / "prior",
                     progress=progress, device=device)


def make_diffusion_decoder(config, vae, adapter, latents, cache_dir, *, progress: bool = True):
    """The prior of `config.prior` is fitted to `latents` (or loaded from cache_dir/prior)."""
    unet, scheduler, report = load_or_fit_prior(config, latents, cache_dir, device=vae.device, progress=progress)
    decoder = DiffusionDecoder(vae, adapter, unet, dict(scheduler.config), strength=config.strength,
                               num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
                               eta=config.eta, batch_size=config.batch_size, prior=report["name"])
    fit = {k: report[k] for k in ("steps", "train_seconds", "final_loss", "num_parameters", "cached")}
    return decoder, decoder.record() | {"prior_fit": fit, "prior_config": report["config"]}


DECODERS: dict[str, Callable] = {"vae": make_vae_decoder, "diffusion": make_diffusion_decoder,
                                 "dit": make_dit_decoder, "sd-img2img": make_sd_img2img_decoder}

# Each decoder owns its defaults (its dataclass fields): D4M's strength 0.7 and guidance 8 for sd-img2img, the
# val-chosen 0.5 and 4 for diffusion, ... `DecoderConfig` takes them unless a setting is given.
DECODER_CLASSES: dict[str, type] = {"vae": VAEDecoder, "diffusion": DiffusionDecoder, "dit": DiTDecoder,
                                    "sd-img2img": StableDiffusionImg2ImgDecoder}
SAMPLER_SETTINGS = ("strength", "num_inference_steps", "guidance_scale", "eta", "batch_size")


def decoder_defaults(name: str) -> dict:
    """The sampler settings decoder `name` defaults to ({} of those it does not have: vae has batch_size only)."""
    return {f.name: f.default for f in dataclasses.fields(DECODER_CLASSES[name])
            if f.name in SAMPLER_SETTINGS and f.default is not dataclasses.MISSING}

# The model each pretrained decoder loads when config.prior names none.
PRETRAINED_DEFAULTS: dict[str, str] = {"dit": DIT_DEFAULT, "sd-img2img": SD_DEFAULT}

__all__ = ["DECODERS", "PRETRAINED_DEFAULTS", "DiTDecoder", "DiffusionDecoder", "StableDiffusionImg2ImgDecoder",
           "VAEDecoder", "load_or_fit_prior", "make_diffusion_decoder", "make_dit_decoder", "make_sd_img2img_decoder",
           "make_vae_decoder", "render_set"]

import sys as _sys  # noqa: E402

from latentdd import _StageModule  # noqa: E402

_sys.modules[__name__].__class__ = _StageModule  # latentdd.render(...) calls latentdd.api.render
