"""The identity latent space: `--vae pixel`. Latents ARE the images, so every distiller and
renderer runs on pixels in the same code as in a VAE's space -- the reference that calibrates
latentdd's distillers against the published pixel-space figures (PROTOCOLS.md section 2)."""

from __future__ import annotations

import torch

from latentdd.errors import DataError
from latentdd.vae.base import LatentVAE


class _StraightThroughClamp(torch.autograd.Function):
    """clamp(x, 0, 1) forward, identity backward: a pixel pushed past 0 or 1 keeps its gradient,
    so an optimiser can bring it back (a plain clamp would freeze it there for good)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class PixelVAE(LatentVAE):
    """Identity encoder and decoder: (B, C, S, S) images in [0, 1] <-> latents of the same shape.

    channels, input_size: the dataset's image channels and side (input_size may be larger,
    e.g. 32 for 28 px images: the adapter then zero-pads). Scaling 1, shift 0, no weights.
    """

    def __init__(self, channels: int, input_size: int) -> None:
        super().__init__()
        self.name = "pixel"
        self.input_channels = int(channels)
        self.input_size = int(input_size)
        self.input_resize = "pad"
        self.latent_shape = (self.input_channels, self.input_size, self.input_size)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # carries the device

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def encode_unscaled(self, images: torch.Tensor, sample: bool, generator: torch.Generator | None) -> torch.Tensor:
        return images.clone()

    def decode_unscaled(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, C, S, S) -> the same pixels clamped to [0, 1]; gradients pass the clamp
        (straight through), so optimised pixels that overshoot can come back."""
        if latents.ndim != 4 or tuple(latents.shape[1:]) != tuple(self.latent_shape):
            raise DataError(f"the pixel space decodes (B, {', '.join(map(str, self.latent_shape))}); "
                            f"got {tuple(latents.shape)}")
        return _StraightThroughClamp.apply(latents.to(self.device, torch.float32))
