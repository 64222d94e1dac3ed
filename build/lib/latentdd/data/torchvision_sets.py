"""cifar10, cifar100 and svhn, read through torchvision from a local root.

Root: the given `root`, else `data_home()/<name>`, in torchvision's layout
(`cifar-10-batches-py/`, `cifar-100-python/`, `train_32x32.mat` / `test_32x32.mat`).
`download=True` lets torchvision fetch the files there. torchvision is imported only here,
when one of these datasets is loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from latentdd.data.base import ImageSet
from latentdd.data.registry import DatasetInfo, data_home, not_found, register_dataset
from latentdd.data.transforms import ImageTransform, transform_image_set
from latentdd.errors import LatentDDError


def import_torchvision():
    try:
        import torchvision
    except ImportError as e:  # also a CUDA torchvision next to a CPU torch fails here
        raise LatentDDError(f"this dataset needs torchvision, which cannot be imported ({e}); pip install torchvision") from e
    return torchvision


# name -> (torchvision class, the files that must exist under the root for a split)
_LAYOUT = {
    "cifar10": ("CIFAR10", {"train": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)], "test": ["cifar-10-batches-py/test_batch"]}),
    "cifar100": ("CIFAR100", {"train": ["cifar-100-python/train"], "test": ["cifar-100-python/test"]}),
    "svhn": ("SVHN", {"train": ["train_32x32.mat"], "test": ["test_32x32.mat"]}),
}


def _root_for(name: str, root: Path | None) -> Path:
    return root if root is not None else data_home() / name


def _missing_files(name: str, root: Path, split: str) -> list[str]:
    return [f for f in _LAYOUT[name][1][split] if not (root / f).is_file()]


def _locator(name: str):
    def locate(root: Path | None, split: str = "train") -> Path | None:
        folder = _root_for(name, root)
        return folder if not _missing_files(name, folder, split) else None

    return locate


def _loader(name: str):
    def load(split: str, root: Path | None = None, download: bool = False, transform: ImageTransform | None = None) -> ImageSet:
        folder = _root_for(name, root)
        missing = _missing_files(name, folder, split)
        if missing and not download:
            why = "does not exist" if not folder.exists() else f"missing {', '.join(missing)}"
            raise not_found(name, split, [(folder, why)])
        datasets = import_torchvision().datasets
        cls = getattr(datasets, _LAYOUT[name][0])
        try:
            if name == "svhn":
                ds = cls(str(folder), split=split, download=download)
                pixels = np.asarray(ds.data)  # (N, 3, 32, 32) uint8
                labels, class_names = np.asarray(ds.labels), [str(d) for d in range(10)]
            else:
                ds = cls(str(folder), train=split == "train", download=download)
                pixels = np.asarray(ds.data).transpose(0, 3, 1, 2)  # (N, 32, 32, 3) -> (N, 3, 32, 32) uint8
                labels, class_names = np.asarray(ds.targets), list(ds.classes)
        except RuntimeError as e:  # torchvision's "Dataset not found or corrupted"
            raise not_found(name, split, [(folder, str(e))]) from e
        images = torch.from_numpy(np.ascontiguousarray(pixels)).float().div_(255.0)
        data = ImageSet(images, torch.from_numpy(labels.astype(np.int64)), class_names, name, split, str(folder))
        return transform_image_set(data, transform)

    return load


_DESCRIPTIONS = {
    "cifar10": ("CIFAR-10: 50k/10k color 32x32, 10 classes", True),
    "cifar100": ("CIFAR-100: 50k/10k color 32x32, 100 classes", True),
    "svhn": ("SVHN: 73257/26032 color 32x32 house-number digits, 10 classes", False),  # flipped digits change meaning
}

for _name, (_description, _flip) in _DESCRIPTIONS.items():
    register_dataset(
        DatasetInfo(
            name=_name,
            description=_description,
            flip_augment=_flip,
            loader=_loader(_name),
            locate=_locator(_name),
            how_to_get=(
                f"pass --download (load_dataset({_name!r}, download=True)) on a machine with internet, which saves\n"
                f"it to {{data_home}}/{_name} (or --root DIR), or with torchvision:\n"
                f"  python -c \"import torchvision; torchvision.datasets.{_LAYOUT[_name][0]}('{{data_home}}/{_name}', "
                + ("split='train', download=True)\"" if _name == "svhn" else "train=True, download=True)\"")
            ),
        )
    )
