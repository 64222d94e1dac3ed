"""Bring images to one size and channel count, and decode image files.

Every dataset (and the image-folder importer) goes through the same `ImageTransform`, so
"Fashion-MNIST at 32x32 RGB" means the same pixels whichever loader produced it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from latentdd.config import Checked, PositiveInt
from latentdd.data.base import ImageSet
from latentdd.errors import DataError

RESIZE_POLICIES = ("pad", "resize", "center_crop")

# ITU-R BT.601 luma, the weights PIL's convert("L") uses, so 3->1 matches common tools.
LUMINANCE = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ImageTransform(Checked):
    """Resize / pad / crop to `image_size` x `image_size` and convert to `channels`.

    image_size: target side in pixels, or None to keep the native size.
    channels: 1 or 3, or None to keep the native count. 1->3 repeats the gray channel;
        3->1 takes the luminance 0.299 R + 0.587 G + 0.114 B.
    resize: how to reach `image_size` when the native size differs:
        "pad"         zero-pad symmetrically (28 -> 32 puts 2 black rows/cols on each side);
                      an image larger than the target is an error, never silently cropped;
        "resize"      bilinear with antialiasing to exactly size x size (aspect not kept);
        "center_crop" resize the shorter side to `image_size`, then take the center square
                      (the usual ImageNet preprocessing);
        None          the native size must already equal `image_size`, else DataError.

    Images whose size and channels already match pass through bit-exactly.
    """

    image_size: PositiveInt | None = None
    channels: Literal[1, 3] | None = None
    resize: Literal[RESIZE_POLICIES] | None = "pad"

    def output_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(C, H, W) that images of native `shape` (C, H, W) come out with."""
        c, h, w = shape
        c_out = self.channels or c
        if self.image_size is None:
            return (c_out, h, w)
        return (c_out, self.image_size, self.image_size)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images: (n, C, H, W) float in [0, 1] -> (n, C', H', W') float32 in [0, 1]."""
        if images.ndim != 4:
            raise DataError(f"images must be (n, C, H, W); got shape {tuple(images.shape)}")
        images = images.float()
        c = images.shape[1]
        if self.channels is not None and c not in (1, 3):
            raise DataError(f"cannot convert {c}-channel images to {self.channels} channels; only 1 and 3 are supported")
        # Reduce channels before resampling and expand after: the same result, less work.
        if self.channels == 1 and c == 3:
            weights = torch.tensor(LUMINANCE, dtype=images.dtype).view(1, 3, 1, 1)
            images = (images * weights).sum(dim=1, keepdim=True)
        images = self._resize(images)
        if self.channels == 3 and images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        return images

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        h, w = images.shape[-2:]
        if size is None or (h == size and w == size):
            return images
        if self.resize is None:
            raise DataError(
                f"images are {h}x{w} but {size}x{size} was asked and no resize policy was given; "
                f"pass resize (--resize) as one of {', '.join(RESIZE_POLICIES)}"
            )
        if self.resize == "pad":
            if h > size or w > size:
                raise DataError(
                    f"cannot pad {h}x{w} images to {size}x{size}: padding only grows images; "
                    "use resize='resize' or 'center_crop' to shrink them"
                )
            top, left = (size - h) // 2, (size - w) // 2
            return F.pad(images, (left, size - w - left, top, size - h - top), value=0.0)
        if self.resize == "resize":
            return _bilinear(images, size, size)
        # center_crop: shorter side -> size, keep the aspect, cut the longer side's margins.
        scale = size / min(h, w)
        new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
        if (new_h, new_w) != (h, w):
            images = _bilinear(images, new_h, new_w)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        return images[:, :, top : top + size, left : left + size]


def _bilinear(images: torch.Tensor, h: int, w: int) -> torch.Tensor:
    out = F.interpolate(images, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    # The antialiasing kernel overshoots slightly at sharp edges; keep the [0, 1] promise.
    return out.clamp_(0.0, 1.0)


def transform_image_set(data: ImageSet, transform: ImageTransform | None, chunk: int = 4096) -> ImageSet:
    """`data` with `transform` applied to its images, chunk by chunk to bound peak memory.

    Returns `data` itself when the transform changes nothing.
    """
    if transform is None or transform.output_shape(data.image_shape) == data.image_shape:
        return data
    parts = [transform(data.images[i : i + chunk]) for i in range(0, len(data), chunk)]
    images = torch.cat(parts) if parts else torch.empty((0, *transform.output_shape(data.image_shape)))
    return ImageSet(images, data.labels, list(data.class_names), data.name, data.split, data.source)


def decode_image_bytes(data: bytes, name: str) -> torch.Tensor:
    """Decode an image file's bytes -> (C, H, W) float32 in [0, 1].

    Gray modes ("L", "1", "LA", 16-bit "I;16") give 1 channel; everything else (RGB, RGBA,
    P, CMYK, ...) gives 3 RGB channels, alpha dropped (not composited). 8-bit values v map
    to v / 255 exactly, so a uint8 PNG written by `latentdd.export` reads back bit-exactly.
    `name` only labels errors.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode = img.mode
            if mode.startswith("I;16"):
                # 16-bit gray PNGs: PIL's convert("L") would clip, not scale.
                array = np.array(img, dtype=np.float32) / 65535.0
                return torch.from_numpy(np.ascontiguousarray(array))[None].clamp_(0.0, 1.0)
            if mode in ("L", "1", "LA", "I", "F"):
                img = img.convert("L")
                array = np.array(img, dtype=np.uint8)[None]  # (1, H, W)
            else:
                array = np.array(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)  # (3, H, W)
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {name}: {e}") from e
    return torch.from_numpy(np.ascontiguousarray(array)).float() / 255.0


def decode_image_file(path: Path | str) -> torch.Tensor:
    """Read and decode one image file -> (C, H, W) float32 in [0, 1]; see `decode_image_bytes`."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read image {path}: {e}") from e
    return decode_image_bytes(data, str(path))


def probe_image_file(path: Path | str) -> tuple[int, int, int]:
    """(C, H, W) that `decode_image_file` would return, reading only the file's header."""
    try:
        with Image.open(path) as img:
            mode, (w, h) = img.mode, img.size
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e
    channels = 1 if mode.startswith("I;16") or mode in ("L", "1", "LA", "I", "F") else 3
    return (channels, h, w)
