"""The `digits` dataset: scikit-learn's 1797 8x8 handwritten digits (ships with sklearn).

No official split: `stratified_split(labels, 0.2, seed=0)` -- per class a
`numpy.random.default_rng(0)` permutation, first 20% to test -- gives 1438 train / 359 test.
Pixel values 0..16 are divided by 16 into [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from latentdd.data.base import ImageSet
from latentdd.data.registry import DatasetInfo, register_dataset
from latentdd.data.select import stratified_split
from latentdd.data.transforms import ImageTransform, transform_image_set
from latentdd.errors import LatentDDError

DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED = 0.2, 0


def _load_sklearn_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise LatentDDError("the 'digits' dataset needs scikit-learn: pip install scikit-learn") from e
    return load_digits()


def locate_digits(root: Path | None) -> Path | None:
    try:
        import sklearn.datasets
    except ImportError:
        return None
    return Path(sklearn.datasets.__file__).parent / "data"


def load_digits_dataset(
    split: str, root: Path | None = None, download: bool = False, transform: ImageTransform | None = None
) -> ImageSet:
    """sklearn digits, 1x8x8 float32 in [0, 1], classes "0".."9"; `root` and `download` are unused."""
    bunch = _load_sklearn_digits()
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = stratified_split(labels, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    idx = train_idx if split == "train" else test_idx
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32)[idx] / 16.0).unsqueeze(1)  # (n, 1, 8, 8)
    source = f"sklearn.datasets.load_digits (stratified 80%/20% split, seed {DIGITS_SPLIT_SEED})"
    data = ImageSet(images, torch.from_numpy(labels[idx]), [str(d) for d in range(10)], "digits", split, source)
    return transform_image_set(data, transform)


register_dataset(
    DatasetInfo(
        name="digits",
        description="scikit-learn digits: 1797 grayscale 8x8 digits (1438/359 split), 10 classes",
        flip_augment=False,
        loader=load_digits_dataset,
        locate=locate_digits,
        how_to_get="pip install scikit-learn   # the data ships inside the package",
    )
)
