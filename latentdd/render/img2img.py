"""What every img2img decoder shares: its parameters' checks, the per-latent noise, and the render loop.

An img2img decoder denoises each synthetic latent part of the way with a diffusion model,
then decodes it with latentdd's VAE exactly as `VAEDecoder` does:

    steps = self.denoising_steps            0: plain VAE decoding, bit for bit
    self.check_model(synthetic)             DataError before any work if the model does not fit
    denoise = self.batch_denoiser(synthetic)
    for each batch [start, stop) of batch_size latents:
        z = denoise(start, stop, latent_generators(seed, start, stop))    (B, c, h, w) float32
    images = VAEDecoder(vae, adapter, batch_size).render(denoised latents)

`Img2ImgDecoder.render` holds this loop once; `latentdd.render.diffusion.LatentImg2Img`
(the fitted prior, DiT) and `latentdd.render.sd_img2img.StableDiffusionImg2ImgDecoder`
provide the model-specific parts. The noise of latent i comes from a torch.Generator
seeded by (seed, i) alone and is drawn on the CPU, so the images depend on neither the
batch size nor the device (up to float rounding).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Annotated

import torch
from pydantic import Field

from latentdd.config import Checked, PositiveInt
from latentdd.data.base import SyntheticImages
from latentdd.latents.types import SyntheticLatents
from latentdd.render.vae import VAEDecoder
from latentdd.vae.base import LatentVAE, VAEInputAdapter

NOISE_NOTE = "noise of latent i from torch.Generator seeded by sha256(f'{seed}:{i}'), drawn on the CPU"

# denoise(start, stop, generators) -> the denoised latents start..stop-1, (stop - start, c, h, w) float32
BatchDenoiser = Callable[[int, int, list[torch.Generator]], torch.Tensor]


# The sampler settings every img2img decoder declares, checked when one is built (`latentdd.config.Checked`).
Strength = Annotated[float, Field(ge=0, le=1, description="0: plain VAE decoding, 1: from almost pure noise")]
Steps = PositiveInt
Guidance = Annotated[float, Field(ge=0, allow_inf_nan=False, description="1: no guidance, 0: unconditional")]
Eta = Annotated[float, Field(ge=0, le=1, description="0: deterministic DDIM, 1: DDPM-like")]


def latent_generators(seed: int, start: int, stop: int) -> list[torch.Generator]:
    """CPU generators for latents start..stop-1: latent i's is seeded by sha256(f"{seed}:{i}") alone."""
    out = []
    for i in range(start, stop):
        digest = hashlib.sha256(f"{int(seed)}:{i}".encode()).digest()
        out.append(torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1))
    return out


class Img2ImgDecoder(Checked):
    """render() shared by the img2img decoders (see the module docstring).

    Subclasses are dataclasses with fields vae, adapter, strength, num_inference_steps,
    guidance_scale, eta, batch_size, and provide `denoising_steps`, `check_model` and
    `batch_denoiser`.
    """

    vae: LatentVAE
    adapter: VAEInputAdapter
    strength: Strength
    num_inference_steps: Steps
    guidance_scale: Guidance
    eta: Eta
    batch_size: PositiveInt

    @property
    def denoising_steps(self) -> int:
        """How many of the num_inference_steps run from each latent (0: plain VAE decoding)."""
        raise NotImplementedError

    def check_model(self, synthetic: SyntheticLatents) -> None:
        """Raise DataError when the model does not fit the latents (shape, classes, latent space)."""
        raise NotImplementedError

    def batch_denoiser(self, synthetic: SyntheticLatents) -> BatchDenoiser:
        """Set up one render of `synthetic` (labels, prompts, schedule) -> the function that denoises a batch."""
        raise NotImplementedError

    @torch.no_grad()
    def render(self, synthetic: SyntheticLatents, *, seed: int = 0, first_index: int = 0) -> SyntheticImages:
        """(M, c, h, w) latents -> (M, C, H, W) images in [0, 1]; labels, weights and class names carried.

        Deterministic for a seed: latent i's noise depends on (seed, first_index + i) only.
        first_index: where `synthetic` starts in the whole set, when it is one process's slice
        of it (`latentdd.render.parallel`), so that every latent gets the noise it gets in one piece.
        """
        plain = VAEDecoder(self.vae, self.adapter, self.batch_size)
        if self.denoising_steps == 0:
            return plain.render(synthetic, seed=seed)
        self.check_model(synthetic)
        denoise = self.batch_denoiser(synthetic)
        parts = []
        for start in range(0, len(synthetic), self.batch_size):
            stop = min(start + self.batch_size, len(synthetic))
            generators = latent_generators(seed, first_index + start, first_index + stop)
            parts.append(denoise(start, stop, generators).float().cpu())
        denoised = torch.cat(parts) if parts else synthetic.latents.float()  # (M, c, h, w)
        return plain.render(dataclasses.replace(synthetic, latents=denoised), seed=seed)
