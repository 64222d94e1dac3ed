"""Random real subset (the baseline every result is compared with) as a `SyntheticImages`."""

from __future__ import annotations

import torch

from latentdd.data import LabelledImages, SyntheticImages
from latentdd.data.select import random_per_class
from latentdd.errors import DataError

BASELINES = ("random",)


def random_real(train: LabelledImages, ipc: int, seed: int) -> SyntheticImages:
    """IPC real training images per class, drawn uniformly without replacement with `seed`."""
    indices = random_per_class(
        train.labels, ipc, len(train.class_names), torch.Generator().manual_seed(seed), class_names=train.class_names
    )
    return SyntheticImages(
        train.load(indices),
        train.labels[indices],
        list(train.class_names),
        name=getattr(train, "name", ""),
        split="train",
        meta={"method": {"name": "random", "ipc": ipc, "seed": seed, "train_indices": indices.tolist()}},
    )


def make_baseline(method: str, train: LabelledImages, ipc: int, seed: int) -> SyntheticImages:
    if method == "random":
        return random_real(train, ipc, seed)
    raise DataError(
        f"unknown pixel-space baseline {method!r}; choose one of {BASELINES} "
        "(herding and k-center run on latents: `latentdd distill`)"
    )
