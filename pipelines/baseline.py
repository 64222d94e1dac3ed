"""Random real subset (the baseline every result is compared with) as a `SyntheticImages`."""

from __future__ import annotations

import dataclasses

import torch

from latentdd.data import LabelledImages, SyntheticImages
from latentdd.data.select import random_per_class
from latentdd.errors import DataError
from latentdd.nn.factorization import tile_set

BASELINES = ("random",)


def random_real(train: LabelledImages, ipc: int, seed: int, tiles: int = 1) -> SyntheticImages:
    """IPC real training images per class, drawn uniformly without replacement with `seed`.

    tiles f > 1: random real tiles, the baseline of a set whose stored images hold f x f tiles (rded, factorized
    matching): IPC * f**2 images per class are drawn, and each f**2 of them average-pooled by f and tiled into one
    stored image (`factorization.tile_set`, as a set of decoded tiles renders), so the baseline holds as many
    images, at the same resolution, as the set it is compared with; it is evaluated on its tiles (factor f)."""
    indices = random_per_class(
        train.labels, ipc * tiles**2, len(train.class_names), torch.Generator().manual_seed(seed),
        class_names=train.class_names,
    )
    method = {"name": "random", "ipc": ipc, "seed": seed, "train_indices": indices.tolist()}
    images = SyntheticImages(train.load(indices), train.labels[indices], list(train.class_names),
                             name=getattr(train, "name", ""), split="train", meta={"method": method})
    if tiles == 1:
        return images
    # random_per_class gives each class's draws in a row: tile_set's tile t of stored image n is the class's draw t*ipc + n
    tiled = tile_set(images, tiles)
    return dataclasses.replace(tiled, name=images.name, split="train", meta={"method": method | {"tiles": tiles}})


def make_baseline(method: str, train: LabelledImages, ipc: int, seed: int) -> SyntheticImages:
    if method == "random":
        return random_real(train, ipc, seed)
    raise DataError(
        f"unknown pixel-space baseline {method!r}; choose one of {BASELINES} "
        "(herding and k-center run on latents: `latentdd distill`)"
    )
