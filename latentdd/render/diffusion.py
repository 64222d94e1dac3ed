"""Diffusion decoding: img2img from each synthetic latent with a class-conditional diffusion model.

D4M's recipe, in latent space from the start: each synthetic latent z0 (a k-means
centroid, say) is noised to an intermediate timestep, denoised by the diffusion model
with classifier-free guidance towards its own class, and only then decoded by the VAE.
Blurry "mean" latents come out as sharper, more typical members of their class.

    z0 (M, c, h, w) scaled latents, labels (M,)
      DDIMScheduler(prior's training schedule).set_timesteps(num_inference_steps)
      keep the last n = round(strength * num_inference_steps) timesteps t_1 > ... > t_n
      x = add_noise(z0, noise, t_1)                          noise ~ N(0, I) per latent
      for t in t_1..t_n:
          eps = eps(x, t, null) + g * (eps(x, t, label) - eps(x, t, null))
          x = DDIM step(eps, t, x, eta)
      images = adapter.from_vae(vae.decode(x))               exactly as VAEDecoder

strength 0 (or any strength with n = 0) is VAEDecoder(vae, adapter, batch_size) bit for
bit (decoding goes in batches of the decoder's batch_size, and VAE outputs differ in the
last bits between batch sizes); strength 1 starts from t_1 = the first inference timestep
(980 of 1000 for 50 steps), almost pure noise. The noise of latent i comes from a
torch.Generator seeded by (seed, i) alone and is drawn on the CPU, so it depends on
neither the batch size nor the device (the images then agree up to float rounding).
`LatentImg2Img` runs this loop in the batches of `latentdd.render.img2img.Img2ImgDecoder`;
`DiffusionDecoder` runs it with the prior fitted by `latentdd.prior.fit_prior`,
`latentdd.render.dit.DiTDecoder` with DiT.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from latentdd.errors import DataError
from latentdd.latents.types import SyntheticLatents
from latentdd.config import PositiveInt
from latentdd.render.img2img import NOISE_NOTE, BatchDenoiser, Eta, Guidance, Img2ImgDecoder, Steps, Strength
from latentdd.vae.base import LatentVAE, VAEInputAdapter

# eps = predict_noise(x (B, c, h, w), t (scalar timestep tensor), class labels (B,)) -> (B, c, h, w)
NoisePredictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def denoising_steps(strength: float, num_inference_steps: int) -> int:
    """How many of the num_inference_steps timesteps img2img runs: round(strength * steps), halves up."""
    return math.floor(strength * num_inference_steps + 0.5)


def img2img_timesteps(scheduler, strength: float, num_inference_steps: int) -> torch.Tensor:
    """The last `denoising_steps(...)` timesteps of scheduler.set_timesteps(num_inference_steps), decreasing."""
    if num_inference_steps > scheduler.config.num_train_timesteps:
        raise DataError(
            f"num_inference_steps {num_inference_steps} exceeds the model's {scheduler.config.num_train_timesteps} "
            "training timesteps"
        )
    scheduler.set_timesteps(num_inference_steps)
    kept = denoising_steps(strength, num_inference_steps)
    return scheduler.timesteps[len(scheduler.timesteps) - kept :]


def draw_noise(generators: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    """(len(generators), *shape) float32 N(0, I) on the CPU, row i from generators[i]."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators])


