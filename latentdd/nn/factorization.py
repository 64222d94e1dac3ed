"""Factorization (IDM/BACON's `--aug`, IDC's "multi-formation"): factor x factor sub-images per stored image.

A stored image (or latent) of side S holds factor**2 sub-images of side S/factor in a grid;
at training time each is cut out and upsampled back to S x S, so IPC 10 trains on 40 images
at factor 2 (PROTOCOLS.md section 2). Order is tile-major, as the reference `decode_zoom`:
row t*N + n of the unfolded batch is tile t (row-major over the grid) of stored image n, so
per-image labels and weights follow with `.repeat(factor**2)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latentdd.data.base import SyntheticImages
from latentdd.errors import DataError


def check_factor(factor: int, height: int, width: int, what: str) -> None:
    """Raise DataError unless `what` (height x width) splits into factor x factor equal tiles."""
    if height % factor or width % factor:
        raise DataError(f"factorization {factor} splits each {what} into {factor}x{factor} tiles, so its sides "
                        f"must be multiples of {factor}; got {height}x{width}: use factor 1, or a size divisible "
                        f"by {factor}")


def untile(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(N, C, H, W) stored images -> (factor**2 * N, C, H, W) tiles, each upsampled bilinearly to (H, W).

    Bilinear without corner alignment, as the reference's nn.Upsample(mode="bilinear").
    factor 1 returns x itself.
    """
    if factor == 1:
        return x
    n, c, h, w = x.shape
    check_factor(factor, h, w, "image")
    tiles = x.reshape(n, c, factor, h // factor, factor, w // factor).permute(2, 4, 0, 1, 3, 5)
    tiles = tiles.reshape(factor * factor * n, c, h // factor, w // factor)  # (f*f*N, C, H/f, W/f), tile-major
    return F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)


def tile(sources: torch.Tensor, factor: int) -> torch.Tensor:
    """(factor**2 * N, C, H, W) -> (N, C, H, W): average-pool each source by `factor` and tile them.

    Source t*N + n lands in tile t of image n, so `untile(tile(s))` gives back s, up to the
    down- and upsampling.
    """
    m, c, h, w = sources.shape
    check_factor(factor, h, w, "source")
    n = m // (factor * factor)
    if n * factor * factor != m:
        raise DataError(f"tiling needs a multiple of {factor * factor} sources; got {m}")
    small = F.avg_pool2d(sources, factor).view(factor, factor, n, c, h // factor, w // factor)
    return small.permute(2, 3, 0, 4, 1, 5).reshape(n, c, h, w)  # (N, C, f, h/f, f, w/f) -> (N, C, H, W)


def tile_set(images: SyntheticImages, factor: int) -> SyntheticImages:
    """A set of factor**2 * N whole images, grouped by class -> N stored images, each `tile`s factor**2 of
    its class (what a matching method's tiles "decoded" render to). A stored image's weight is the sum of
    its tiles'; soft labels are refused (a tile's own label would be lost). factor 1 returns images itself."""
    if factor == 1:
        return images
    if images.soft_labels is not None:
        raise DataError("tiling whole images into stored ones keeps hard labels only; this set carries soft labels")
    parts, labels, weights = [], [], []
    for k in range(images.num_classes):
        idx = (images.labels == k).nonzero().flatten()
        if len(idx) % factor**2:
            raise DataError(f"class {images.class_names[k]!r} has {len(idx)} images, not a multiple of "
                            f"{factor**2}: it cannot be tiled {factor}x{factor}")
        parts.append(tile(images.images[idx], factor))
        labels.append(torch.full((len(idx) // factor**2,), k, dtype=torch.long))
        if images.weights is not None:  # tile t of stored image n is source t*N + n (`tile`)
            weights.append(images.weights[idx].view(factor**2, -1).sum(0))
    return SyntheticImages(torch.cat(parts), torch.cat(labels), list(images.class_names),
                           weights=torch.cat(weights) if weights else None, meta=images.meta)
