"""The `sd-img2img` decoder: D4M's Stable Diffusion img2img from each synthetic latent.

A Stable Diffusion 1.x pipeline directory or hub id: `load_sd_img2img` gives a diffusers
StableDiffusionImg2ImgPipeline, and `StableDiffusionImg2ImgDecoder` calls it with
`image=` the (B, 4, h, w) latents (diffusers' img2img treats a 4-channel `image` as
latents that are already scaled), the class name as the prompt, and output_type="latent";
latentdd's VAE and adapter then decode, as VAEDecoder does. The latents must come from
the pipeline's own VAE (same latent channels and scaling factor): `--vae DIR/vae`.
D4M's recipe: strength 0.7 (35 of 50 steps), guidance 8.

    latentdd distill --dataset imagefolder --root ~/imagenette --image-size 512 --vae DIR/vae \
        --decoder sd-img2img --prior DIR --strength 0.7 --guidance-scale 8 ...

No weights can be downloaded where latentdd is tested: `load_sd_img2img` raises
LatentDDError saying what to download and how to pass the folder, and the tests run the
decoder end to end on a tiny randomly initialised pipeline built from configs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from latentdd.errors import DataError
from latentdd.latents.types import Latents, SyntheticLatents
from latentdd.render.hub import dtype_kwargs, load_pretrained, source_name
from latentdd.config import PositiveInt
from latentdd.render.img2img import NOISE_NOTE, BatchDenoiser, Eta, Guidance, Img2ImgDecoder, Steps, Strength
from latentdd.vae.base import LatentVAE, VAEInputAdapter

SD_DEFAULT = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def load_sd_img2img(source: str = SD_DEFAULT, *, device: str | torch.device = "cpu",
                    torch_dtype: torch.dtype | None = None, local_files_only: bool = False):
    """A StableDiffusionImg2ImgPipeline (no safety checker: the outputs are training data, not shown to users).

    source: a hub id or a Stable Diffusion 1.x pipeline directory (unet/, vae/,
    text_encoder/, tokenizer/, scheduler/). The latents must come from its VAE: load_vae(f"{source}/vae").
    """
    from diffusers import StableDiffusionImg2ImgPipeline

    def load(where: str, cache_only: bool):
        return StableDiffusionImg2ImgPipeline.from_pretrained(
            where, local_files_only=cache_only, use_safetensors=True, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False, **dtype_kwargs(torch_dtype))

    pipeline = load_pretrained(
        load, source, "Stable Diffusion", local_files_only=local_files_only,
        subfolders="unet/, vae/, text_encoder/, tokenizer/ and scheduler/",
        use="pass DIR as the Stable Diffusion model (--decoder sd-img2img --prior DIR, or decoder.prior: DIR in "
            "YAML; load_sd_img2img('DIR') in Python) and DIR/vae as the VAE (--vae DIR/vae)")
    return pipeline.to(device)


@dataclass
class StableDiffusionImg2ImgDecoder(Img2ImgDecoder):
    """D4M's decoder: Stable Diffusion img2img from each synthetic latent, prompted with its class name.

    vae / adapter: latentdd's VAE that encoded the latents (the pipeline's VAE: same
        scaling factor, 4 latent channels, no shift) and the dataset adapter; they decode.
    pipeline: a StableDiffusionImg2ImgPipeline (`load_sd_img2img`); its own scheduler runs
        (PNDM for SD 1.5, as in D4M); eta reaches it only if it is a DDIM-like scheduler.
    strength, num_inference_steps, guidance_scale: D4M's 0.7, 50, 8; diffusers runs
        int(strength * num_inference_steps) steps.
    prompt: format string of a class's prompt ("{}" -> the class name, as D4M);
        class_prompts: one prompt per class instead. negative_prompt: None -> "".
    model: the pipeline's name for the record.
    """

    vae: LatentVAE
    adapter: VAEInputAdapter
    pipeline: Any
    strength: Strength = 0.7
    num_inference_steps: Steps = 50
    guidance_scale: Guidance = 8.0
    eta: Eta = 0.0
    batch_size: PositiveInt = 16
    prompt: str = "{}"
    class_prompts: list[str] | None = None
    negative_prompt: str | None = None
    model: str = SD_DEFAULT
    name = "sd-img2img"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.pipeline.set_progress_bar_config(disable=True)  # one bar per batch would only be noise

    @property
    def denoising_steps(self) -> int:
        """What diffusers' img2img runs: int(strength * steps), rounding down."""
        return min(int(self.num_inference_steps * self.strength), self.num_inference_steps)

    def prompts(self, class_names: list[str]) -> list[str]:
        if self.class_prompts is not None:
            if len(self.class_prompts) != len(class_names):
                raise DataError(f"class_prompts has {len(self.class_prompts)} prompts for {len(class_names)} classes")
            return list(self.class_prompts)
        return [self.prompt.format(name) for name in class_names]

    def check_model(self, synthetic: SyntheticLatents) -> None:
        c = synthetic.latents.shape[1]
        unet_channels = self.pipeline.unet.config.in_channels
        if c != 4 or unet_channels != 4:
            raise DataError(
                f"Stable Diffusion img2img takes 4-channel latents (diffusers reads a 4-channel `image` as latents); "
                f"got {c}-channel latents for a {unet_channels}-channel UNet"
            )
        if self.vae.shift_factor != 0:
            raise DataError(f"{self.vae.name} shifts its latents by {self.vae.shift_factor}; SD 1.x latents are unshifted")
        sd_vae = getattr(self.pipeline, "vae", None)
        if sd_vae is not None and abs(float(sd_vae.config.scaling_factor) - self.vae.scaling_factor) > 1e-6:
            raise DataError(
                f"the latents were scaled by {self.vae.scaling_factor} ({self.vae.name}) but the pipeline's VAE "
                f"scales by {sd_vae.config.scaling_factor}; encode with the pipeline's VAE (DIR/vae)"
            )

    def batch_denoiser(self, synthetic: SyntheticLatents) -> BatchDenoiser:
        prompts = self.prompts(list(synthetic.class_names))

        def denoise(start: int, stop: int, generators: list[torch.Generator]) -> torch.Tensor:
            labels = synthetic.labels[start:stop].tolist()
            return self.pipeline(
                prompt=[prompts[k] for k in labels],
                negative_prompt=None if self.negative_prompt is None else [self.negative_prompt] * len(labels),
                image=synthetic.latents[start:stop].to(self.pipeline.device),  # (B, 4, h, w): taken as latents
                strength=self.strength,
                num_inference_steps=self.num_inference_steps,
                guidance_scale=self.guidance_scale,
                eta=self.eta,
                generator=generators,
                output_type="latent",
            ).images  # (B, 4, h, w) scaled latents

        return denoise

    def record(self) -> dict:
        return {
            "name": self.name,
            "model": self.model,
            "vae": self.vae.name,
            "adapter": self.adapter.identity(),
            "sampler": f"diffusers StableDiffusionImg2ImgPipeline from the synthetic latent, "
                       f"{type(self.pipeline.scheduler).__name__}",
            "strength": self.strength,
            "num_inference_steps": self.num_inference_steps,
            "denoising_steps": self.denoising_steps,
            "guidance_scale": self.guidance_scale,
            "eta": self.eta,
            "prompt": self.prompt if self.class_prompts is None else self.class_prompts,
            "negative_prompt": self.negative_prompt,
            "noise": NOISE_NOTE,
        }

    @classmethod
    def from_config(cls, config, vae: LatentVAE, adapter: VAEInputAdapter, latents: Latents, cache_dir, *,
                    progress: bool = True) -> tuple[StableDiffusionImg2ImgDecoder, dict]:
        """The pipeline of `config.prior` (hub id or folder) -> (decoder, its record); `config` has the fields of
        `latentdd.render.config.DecoderConfig`. The train latents' space and classes are checked now, before any
        distilling."""
        pipeline = load_sd_img2img(config.prior, device=vae.device)
        decoder = cls(
            vae, adapter, pipeline, strength=config.strength, num_inference_steps=config.num_inference_steps,
            guidance_scale=config.guidance_scale, eta=config.eta, batch_size=config.batch_size, prompt=config.prompt,
            class_prompts=config.class_prompts, negative_prompt=config.negative_prompt, model=source_name(config.prior))
        decoder.check_model(latents)  # Latents carry .latents as SyntheticLatents do
        decoder.prompts(list(latents.class_names))
        return decoder, decoder.record()
