"""Differentiable Siamese Augmentation (DSA), strategy color_crop_cutout_flip_scale_rotate.

Single mode, as in the reference: each call draws ONE of the groups at random and applies
it with per-image parameters. `siamese` applies one draw of group and parameters to
several batches (real and synthetic while distilling). Every operation is differentiable
in the images. Images are expected normalised (the reference augments after
normalisation, so crop and cutout fill with 0 = the dataset mean).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from latentdd.errors import DataError

GROUPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


@dataclass(frozen=True)
class DSAConfig:
    """Strengths of the reference DSA (its ParamDiffAug defaults)."""

    strategy: str = "color_crop_cutout_flip_scale_rotate"
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5
    crop: float = 0.125
    cutout: float = 0.5
    flip: float = 0.5
    scale: float = 1.2
    rotate: float = 15.0


def _uniform(n: int, g: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g, device="cpu").to(device)


class DiffAugment:
    """Draw and apply DSA transforms.

    >>> aug = DiffAugment(DSAConfig(), flip=True)
    >>> y = aug(x, generator)                          # (B, C, H, W) -> (B, C, H, W)
    >>> r, s = aug.siamese(x_real, x_syn, generator=g) # same transform on both batches
    """

    def __init__(self, config: DSAConfig = DSAConfig(), *, flip: bool = True) -> None:
        groups = config.strategy.split("_")
        unknown = set(groups) - set(GROUPS)
        if unknown:
            raise DataError(f"unknown DSA groups {sorted(unknown)}; known: {GROUPS}")
        if not flip:  # flips change the class of digits and house numbers
            groups = [g for g in groups if g != "flip"]
        if not groups:
            raise DataError(f"DSA strategy {config.strategy!r} leaves no augmentation")
        self.config = config
        self.groups = tuple(groups)

    def sample(self, n: int, size: tuple[int, int], generator: torch.Generator | None, device) -> dict:
        """Draw one group and its parameters for n images (n = 1: shared by a whole batch)."""
        c = self.config
        group = self.groups[int(torch.randint(len(self.groups), (1,), generator=generator))]
        u = lambda: _uniform(n, generator, device)  # noqa: E731  (fixed draw order = reproducible)
        h, w = size
        if group == "color":
            return {"group": group, "brightness": u(), "saturation": u(), "contrast": u()}
        if group == "crop":
            sh, sw = int(h * c.crop + 0.5), int(w * c.crop + 0.5)
            dy = torch.randint(-sh, sh + 1, (n,), generator=generator).to(device)
            dx = torch.randint(-sw, sw + 1, (n,), generator=generator).to(device)
            return {"group": group, "dy": dy, "dx": dx, "pad": (sh, sw)}
        if group == "cutout":
            ch, cw = int(h * c.cutout + 0.5), int(w * c.cutout + 0.5)
            cy = torch.randint(0, h + (1 - ch % 2), (n,), generator=generator).to(device)
            cx = torch.randint(0, w + (1 - cw % 2), (n,), generator=generator).to(device)
            return {"group": group, "cy": cy, "cx": cx, "size": (ch, cw)}
        if group == "flip":
            return {"group": group, "flip": u() < c.flip}
        if group == "scale":
            lo = 1.0 / c.scale
            return {"group": group, "sy": u() * (c.scale - lo) + lo, "sx": u() * (c.scale - lo) + lo}
        angle = (u() - 0.5) * 2 * c.rotate / 180 * math.pi
        return {"group": group, "angle": angle}

    def apply(self, x: torch.Tensor, p: dict) -> torch.Tensor:
        """Apply drawn parameters to x (B, C, H, W); parameters of length 1 broadcast."""
        b, _, h, w = x.shape
        expand = lambda t: t.expand(b) if t.shape[0] == 1 else t  # noqa: E731
        group = p["group"]
        if group == "color":
            c = self.config
            x = x + ((expand(p["brightness"]) - 0.5) * c.brightness).view(b, 1, 1, 1)
            mean = x.mean(dim=1, keepdim=True)  # per-pixel mean over channels
            x = (x - mean) * (expand(p["saturation"]) * c.saturation).view(b, 1, 1, 1) + mean
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            return (x - mean) * (expand(p["contrast"]) + c.contrast).view(b, 1, 1, 1) + mean
        if group == "crop":  # integer translation with zero fill
            sh, sw = p["pad"]
            padded = F.pad(x, (sw, sw, sh, sh))
            rows = torch.arange(h, device=x.device) + sh + expand(p["dy"])[:, None]  # (B, H)
            cols = torch.arange(w, device=x.device) + sw + expand(p["dx"])[:, None]  # (B, W)
            batch = torch.arange(b, device=x.device)[:, None, None]
            out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
            return out.permute(0, 3, 1, 2)
        if group == "cutout":
            ch, cw = p["size"]
            top = (expand(p["cy"]) - ch // 2)[:, None]
            left = (expand(p["cx"]) - cw // 2)[:, None]
            ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
            in_rows = (ys >= top) & (ys < top + ch)  # (B, H)
            in_cols = (xs >= left) & (xs < left + cw)  # (B, W)
            keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # (B, H, W)
            return x * keep[:, None].to(x.dtype)
        if group == "flip":
            return torch.where(expand(p["flip"]).view(b, 1, 1, 1), x.flip(3), x)
        if group == "scale":
            zero = torch.zeros(b, device=x.device)
            theta = torch.stack(
                [torch.stack([expand(p["sx"]), zero, zero], 1), torch.stack([zero, expand(p["sy"]), zero], 1)], 1
            )  # (B, 2, 3)
        else:  # rotate
            a = expand(p["angle"])
            zero = torch.zeros(b, device=x.device)
            theta = torch.stack(
                [torch.stack([a.cos(), a.sin(), zero], 1), torch.stack([-a.sin(), a.cos(), zero], 1)], 1
            )
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)
        return F.grid_sample(x, grid, align_corners=True)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Independent random augmentation per image (the evaluation-time mode)."""
        return self.apply(x, self.sample(x.shape[0], x.shape[-2:], generator, x.device))

    def siamese(self, *batches: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """One group and one parameter draw applied to every batch (they must share H, W)."""
        sizes = {tuple(t.shape[-2:]) for t in batches}
        if len(sizes) != 1:
            raise DataError(f"siamese augmentation needs batches of one image size; got {sorted(sizes)}")
        params = self.sample(1, batches[0].shape[-2:], generator, batches[0].device)
        return tuple(self.apply(t, params) for t in batches)
