"""Diffusion priors over latents: the small class-conditional UNet fitted to a dataset's
latents (`fit_prior`), and loaders for pretrained DiT and Stable Diffusion (`pretrained`).

The decoders that run them img2img from synthetic latents are
`latentdd.diffusion_render.DiffusionDecoder` (fitted prior),
`latentdd.prior.pretrained.DiTDecoder` and `StableDiffusionImg2ImgDecoder`.
"""

from latentdd.prior.fit import (
    FitPriorConfig,
    fit_prior,
    latents_identity,
    load_prior,
    prior_hash,
)
from latentdd.prior.pretrained import (
    DiTDecoder,
    StableDiffusionImg2ImgDecoder,
    imagenet_class_index,
    load_dit,
    load_imagenet_classes,
    load_sd_img2img,
)

__all__ = [
    "DiTDecoder",
    "FitPriorConfig",
    "StableDiffusionImg2ImgDecoder",
    "fit_prior",
    "imagenet_class_index",
    "latents_identity",
    "load_dit",
    "load_imagenet_classes",
    "load_prior",
    "load_sd_img2img",
    "prior_hash",
]
