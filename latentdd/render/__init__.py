"""Rendering: synthetic latents -> synthetic images at the dataset's shape.

A decoder is a small object with `render(synthetic, seed) -> SyntheticImages`, an image a
latent, and `record() -> dict` (the decoder part of the protocol record). `render_set` makes
a set's stored images from those: where a set tiles several latents into each stored image
(`SyntheticLatents.tile_factor`), it tiles them after the decoder has rendered each whole
(as does `latentdd.render.parallel.render_split`). `DECODERS` maps each name to the
decoder's class, and is what the CLI's --decoder choices and
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

A decoder class is built by its `from_config(config, vae, adapter, latents, cache_dir, progress=)
-> (decoder, record)`: config has the fields of `latentdd.render.config.DecoderConfig`; it checks
that the model fits the train latents before it returns, so that nothing is distilled in vain.
Adding a decoder: a module with such a class, and its class in `DECODERS`.
"""

from __future__ import annotations

import dataclasses

from latentdd.data.base import SyntheticImages
from latentdd.latents.types import SyntheticLatents
from latentdd.nn.factorization import tile_set
from latentdd.render.diffusion import DiffusionDecoder, load_or_fit_prior
from latentdd.render.dit import DiTDecoder
from latentdd.render.sd_img2img import StableDiffusionImg2ImgDecoder
from latentdd.render.vae import VAEDecoder


def render_set(decoder, synthetic: SyntheticLatents, *, seed: int = 0) -> SyntheticImages:
    """The images `synthetic` stores, rendered by `decoder`: one a latent, or with `synthetic.tile_factor`
    f > 1, f x f latents of a class, each rendered whole, pooled and tiled into one (`tile_set`)."""
    return tile_set(decoder.render(synthetic, seed=seed), synthetic.tile_factor)


# Every decoder, by its name: a class with `name` and `from_config(config, vae, adapter, latents, cache_dir,
# progress=) -> (decoder, record)`. Each owns its defaults (its dataclass fields): D4M's strength 0.7 and guidance 8
# for sd-img2img, the val-chosen 0.5 and 4 for diffusion, ... `DecoderConfig` takes them unless a setting is given.
DECODERS: dict[str, type] = {cls.name: cls for cls in (VAEDecoder, DiffusionDecoder, DiTDecoder,
                                                        StableDiffusionImg2ImgDecoder)}
SAMPLER_SETTINGS = ("strength", "num_inference_steps", "guidance_scale", "eta", "batch_size")


def decoder_defaults(name: str) -> dict:
    """The sampler settings decoder `name` defaults to ({} of those it does not have: vae has batch_size only)."""
    return {f.name: f.default for f in dataclasses.fields(DECODERS[name])
            if f.name in SAMPLER_SETTINGS and f.default is not dataclasses.MISSING}


# The model each pretrained decoder loads when config.prior names none: its `model` field's default.
PRETRAINED_DEFAULTS: dict[str, str] = {name: cls.model for name, cls in DECODERS.items() if hasattr(cls, "model")}

__all__ = ["DECODERS", "PRETRAINED_DEFAULTS", "DiTDecoder", "DiffusionDecoder", "StableDiffusionImg2ImgDecoder",
           "VAEDecoder", "decoder_defaults", "load_or_fit_prior", "render_set"]

import sys as _sys  # noqa: E402

from latentdd import _StageModule  # noqa: E402

_sys.modules[__name__].__class__ = _StageModule  # latentdd.render(...) calls latentdd.api.render
