"""The diffusion prior over latents: the small class-conditional UNet fitted to a dataset's
latents (`fit_prior`). `latentdd.render.diffusion.DiffusionDecoder` runs it img2img from
synthetic latents; the pretrained DiT and Stable Diffusion decoders are
`latentdd.render.dit` and `latentdd.render.sd_img2img`.
"""

from latentdd.prior.fit import (
    FitPriorConfig,
    fit_prior,
    latents_identity,
    load_prior,
    prior_hash,
)

__all__ = ["FitPriorConfig", "fit_prior", "latents_identity", "load_prior", "prior_hash"]
