"""How synthetic latents become images: the decoder and its sampler settings (each decoder's own defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from latentdd.config import Checked, NonNegativeFloat, PositiveInt, Probability, resolved_fields
from latentdd.errors import DataError
from latentdd.prior import FitPriorConfig
from latentdd.render import DECODERS, PRETRAINED_DEFAULTS, decoder_defaults


@dataclass
class DecoderConfig(Checked):
    """How synthetic latents become images: `vae` decodes them directly; `diffusion` first runs
    img2img from each latent with a class-conditional prior fitted to the train latents
    (`latentdd.prior.fit_prior`, cached by content under cache_dir/prior); `dit` and
    `sd-img2img` run img2img with a pretrained DiT / Stable Diffusion (`prior`: its hub id or
    folder; the latents must come from its VAE, --vae DIR/vae). strength, steps, guidance,
    eta and batch_size apply to every img2img decoder."""

    section: ClassVar[str] = "decoder"

    name: Literal[tuple(DECODERS)] = "vae"  # a key of latentdd.render.DECODERS
    # The sampler settings: None takes the decoder's own default (`latentdd.render.decoder_defaults`): diffusion
    # strength 0.5 and guidance 4 (chosen on a val split, results/decoder_search_fashion_mnist/), sd-img2img D4M's
    # 0.7 and 8, dit 0.7 and DiT's 4.
    strength: Probability | None = None  # share of the inference steps run from the latent
    num_inference_steps: PositiveInt | None = None
    guidance_scale: NonNegativeFloat | None = None  # classifier-free guidance (1: none)
    eta: NonNegativeFloat | None = None  # DDIM's (0: deterministic after the starting noise)
    batch_size: PositiveInt | None = None  # latents per decoder call
    # vae / diffusion: FitPriorConfig's fields of the fitted prior (missing ones: its defaults);
    # dit / sd-img2img: the pretrained model, a hub id or a folder (missing: PRETRAINED_DEFAULTS).
    prior: str | dict = field(default_factory=dict)
    class_map: list[int] | None = None  # dit: the ImageNet index of each dataset class
    imagenet_classes: str | None = None  # dit: an ImageNet class list, for classes named by WordNet id
    prompt: str = "{}"  # sd-img2img: a class's prompt, "{}" -> the class name (D4M's)
    class_prompts: list[str] | None = None  # sd-img2img: one prompt per class instead
    negative_prompt: str | None = None  # sd-img2img

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_prior()
        for key, owner in _DECODER_ONLY.items():
            if getattr(self, key) != DecoderConfig.__dataclass_fields__[key].default and self.name != owner:
                raise DataError(f"decoder.{key} is a setting of the {owner} decoder; the {self.name} decoder "
                                f"would ignore it (pass --decoder {owner}, or drop it)")
        # Completed with the decoder's own defaults, so that the saved config holds every value used.
        for key, value in decoder_defaults(self.name).items():
            if getattr(self, key) is None:
                setattr(self, key, value)

    def _check_prior(self) -> None:
        """Resolve `prior` to what the decoder uses: the full fitted-prior settings, or the pretrained model."""
        if self.name in PRETRAINED_DEFAULTS:
            if isinstance(self.prior, dict):
                # A saved config of the vae decoder holds the fitted prior's defaults: nothing set, no conflict.
                if self.prior and self.prior != resolved_fields(FitPriorConfig, {}):
                    raise DataError(
                        f"decoder.prior of the {self.name} decoder is the pretrained model, a hub id or a folder "
                        f"(--prior ORG/NAME or --prior DIR); got the fitted-prior settings {sorted(self.prior)}, "
                        "which only --decoder diffusion uses")
                self.prior = PRETRAINED_DEFAULTS[self.name]
            return
        if isinstance(self.prior, str):
            raise DataError(
                f"decoder.prior {self.prior!r} names a pretrained model, which only --decoder dit and "
                f"--decoder sd-img2img load; the {self.name} decoder "
                + ("fits its prior: set its fields with --prior-set KEY=VALUE or a decoder.prior mapping"
                   if self.name == "diffusion" else "uses none"))
        # Checked here and completed with the defaults, so that the saved config holds every value used.
        self.prior = resolved_fields(FitPriorConfig, self.prior)


# Settings only one decoder reads: set for another, they would be silently ignored.
_DECODER_ONLY = {"class_map": "dit", "imagenet_classes": "dit", "prompt": "sd-img2img",
                 "class_prompts": "sd-img2img", "negative_prompt": "sd-img2img"}
