"""The one interface every VAE implements, and the adapter between dataset images and VAEs.

Every latent in latentdd is *scaled*: z_scaled = (z - shift_factor) * scaling_factor, the
space diffusion models work in; both factors come from the model's config (or, for the
fitted VAE, from its training data), never from a constant in this code.

    dataset images (B, C, H, W) in [0, 1]
        --VAEInputAdapter.to_vae-->   (B, input_channels, input_size, input_size) in [0, 1]
        --LatentVAE.encode-->         (B, c, h, w) float32, scaled
        --LatentVAE.decode-->         (B, input_channels, input_size, input_size) in [0, 1]
        --VAEInputAdapter.from_vae--> (B, C, H, W) in [0, 1]
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod

import torch
import torch.nn as nn

from latentdd.data.transforms import ImageTransform
from latentdd.errors import DataError, LatentDDError

# Inputs may leave [0, 1] by float rounding after resampling; anything further is a bug upstream.
_RANGE_TOLERANCE = 1e-3


class LatentVAE(nn.Module, ABC):
    """A VAE seen as `encode: images in [0, 1] -> scaled latents` and `decode: back`.

    Subclasses set the attributes below in `__init__` (reading them from the model, never
    typing them in) and implement `encode_unscaled` / `decode_unscaled`; this class owns
    input checks, the latent scaling, clamping and `identity()`.

    name: identity of the weights: a hub id, a path, or "fit:<hash>".
    input_size: side of the square images the VAE is given. For fully convolutional
        models this is a choice (any multiple of the downsampling factor works); it fixes
        `latent_shape`.
    input_channels: 1 or 3.
    input_resize: how `VAEInputAdapter` should bring dataset images to `input_size` by
        default: "resize" (bilinear) or "pad" (zero padding, e.g. 28 -> 32).
    latent_shape: (c, h, w) of one encoded `input_size` image.
    scaling_factor, shift_factor: z_scaled = (z - shift_factor) * scaling_factor.
    """

    name: str
    input_size: int
    input_channels: int
    input_resize: str = "resize"
    latent_shape: tuple[int, int, int]
    scaling_factor: float = 1.0
    shift_factor: float = 0.0

    @abstractmethod
    def encode_unscaled(self, images: torch.Tensor, sample: bool, generator: torch.Generator | None) -> torch.Tensor:
        """images (B, input_channels, S, S) in [0, 1] -> raw latents (B, c, h, w)."""

    @abstractmethod
    def decode_unscaled(self, latents: torch.Tensor) -> torch.Tensor:
        """raw latents (B, c, h, w) -> images (B, input_channels, S, S), about [0, 1], not clamped."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.input_channels, self.input_size, self.input_size)

    def encode(
        self, images: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """images (B, input_channels, input_size, input_size) in [0, 1] -> (B, c, h, w) float32 scaled latents.

        Deterministic by default (the posterior mean); sample=True draws from the posterior
        with `generator` (VAEs without a posterior, such as TAESD, refuse). The result lies
        on the VAE's device. Gradients flow; wrap in torch.no_grad() when not needed.
        """
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise DataError(
                f"{self.name} encodes images of shape (B, {', '.join(map(str, self.input_shape))}); "
                f"got {tuple(images.shape)}. Bring dataset images to the VAE with VAEInputAdapter.to_vae"
            )
        images = images.to(self.device, torch.float32)
        if images.numel():
            lo, hi = images.min().item(), images.max().item()
            if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
                raise DataError(f"images must lie in [0, 1] (latentdd never uses [-1, 1]); got [{lo:.3g}, {hi:.3g}]")
        z = self.encode_unscaled(images, sample, generator)
        return ((z - self.shift_factor) * self.scaling_factor).float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """scaled latents (B, c, h, w) -> images (B, input_channels, input_size, input_size) in [0, 1].

        Inverts the scaling, decodes and clamps to [0, 1]. Differentiable (the clamp passes
        gradients inside [0, 1]); callers wrap it in torch.no_grad() when rendering.
        """
        if latents.ndim != 4 or tuple(latents.shape[1:]) != tuple(self.latent_shape):
            raise DataError(
                f"{self.name} decodes latents of shape (B, {', '.join(map(str, self.latent_shape))}); "
                f"got {tuple(latents.shape)}"
            )
        z = latents.to(self.device, torch.float32) / self.scaling_factor + self.shift_factor
        return self.decode_unscaled(z).float().clamp(0.0, 1.0)

    def identity(self) -> dict:
        """What a latent cache must match to reuse latents: JSON-ready."""
        return {
            "name": self.name,
            "class": type(self).__name__,
            "latent_shape": list(self.latent_shape),
            "scaling_factor": float(self.scaling_factor),
            "shift_factor": float(self.shift_factor),
            "input_shape": list(self.input_shape),
            "input_range": [0.0, 1.0],
            "num_parameters": self.num_parameters,
        }

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_shape={self.input_shape}, latent_shape={tuple(self.latent_shape)}"


def check_input_size(input_size: int, factor: int, name: str) -> int:
    """`input_size` if it is a positive multiple of the VAE's downsampling `factor`."""
    if not isinstance(input_size, int) or input_size < 1 or input_size % factor:
        raise LatentDDError(
            f"{name} downsamples by {factor}, so input_size must be a positive multiple of {factor}; got {input_size!r}"
        )
    return input_size


class VAEInputAdapter:
    """The one place dataset images are brought to a VAE's input shape and back.

    image_shape: (C, H, W) of the dataset images. input_size / input_channels: the VAE's.
    resize: "resize" (bilinear, e.g. Fashion-MNIST 28 -> 64 for TAEF2) or "pad" (zero
        padding, e.g. 28 -> 32 for the fitted VAE).

    to_vae uses `ImageTransform` (1 -> 3 channels repeats gray, 3 -> 1 takes luminance).
    from_vae is its least-squares inverse along each axis that the forward map enlarged
    (for "pad" that is the crop; for bilinear upsampling the pseudo-inverse of the
    interpolation matrix, so from_vae(to_vae(x)) == x up to float rounding), a bilinear
    resize along axes it shrank, then luminance (3 -> 1) or repeat (1 -> 3); clamped to
    [0, 1]. The pseudo-inverse matters: downsampling TAEF2's 64 px output to 28 px with an
    antialiased resize blurs it to ~24 dB PSNR, where the pseudo-inverse keeps ~30 dB.
    """

    POLICIES = ("resize", "pad")

    def __init__(self, image_shape: tuple[int, int, int], input_size: int, input_channels: int, resize: str = "resize"):
        if resize not in self.POLICIES:
            raise DataError(f"VAE input resize must be one of {', '.join(self.POLICIES)}; got {resize!r}")
        if len(image_shape) != 3 or image_shape[0] not in (1, 3):
            raise DataError(f"image_shape must be (C, H, W) with C in (1, 3); got {tuple(image_shape)}")
        self.image_shape = tuple(int(v) for v in image_shape)
        self.input_size = int(input_size)
        self.input_channels = int(input_channels)
        self.resize = resize
        self._forward = ImageTransform(image_size=self.input_size, channels=self.input_channels, resize=resize)
        if resize == "pad":
            _, h, w = self.image_shape
            if h > self.input_size or w > self.input_size:
                raise DataError(
                    f"cannot pad {h}x{w} images to the VAE's {self.input_size}x{self.input_size}; use resize='resize'"
                )

    @classmethod
    def for_vae(cls, vae: LatentVAE, image_shape: tuple[int, int, int], resize: str | None = None) -> "VAEInputAdapter":
        """The adapter from `image_shape` images to `vae`; resize None takes `vae.input_resize`."""
        return cls(image_shape, vae.input_size, vae.input_channels, resize or vae.input_resize)

    @property
    def vae_shape(self) -> tuple[int, int, int]:
        return (self.input_channels, self.input_size, self.input_size)

    def to_vae(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, input_channels, input_size, input_size) in [0, 1]."""
        self._check(images, self.image_shape, "dataset")
        return self._forward(images)

    def from_vae(self, images: torch.Tensor) -> torch.Tensor:
        """(B, input_channels, input_size, input_size) in [0, 1] -> (B, C, H, W) float32 in [0, 1]."""
        self._check(images, self.vae_shape, "VAE")
        c, h, w = self.image_shape
        images = images.float()
        if (h, w) != (self.input_size, self.input_size):
            rows = _inverse_matrix(h, self.input_size, self.resize).to(images.device)  # (H, S)
            cols = _inverse_matrix(w, self.input_size, self.resize).to(images.device)  # (W, S)
            images = rows @ images @ cols.T  # (B, C', H, W)
        return ImageTransform(channels=c)(images).clamp(0.0, 1.0)

    def identity(self) -> dict:
        return {"image_shape": list(self.image_shape), "vae_shape": list(self.vae_shape), "resize": self.resize}

    @staticmethod
    def _check(images: torch.Tensor, shape: tuple[int, int, int], what: str) -> None:
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape):
            raise DataError(f"expected {what} images (B, {', '.join(map(str, shape))}); got {tuple(images.shape)}")


@functools.lru_cache(maxsize=32)
def _inverse_matrix(n: int, size: int, resize: str) -> torch.Tensor:
    """(n, size) float32 matrix taking one axis from the VAE's `size` back to the dataset's `n`."""
    if size >= n:
        # The forward map along one axis is linear: push the n unit vectors through it as
        # (n, 1, n, 1) images -> (n, 1, size, size), and read the (size, n) matrix off the
        # middle column (the one a 1-pixel-wide image lands in when padded).
        basis = torch.eye(n).view(n, 1, n, 1)
        forward = ImageTransform(image_size=size, resize=resize)(basis)[:, 0, :, (size - 1) // 2].T
        return torch.linalg.pinv(forward.double()).float()
    # The forward map shrank this axis: no exact inverse; interpolate back up.
    basis = torch.eye(size).view(size, 1, size, 1)
    return ImageTransform(image_size=n, resize="resize")(basis)[:, 0, :, (n - 1) // 2].T.contiguous()
