"""The `dit` decoder: img2img from each synthetic latent with a pretrained class-conditional DiT.

DiT (facebook/DiT-XL-2-256) was trained on ImageNet-1k latents of its own VAE at 256 px
(32x32x4 latents), so the latents must come from that VAE: encode with
`--vae DIR/vae` (`load_vae("facebook/DiT-XL-2-256/vae")`). `load_dit` gives the
transformer and its noise schedule, and `DiTDecoder` runs latentdd's DDIM img2img loop
(`latentdd.render.diffusion.LatentImg2Img`) with it. DiT predicts 2C channels (noise and
learned variance); the first C are the noise. Its null class is
config.num_embeds_ada_norm (1000), DiT's label-dropout class. Dataset classes map to
ImageNet indices through `class_map`, or through their WordNet ids and
`latentdd.data.imagenet` with a user-supplied class list.

    latentdd distill --dataset imagefolder --root ~/imagenette --image-size 256 --vae DIR/vae \
        --decoder dit --prior DIR --imagenet-classes LOC_synset_mapping.txt ...

No weights can be downloaded where latentdd is tested: `load_dit` raises LatentDDError
saying what to download and how to pass the folder, and the tests run the decoder end to
end on a tiny randomly initialised DiT built from a config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from latentdd.data.imagenet import imagenet_indices
from latentdd.errors import DataError
from latentdd.latents.types import Latents, SyntheticLatents
from latentdd.config import PositiveInt
from latentdd.render.diffusion import LatentImg2Img
from latentdd.render.img2img import Eta, Guidance, Steps, Strength
from latentdd.render.hub import dtype_kwargs, load_pretrained, source_name
from latentdd.vae.base import LatentVAE, VAEInputAdapter

DIT_DEFAULT = "facebook/DiT-XL-2-256"


def load_dit(source: str = DIT_DEFAULT, *, device: str | torch.device = "cpu", torch_dtype: torch.dtype | None = None,
             local_files_only: bool = False) -> tuple[Any, dict]:
    """(DiTTransformer2DModel frozen in eval mode, its scheduler config) from a DiTPipeline layout.

    source: a hub id (facebook/DiT-XL-2-256) or a directory with transformer/ and scheduler/
    subfolders. The latents must come from its VAE: load_vae(f"{source}/vae").
    """
    from diffusers import DDIMScheduler, DiTTransformer2DModel

    def load(where: str, cache_only: bool):
        transformer = DiTTransformer2DModel.from_pretrained(
            where, subfolder="transformer", local_files_only=cache_only, use_safetensors=True,
            **dtype_kwargs(torch_dtype))
        scheduler = DDIMScheduler.load_config(where, subfolder="scheduler", local_files_only=cache_only)
        return transformer, dict(scheduler)

    transformer, scheduler_config = load_pretrained(
        load, source, "DiT", local_files_only=local_files_only, subfolders="transformer/ and scheduler/",
        use="pass DIR as the DiT (--decoder dit --prior DIR, or decoder.prior: DIR in YAML; load_dit('DIR') "
            "in Python) and DIR/vae as the VAE (--vae DIR/vae)")
    return transformer.to(device).eval().requires_grad_(False), scheduler_config


# ---------------------------------------------------------------- DiT


@dataclass
class DiTDecoder(LatentImg2Img):
    """Img2img with a class-conditional DiT (`load_dit`), then latentdd's VAE.

    transformer: DiTTransformer2DModel (learned sigma: out_channels = 2 * in_channels; the
        first in_channels are the noise). scheduler_config: its schedule (sampling uses a
        DDIMScheduler built from it).
    class_map: the ImageNet index of each dataset class (len K), or None to look each
        class name up as a WordNet id in `imagenet_classes` (see `latentdd.data.imagenet`).
    strength 0.7 as D4M; guidance_scale 4.0, DiTPipeline's default; the guidance mixes
        all C noise channels (as diffusers does; the original DiT code guided only 3).
    model: the DiT's name for the record.
    """

    vae: LatentVAE
    adapter: VAEInputAdapter
    transformer: torch.nn.Module
    scheduler_config: dict
    class_map: list[int] | None = None
    imagenet_classes: str | None = None
    strength: Strength = 0.7
    num_inference_steps: Steps = 50
    guidance_scale: Guidance = 4.0
    eta: Eta = 0.0
    batch_size: PositiveInt = 32
    model: str = DIT_DEFAULT
    name = "dit"

    def __post_init__(self) -> None:
        super().__post_init__()
        if getattr(self.transformer.config, "num_embeds_ada_norm", None) is None:
            raise DataError("the DiT decoder needs a class-conditional DiT (config.num_embeds_ada_norm is None)")
        self.transformer.eval().requires_grad_(False)

    @property
    def null_label(self) -> int:
        return int(self.transformer.config.num_embeds_ada_norm)

    @property
    def model_device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def predict_noise(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        timestep = t.reshape(1).to(x.device).expand(len(x))  # DiT embeds one timestep per sample
        out = self.transformer(x.to(self.transformer.dtype), timestep=timestep, class_labels=labels).sample
        return out[:, :c].float()  # (B, c, h, w): drop the learned variance channels

    def resolve_class_map(self, class_names: list[str]) -> list[int]:
        """The DiT class index of each dataset class."""
        mapping = imagenet_indices(class_names, self.class_map, self.imagenet_classes, self.null_label, "DiT")
        if mapping is None:
            raise DataError(
                "DiT is conditioned on ImageNet classes: pass class_map (one ImageNet index per dataset class: "
                "--class-map 1,3,... or decoder.class_map) or name the classes by WordNet id (n01440764, ...) with an "
                f"imagenet_classes file (--imagenet-classes FILE); got {class_names[:3]}"
            )
        return mapping

    def model_labels(self, synthetic: SyntheticLatents) -> torch.Tensor:
        return torch.tensor(self.resolve_class_map(list(synthetic.class_names)), dtype=torch.long)[synthetic.labels]

    def check_model(self, synthetic: SyntheticLatents) -> None:
        config = self.transformer.config
        expected = (config.in_channels, config.sample_size, config.sample_size)
        if tuple(synthetic.latents.shape[1:]) != expected:
            raise DataError(
                f"{self.model} takes latents of shape {expected} (images of {config.sample_size * 8} px through its VAE); "
                f"got {tuple(synthetic.latents.shape[1:])}"
            )

    def record(self) -> dict:
        return {"name": self.name, "model": self.model, "class_map": self.class_map,
                "imagenet_classes": self.imagenet_classes, **self.sampler_record()}

    @classmethod
    def from_config(cls, config, vae: LatentVAE, adapter: VAEInputAdapter, latents: Latents, cache_dir, *,
                    progress: bool = True) -> tuple[DiTDecoder, dict]:
        """The DiT of `config.prior` (hub id or folder) -> (DiTDecoder, its record); `config` has the fields of
        `latentdd.render.config.DecoderConfig`. The train latents' shape and classes are checked now, before any
        distilling."""
        transformer, scheduler_config = load_dit(config.prior, device=vae.device)
        decoder = cls(vae, adapter, transformer, scheduler_config, class_map=config.class_map,
                      imagenet_classes=config.imagenet_classes, strength=config.strength,
                      num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
                      eta=config.eta, batch_size=config.batch_size, model=source_name(config.prior))
        decoder.check_model(latents)  # Latents carry .latents and .class_names as SyntheticLatents do
        decoder.resolve_class_map(list(latents.class_names))
        return decoder, decoder.record()