def guided_noise(predict_noise: NoisePredictor, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                 null_label: int, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: eps_uncond + g * (eps_cond - eps_uncond), (B, c, h, w); g = 1 skips eps_uncond."""
    if guidance_scale == 1:
        return predict_noise(x, t, labels)
    null = torch.full_like(labels, null_label)
    cond, uncond = predict_noise(torch.cat([x, x]), t, torch.cat([labels, null])).chunk(2)  # 2 x (B, c, h, w)
    return uncond + guidance_scale * (cond - uncond)


@torch.no_grad()
def denoise_from_latents(
    predict_noise: NoisePredictor,
    latents: torch.Tensor,
    labels: torch.Tensor,
    *,
    scheduler,
    timesteps: torch.Tensor,
    null_label: int,
    guidance_scale: float,
    eta: float,
    generators: list[torch.Generator],
) -> torch.Tensor:
    """One batch of img2img: z0 (B, c, h, w) scaled latents -> denoised (B, c, h, w) float32.

    scheduler: a DDIMScheduler on which set_timesteps was called; timesteps: the kept
    ones (`img2img_timesteps`); labels: (B,) class indices of the model; generators: one
    per latent, for the starting noise and (eta > 0) each step's noise.
    """
    shape = tuple(latents.shape[1:])
    z0 = latents.float()
    noise = draw_noise(generators, shape).to(z0.device)  # (B, c, h, w)
    x = scheduler.add_noise(z0, noise, timesteps[:1].repeat(len(z0)).to(z0.device))
    for t in timesteps:
        eps = guided_noise(predict_noise, scheduler.scale_model_input(x, t), t, labels, null_label, guidance_scale)
        variance_noise = draw_noise(generators, shape).to(z0.device) if eta > 0 else None
        x = scheduler.step(eps.float(), t, x, eta=eta, variance_noise=variance_noise).prev_sample
    return x


class LatentImg2Img(Img2ImgDecoder):
    """The batches of `Img2ImgDecoder.render` for class-conditional noise predictors: the DDIM loop above.

    Subclasses are dataclasses with fields vae, adapter, scheduler_config, strength,
    num_inference_steps, guidance_scale, eta, batch_size, and provide `predict_noise`,
    `null_label`, `model_labels`, `model_device` and `check_model`.
    """

    scheduler_config: dict

    @property
    def null_label(self) -> int:
        """The model's class index that means "no class" (classifier-free guidance)."""
        raise NotImplementedError

    def predict_noise(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x (B, c, h, w), timestep t, labels (B,) -> eps (B, c, h, w) float32."""
        raise NotImplementedError

    def model_labels(self, synthetic: SyntheticLatents) -> torch.Tensor:
        """(M,) int64 class indices of the model for the synthetic latents' labels."""
        raise NotImplementedError

    @property
    def model_device(self) -> torch.device:
        """Where the model's parameters live (batches are moved there)."""
        raise NotImplementedError

    @property
    def denoising_steps(self) -> int:
        return denoising_steps(self.strength, self.num_inference_steps)

    def make_scheduler(self):
        from diffusers import DDIMScheduler

        # A fresh scheduler per render: set_timesteps changes its state.
        return DDIMScheduler.from_config(self.scheduler_config)

    def batch_denoiser(self, synthetic: SyntheticLatents) -> BatchDenoiser:
        labels = self.model_labels(synthetic)
        scheduler = self.make_scheduler()
        timesteps = img2img_timesteps(scheduler, self.strength, self.num_inference_steps)
        device = self.model_device

        def denoise(start: int, stop: int, generators: list[torch.Generator]) -> torch.Tensor:
            return denoise_from_latents(
                self.predict_noise, synthetic.latents[start:stop].to(device), labels[start:stop].to(device),
                scheduler=scheduler, timesteps=timesteps, null_label=self.null_label,
                guidance_scale=self.guidance_scale, eta=self.eta, generators=generators,
            )

        return denoise

    def sampler_record(self) -> dict:
        """The img2img part of record(): what fixes the sampling."""
        scheduler = self.make_scheduler()
        timesteps = img2img_timesteps(scheduler, self.strength, self.num_inference_steps)
        return {
            "vae": self.vae.name,
            "adapter": self.adapter.identity(),
            "sampler": "DDIM img2img from the synthetic latent, classifier-free guidance",
            "strength": self.strength,
            "num_inference_steps": self.num_inference_steps,
            "denoising_steps": len(timesteps),
            "start_timestep": int(timesteps[0]) if len(timesteps) else None,
            "guidance_scale": self.guidance_scale,
            "eta": self.eta,
            "null_label": self.null_label,
            "noise_schedule": {k: scheduler.config[k] for k in
                               ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type",
                                "timestep_spacing")},
            "noise": NOISE_NOTE,
        }


@dataclass
class DiffusionDecoder(LatentImg2Img):
    """Img2img with the class-conditional prior fitted by `latentdd.prior.fit_prior`, then the VAE.

    unet: UNet2DModel with num_class_embeds = K + 1 for K classes (index K: the null class),
        trained on latents of this VAE. scheduler_config: its training schedule (the
        DDPMScheduler's config; sampling uses a DDIMScheduler built from it).
    strength: fraction of the num_inference_steps run, in [0, 1]; 0.5 (25 of 50), chosen
        with guidance 4 on Fashion-MNIST's val split among strengths 0.5 / 0.7 (D4M's) / 0.9
        and guidances 1.5 / 4 / 8 (results/decoder_search_fashion_mnist/).
    guidance_scale: 4.0, DiT's default for class-conditional sampling (D4M's 8 is for
        Stable Diffusion's text guidance), also best in that search. 1: no guidance.
    eta: DDIM's; 0 is deterministic after the starting noise.
    prior: the prior's name for the record ("prior:<hash16>").
    """

    vae: LatentVAE
    adapter: VAEInputAdapter
    unet: torch.nn.Module
    scheduler_config: dict
    strength: Strength = 0.5
    num_inference_steps: Steps = 50
    guidance_scale: Guidance = 4.0
    eta: Eta = 0.0
    batch_size: PositiveInt = 256
    prior: str = ""
    name = "diffusion"

    def __post_init__(self) -> None:
        super().__post_init__()
        if getattr(self.unet.config, "num_class_embeds", None) is None:
            raise DataError("the diffusion decoder needs a class-conditional UNet (config.num_class_embeds is None)")
        self.unet.eval().requires_grad_(False)

    @classmethod
    def from_prior(cls, directory: Path | str, vae: LatentVAE, adapter: VAEInputAdapter, *,
                   device: str | torch.device = "cpu", **params) -> DiffusionDecoder:
        """The decoder with the prior saved in `directory` (a fit_prior cache entry); params: the fields above."""
        from latentdd.prior.fit import load_prior

        unet, scheduler, report = load_prior(directory, device=device)
        return cls(vae, adapter, unet, dict(scheduler.config), prior=report.get("name", str(directory)), **params)

    @property
    def null_label(self) -> int:
        return int(self.unet.config.num_class_embeds) - 1

    @property
    def model_device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def predict_noise(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.unet(x.to(self.unet.dtype), t, class_labels=labels).sample.float()

    def model_labels(self, synthetic: SyntheticLatents) -> torch.Tensor:
        return synthetic.labels  # the prior was trained on the same class indices

    def check_model(self, synthetic: SyntheticLatents) -> None:
        classes = self.null_label
        if len(synthetic.class_names) != classes:
            raise DataError(
                f"the prior knows {classes} classes (+ the null class) but the synthetic latents have "
                f"{len(synthetic.class_names)}; fit the prior on latents of the same dataset"
            )
        config = self.unet.config
        size = config.sample_size
        h, w = (size, size) if isinstance(size, int) or size is None else tuple(size)
        expected = (config.in_channels, h, w)
        got = tuple(synthetic.latents.shape[1:])
        if got[0] != expected[0] or (size is not None and got != expected):
            raise DataError(
                f"the prior was trained on latents of shape {expected}; got {tuple(synthetic.latents.shape[1:])}"
            )

    def record(self) -> dict:
        return {"name": self.name, "prior": self.prior, **self.sampler_record()}

    @classmethod
    def from_config(cls, config, vae: LatentVAE, adapter: VAEInputAdapter, latents, cache_dir, *,
                    progress: bool = True) -> tuple[DiffusionDecoder, dict]:
        """The decoder of `config` (`latentdd.render.config.DecoderConfig`) with the prior of `config.prior` fitted
        to `latents`, or loaded from cache_dir/prior -> (decoder, its record)."""
        unet, scheduler, report = load_or_fit_prior(config, latents, cache_dir, device=vae.device, progress=progress)
        decoder = cls(vae, adapter, unet, dict(scheduler.config), strength=config.strength,
                      num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
                      eta=config.eta, batch_size=config.batch_size, prior=report["name"])
        fit = {k: report[k] for k in ("steps", "train_seconds", "final_loss", "num_parameters", "cached")}
        return decoder, decoder.record() | {"prior_fit": fit, "prior_config": report["config"]}


def load_or_fit_prior(config, latents, cache_dir, *, device, progress: bool = True):
    """The diffusion prior of `config.prior` (FitPriorConfig overrides) fitted to `latents`, or loaded
    from cache_dir/prior -> (unet, scheduler, report)."""
    from latentdd.prior import FitPriorConfig, fit_prior

    return fit_prior(latents, FitPriorConfig(**config.prior), Path(cache_dir).expanduser() / "prior",
                     progress=progress, device=device)
