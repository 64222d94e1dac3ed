"""Labelled image sets: the in-memory `ImageSet` and the protocol streaming sets share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol, runtime_checkable

import torch

from latentdd.cachekey import split_sha256
from latentdd.errors import DataError


@runtime_checkable
class LabelledImages(Protocol):
    """What every dataset split offers, whether it sits in memory or streams from disk."""

    labels: torch.Tensor  # (N,) int64
    class_names: list[str]

    def __len__(self) -> int: ...

    def load(self, indices: torch.Tensor | list[int]) -> torch.Tensor:
        """Images at `indices` as float32 (n, C, H, W) in [0, 1]."""

    def iter_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images (b, C, H, W) float32 in [0, 1], labels (b,) int64) in index order."""


@dataclass
class ImageSet:
    """Images with the labels they carry.

    images: (N, C, H, W) float32 in [0, 1]; labels: (N,) int64 in [0, len(class_names)).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    name: str = ""
    split: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise DataError(f"images must be (N, C, H, W); got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"labels must be ({self.images.shape[0]},) to match the images; "
                f"got {tuple(self.labels.shape)}"
            )
        self.labels = self.labels.long()
        if self.labels.numel() and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DataError(f"labels must lie in [0, {len(self.class_names)}) for {len(self.class_names)} classes")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # (C, H, W)

    def load(self, indices: torch.Tensor | list[int]) -> torch.Tensor:
        return self.images[torch.as_tensor(indices, dtype=torch.long)]

    def iter_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self), batch_size):
            yield self.images[start : start + batch_size], self.labels[start : start + batch_size]

    def subset(self, indices: torch.Tensor | list[int]) -> "ImageSet":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageSet(self.images[idx], self.labels[idx], list(self.class_names), self.name, self.split, self.source)


class IndexedView:
    """Rows `indices` of a streamed split (a LabelledImages without `subset`), loaded lazily."""

    def __init__(self, base: LabelledImages, indices: torch.Tensor, split: str) -> None:
        self.base, self.indices, self.split = base, torch.as_tensor(indices, dtype=torch.long), split
        self.labels = base.labels[self.indices]
        self.class_names = list(base.class_names)
        self.name, self.source = getattr(base, "name", ""), getattr(base, "source", "")

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, indices: torch.Tensor | list[int]) -> torch.Tensor:
        return self.base.load(self.indices[torch.as_tensor(indices, dtype=torch.long)])

    def iter_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            yield self.load(range(start, stop)), self.labels[start:stop]


def data_identity(data: LabelledImages) -> dict:
    """Name, split, number and shape of images, and sha256 of their float32 values (`cachekey.split_sha256`):
    what names the data of a model fitted to it (the fitted VAE, the consistency judge) in a cache key."""
    if not len(data):
        raise DataError("the dataset is empty")
    shape = tuple(data.load([0]).shape[1:])
    images_sha256, _, _ = split_sha256(data.iter_batches(4096))
    return {
        "name": getattr(data, "name", ""),
        "split": getattr(data, "split", ""),
        "num_images": len(data),
        "image_shape": list(shape),
        "images_sha256": images_sha256,
    }


def split_rows(data: LabelledImages, indices, split: str) -> LabelledImages:
    """Rows `indices` of `data` as a split of its own: an ImageSet in memory, else a lazy view."""
    if isinstance(data, ImageSet):
        part = data.subset(indices)
        part.split = split
        return part
    return IndexedView(data, torch.as_tensor(indices), split)


@dataclass
class SyntheticImages(ImageSet):
    """A distilled (or baseline) set: images plus optional per-sample weights and soft labels.

    weights: (N,) float32 >= 0, used as a weighted loss when the evaluator is asked to;
    soft_labels: (N, num_classes) float32 rows summing to 1;
    meta: method, parameters and the protocol-record fields of the stages that made it.
    """

    weights: torch.Tensor | None = None
    soft_labels: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(self)
        if self.weights is not None:
            self.weights = torch.as_tensor(self.weights, dtype=torch.float32)
            if self.weights.shape != (n,):
                raise DataError(f"weights must be ({n},); got {tuple(self.weights.shape)}")
            if not torch.isfinite(self.weights).all() or (self.weights < 0).any():
                raise DataError("weights must be finite and non-negative")
        if self.soft_labels is not None:
            self.soft_labels = torch.as_tensor(self.soft_labels, dtype=torch.float32)
            if self.soft_labels.shape != (n, self.num_classes):
                raise DataError(f"soft_labels must be ({n}, {self.num_classes}); got {tuple(self.soft_labels.shape)}")


def per_class_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes,) int64 number of samples of each class."""
    return torch.bincount(labels.long(), minlength=num_classes)
