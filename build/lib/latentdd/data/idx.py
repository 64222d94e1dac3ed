"""IDX files (the MNIST / Fashion-MNIST format) and the `fashion_mnist` dataset.

IDX layout: 2 zero bytes, a dtype code, the number of dims d, d big-endian uint32 sizes,
then the values, big-endian, row-major. Files may be gzipped (detected by magic bytes,
not by name). Upstream checksums are not checked on purpose: Debian's re-compressed .gz
files differ byte-wise from upstream's while holding the same arrays.
"""

from __future__ import annotations

import gzip
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from latentdd.data.base import ImageSet
from latentdd.data.registry import DatasetInfo, data_home, describe_missing, not_found, register_dataset
from latentdd.data.transforms import ImageTransform, transform_image_set
from latentdd.errors import DataError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}

# Where `apt-get install dataset-fashion-mnist` puts the four .gz files. Module-level so
# tests can point it elsewhere.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def read_idx(path: Path | str) -> np.ndarray:
    """The array stored in IDX file `path` (raw or gzipped); DataError if malformed or truncated."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a cut .gz is EOFError
        raise DataError(f"cannot read IDX file {path}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated: its header needs {header} bytes, the file has {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(f"IDX file {path} is {what}: dims {dims} need {expected} bytes, it has {len(raw)}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def find_idx_split(folder: Path, split: str) -> tuple[Path, Path] | None:
    """(images file, labels file) of `split` in `folder`, or None if either is missing.

    Accepts `train-images-idx3-ubyte` and `train-images.idx3-ubyte` spellings, raw or .gz
    (raw preferred: no decompression).
    """
    prefix = _SPLIT_PREFIX[split]
    found = []
    for kind, idx in (("images", "idx3"), ("labels", "idx1")):
        names = [f"{prefix}-{kind}{sep}{idx}-ubyte{gz}" for gz in ("", ".gz") for sep in ("-", ".")]
        path = next((folder / n for n in names if (folder / n).is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def load_idx_split(folder: Path, split: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 1, H, W) float32 in [0, 1], labels (N,) int64) of `split` in `folder`."""
    pair = find_idx_split(folder, split)
    if pair is None:
        raise DataError(f"{folder} has no IDX files for split {split!r}")
    images, labels = read_idx(pair[0]), read_idx(pair[1])
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{pair[0]} should hold uint8 (N, H, W) images; it holds {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{pair[1]} holds {labels.shape} labels but {pair[0]} holds {images.shape[0]} images; the counts must match"
        )
    if labels.size and int(labels.max()) >= num_classes:
        raise DataError(f"{pair[1]} has label {int(labels.max())}, outside [0, {num_classes})")
    x = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255.0)  # (N, 1, H, W)
    return x, torch.from_numpy(labels.astype(np.int64))


def idx_candidates(base: Path, torchvision_folder: str) -> list[Path]:
    """Folders that may hold IDX files under `base`: itself, and torchvision's `<Name>/raw`."""
    return [base, base / torchvision_folder / "raw"]


def _fashion_search(root: Path | None) -> list[Path]:
    bases = ([root] if root is not None else []) + [data_home() / "fashion_mnist", DEBIAN_FASHION_MNIST]
    return [c for b in bases for c in idx_candidates(b, "FashionMNIST")]


def locate_fashion_mnist(root: Path | None, split: str = "train") -> Path | None:
    return next((c for c in _fashion_search(root) if find_idx_split(c, split)), None)


def load_fashion_mnist(
    split: str, root: Path | None = None, download: bool = False, transform: ImageTransform | None = None
) -> ImageSet:
    """Fashion-MNIST, 60000 train / 10000 test, 1x28x28, 10 classes.

    Looks in `root`, then `data_home()/fashion_mnist`, then DEBIAN_FASHION_MNIST (each also
    as torchvision's `FashionMNIST/raw`); warns when a given `root` is passed over.
    """
    folder = locate_fashion_mnist(root, split)
    if folder is None and download:
        from latentdd.data.torchvision_sets import import_torchvision

        target = root if root is not None else data_home() / "fashion_mnist"
        import_torchvision().datasets.FashionMNIST(str(target), train=split == "train", download=True)
        folder = locate_fashion_mnist(target, split)
    if folder is None:
        raise not_found("fashion_mnist", split, [(c, describe_missing(c)) for c in _fashion_search(root)])
    _warn_if_passed_over(root, folder, "fashion_mnist")
    images, labels = load_idx_split(folder, split, len(FASHION_MNIST_CLASSES))
    data = ImageSet(images, labels, list(FASHION_MNIST_CLASSES), "fashion_mnist", split, str(folder))
    return transform_image_set(data, transform)


def _warn_if_passed_over(root: Path | None, used: Path, name: str) -> None:
    # The search order falls back to default places; say so, since the user named a root.
    if root is not None and root not in (used, *used.parents):
        warnings.warn(f"{root} has no {name} files; loading {name} from {used} instead", stacklevel=3)


register_dataset(
    DatasetInfo(
        name="fashion_mnist",
        description="Fashion-MNIST: 60k/10k grayscale 28x28 clothing images, 10 classes",
        flip_augment=True,
        loader=load_fashion_mnist,
        locate=locate_fashion_mnist,
        how_to_get=(
            "sudo apt-get install dataset-fashion-mnist   # Debian/Ubuntu: /usr/share/datasets/fashion-mnist\n"
            "or put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and\n"
            "t10k-labels-idx1-ubyte.gz (https://github.com/zalandoresearch/fashion-mnist) in {data_home}/fashion_mnist\n"
            "or pass --download (download=True) to fetch them with torchvision"
        ),
    )
)
