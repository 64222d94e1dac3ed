"""diffusers `AutoencoderKL` (the Stable Diffusion / SDXL / SD3 / FLUX VAE family) as a LatentVAE.

scaling_factor and shift_factor (None -> 0) are read from the model's config; so are the
latent channels, the downsampling factor (2 ** (len(block_out_channels) - 1)) and the
image channels. diffusers VAEs take and return [-1, 1]; this wrapper converts, so callers
always see [0, 1].
"""

from __future__ import annotations

import torch

from latentdd.errors import LatentDDError
from latentdd.vae.base import LatentVAE, check_input_size


def _require_diffusers():
    try:
        import diffusers
    except ImportError as err:
        raise LatentDDError("this VAE needs the diffusers package: pip install diffusers") from err
    return diffusers


class DiffusersKL(LatentVAE):
    """Wrap an `AutoencoderKL`.

    model: a diffusers AutoencoderKL. name: its identity (hub id, directory or "fit:<hash>").
    input_size: image side to encode at; None -> config.sample_size.
    input_resize: default policy of `VAEInputAdapter` for this VAE ("resize" or "pad").
    trainable: keep gradients on the weights (fitting); loaded VAEs are frozen.
    """

    def __init__(
        self,
        model,
        *,
        name: str,
        input_size: int | None = None,
        input_resize: str = "resize",
        trainable: bool = False,
    ):
        super().__init__()
        config = model.config
        self.model = model if trainable else model.eval().requires_grad_(False)
        if config.in_channels not in (1, 3) or config.out_channels != config.in_channels:
            raise LatentDDError(
                f"{name}: in_channels {config.in_channels} / out_channels {config.out_channels} are not 1/1 or 3/3"
            )
        factor = 2 ** (len(config.block_out_channels) - 1)
        if input_size is None:
            sample_size = config.sample_size
            input_size = int(sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size)
        self.name = name
        self.input_channels = config.in_channels
        self.input_size = check_input_size(input_size, factor, name)
        self.input_resize = input_resize
        self.latent_shape = (config.latent_channels, input_size // factor, input_size // factor)
        self.scaling_factor = float(config.scaling_factor)
        self.shift_factor = float(config.get("shift_factor") or 0.0)

    @classmethod
    def from_config(cls, config: dict, *, name: str = "random:AutoencoderKL", seed: int = 0, **kwargs) -> "DiffusersKL":
        """A randomly initialised AutoencoderKL built from `config` (AutoencoderKL's __init__
        arguments); weights are drawn from `seed`, leaving the global RNG untouched."""
        diffusers = _require_diffusers()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = diffusers.AutoencoderKL(**config)
        return cls(model, name=name, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        source: str,
        *,
        subfolder: str | None = None,
        local_files_only: bool = False,
        name: str | None = None,
        device: str | torch.device = "cpu",
        **kwargs,
    ) -> "DiffusersKL":
        """Load with `AutoencoderKL.from_pretrained(source, subfolder=...)`: a hub id or a
        directory written by `save_pretrained`. diffusers' errors pass through (`load_vae`
        turns them into instructions)."""
        diffusers = _require_diffusers()
        model = diffusers.AutoencoderKL.from_pretrained(
            source, subfolder=subfolder, local_files_only=local_files_only, torch_dtype=torch.float32,
            use_safetensors=True,  # never a pickled .bin
        )
        name = name or (f"{source}/{subfolder}" if subfolder else source)
        return cls(model, name=name, **kwargs).to(device)

    def posterior(self, images: torch.Tensor):
        """images (B, C, S, S) in [0, 1] -> diffusers' DiagonalGaussianDistribution over raw (B, c, h, w) latents."""
        return self.model.encode(images * 2 - 1).latent_dist

    def encode_unscaled(self, images: torch.Tensor, sample: bool, generator: torch.Generator | None) -> torch.Tensor:
        posterior = self.posterior(images)
        return posterior.sample(generator=generator) if sample else posterior.mode()

    def decode_unscaled(self, latents: torch.Tensor) -> torch.Tensor:
        return (self.model.decode(latents).sample + 1) / 2  # (B, C, S, S), [-1, 1] -> [0, 1]
