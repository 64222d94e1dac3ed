"""Streaming class-per-folder image trees (`<root>/<class>/<image files>`) and the `imagefolder` dataset.

`ImageFolderImages` lists files when built and decodes images only when asked, so a folder
of a million images costs memory for its file list, not its pixels.

Splits of the `imagefolder` dataset:
  - if `<root>/train/` exists, the root is split: "train" -> `<root>/train`, "test" ->
    `<root>/test`, else `<root>/val` (how ImageNette / ImageWoof / ImageNet arrive). Class
    names are the sorted folder names of `train/`, and the test folder's classes are
    labelled by them, so labels agree between splits even if test lacks a class.
  - otherwise the root itself is one class tree, loadable only as split "all". latentdd
    does not invent a test split for a folder it knows nothing about: a made-up split of
    a folder that may hold near-duplicates would give numbers comparable to nothing.
    Arrange it as train/ and val/ to evaluate on it.
A top-level folder literally named "train" therefore always means the split layout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import torch

from latentdd.data.base import ImageSet
from latentdd.data.registry import DatasetInfo, not_found, register_dataset
from latentdd.data.transforms import RESIZE_POLICIES, ImageTransform, decode_image_file, probe_image_file
from latentdd.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")

# Characters that some common filesystem (POSIX, Windows, macOS) rejects in a name, or that
# would make a path separator.
_UNSAFE_CHARS = frozenset('/\\:*?"<>|')


def class_folder_name(class_name: str) -> str:
    """A filesystem-safe folder name for a class: "T-shirt/top" -> "T-shirt_top".

    Rule: each of / \\ : * ? " < > | and each control character becomes "_"; a name that
    is then empty or starts with "." (hidden, or "." / "..") gets a "_" prefix. Everything
    else (spaces, unicode, case) is kept, so most names are unchanged. Distinct names can
    collide ("a/b" and "a_b"); `class_folder_names` resolves that for a whole class list.
    """
    safe = "".join("_" if ch in _UNSAFE_CHARS or ord(ch) < 32 else ch for ch in class_name)
    if not safe or safe.startswith("."):
        safe = "_" + safe
    return safe


def class_folder_names(class_names: list[str]) -> list[str]:
    """`class_folder_name` of each class, made unique: names that collide (also when compared
    case-insensitively, as on macOS and Windows) all get a "__<class index>" suffix."""
    names = [class_folder_name(c) for c in class_names]
    keys = [n.casefold() for n in names]
    return [f"{n}__{k}" if keys.count(keys[k]) > 1 else n for k, n in enumerate(names)]


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Image files under `folder`, recursively (as torchvision's ImageFolder), hidden ones skipped, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [
            Path(dirpath) / f for f in filenames if not f.startswith(".") and f.lower().endswith(extensions)
        ]
    return sorted(found)


class ImageFolderImages:
    """A LabelledImages view of `<root>/<class>/<image files>` that decodes on demand.

    class_names: None -> the sorted class folder names. Given -> labels follow this order;
        each folder must be named `class_folder_names(class_names)[k]` or `class_names[k]`,
        else DataError; classes without a folder simply have no images.
    transform: size / channels policy (see ImageTransform). With `image_size` None every
        file's header is read once to check that all images have one size (DataError if
        not: pass image_size and resize); pass image_size to skip that scan on big folders.
        With `channels` None every probed image must have the same count, 1 (gray) or 3
        (color): a folder that mixes them is a DataError naming the odd files, before any
        work (pass channels to convert them all). With image_size given only the first
        file is probed, and its count is the folder's.
    num_workers: default DataLoader workers for `iter_batches` (0 = decode in this process).

    labels: (N,) int64, files: list[Path] in the same order (by class, then path);
    image_shape: (C, H, W) of every image that `load` returns, float32 in [0, 1].
    """

    def __init__(
        self,
        root: Path | str,
        *,
        class_names: list[str] | None = None,
        transform: ImageTransform | None = None,
        num_workers: int = 0,
        name: str = "imagefolder",
        split: str = "",
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist or is not a folder")
        folders = _visible_dirs(self.root)
        if not folders:
            raise DataError(f"{self.root} has no class sub-folders; expected {self.root}/<class name>/<image files>")
        self.class_names = [f.name for f in folders] if class_names is None else list(class_names)
        label_of = self._folder_labels(folders)

        files, labels = [], []
        for folder in sorted(folders, key=lambda f: (label_of[f.name], f.name)):
            found = _image_files(folder, extensions)
            if not found:
                raise DataError(f"class folder {folder} has no images (looked for {', '.join(extensions)})")
            files += found
            labels += [label_of[folder.name]] * len(found)
        self.files: list[Path] = files
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.name, self.split, self.source = name, split, str(self.root)
        self.num_workers = num_workers
        self.transform, self.image_shape = self._resolve_shape(transform or ImageTransform())

    def _folder_labels(self, folders: list[Path]) -> dict[str, int]:
        safe = class_folder_names(self.class_names)
        accepted = {n: k for k, n in enumerate(self.class_names) if class_folder_name(n) == n}
        accepted.update({n: k for k, n in enumerate(safe)})
        unknown = [f.name for f in folders if f.name not in accepted]
        if unknown:
            raise DataError(
                f"{self.root} has folders that match no class: {', '.join(unknown)}; "
                f"expected folders named: {', '.join(safe)}"
            )
        return {f.name: accepted[f.name] for f in folders}

    def _resolve_shape(self, transform: ImageTransform) -> tuple[ImageTransform, tuple[int, int, int]]:
        if transform.image_size is None:
            probes = [probe_image_file(f) for f in self.files]
            sizes = {(h, w): f for f, (_, h, w) in zip(self.files, probes)}
            if len(sizes) > 1:
                (s1, f1), (s2, f2) = list(sizes.items())[:2]
                raise DataError(
                    f"images in {self.root} have different sizes ({f1} is {s1[0]}x{s1[1]}, {f2} is {s2[0]}x{s2[1]}); "
                    f"pass image_size (--image-size) and resize (--resize: {', '.join(RESIZE_POLICIES)})"
                )
            if transform.channels is None:
                self._check_one_channel_count(probes)
            native_c, h, w = max(p[0] for p in probes), *next(iter(sizes))
        else:
            native_c, h, w = probe_image_file(self.files[0])
        # Fix the channel count now, so every decoded image comes out alike even in a
        # folder that mixes gray and color files.
        fixed = ImageTransform(transform.image_size, transform.channels or native_c, transform.resize)
        return fixed, fixed.output_shape((native_c, h, w))

    def _check_one_channel_count(self, probes: list[tuple[int, int, int]]) -> None:
        """DataError naming the files in the minority when gray and color images are mixed: one stray file
        would otherwise decide the channels of all (and differ from the other split's)."""
        color = [f for f, (c, _, _) in zip(self.files, probes) if c == 3]
        gray = [f for f, (c, _, _) in zip(self.files, probes) if c == 1]
        if not color or not gray:
            return
        odd, kind, rest = (color, "color", "gray") if len(color) <= len(gray) else (gray, "gray", "color")
        named = ", ".join(map(str, odd[:3])) + (f" and {len(odd) - 3} more" if len(odd) > 3 else "")
        raise DataError(f"{self.root} mixes gray and color images: {len(odd)} of {len(self.files)} are {kind} "
                        f"({named}), the others {rest}; set dataset.channels (--channels 1 reads them all as gray, "
                        "--channels 3 as color), or convert those files")

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def decode(self, index: int) -> torch.Tensor:
        """Image `index` as (C, H, W) float32 in [0, 1], transformed to `image_shape`."""
        path = self.files[index]
        image = decode_image_file(path)
        size = self.transform.image_size
        if size is not None and self.transform.resize is None and image.shape[-2:] != (size, size):
            raise DataError(
                f"image {path} is {image.shape[-2]}x{image.shape[-1]} but the dataset is {size}x{size}; "
                f"pass resize ({', '.join(RESIZE_POLICIES)}): --images-resize for `latentdd evaluate --images`, "
                "--resize for a dataset"
            )
        try:
            out = self.transform(image[None])[0]
        except DataError as e:
            raise DataError(f"image {path}: {e}") from e
        if tuple(out.shape) != self.image_shape:
            raise DataError(f"image {path} decodes to {tuple(out.shape)}, not {self.image_shape} like the others")
        return out

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode(index), self.labels[index]

    def load(self, indices: torch.Tensor | list[int]) -> torch.Tensor:
        """Images at `indices` -> (n, C, H, W) float32 in [0, 1]."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1).tolist()
        out = torch.empty((len(idx), *self.image_shape), dtype=torch.float32)
        for row, i in enumerate(idx):
            out[row] = self.decode(i)
        return out

    def iter_batches(
        self, batch_size: int, num_workers: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images (b, C, H, W) float32 in [0, 1], labels (b,) int64) in index order.

        num_workers > 0 decodes in that many DataLoader worker processes (order is kept).
        """
        workers = self.num_workers if num_workers is None else num_workers
        if workers <= 0:
            for start in range(0, len(self), batch_size):
                stop = min(start + batch_size, len(self))
                yield self.load(range(start, stop)), self.labels[start:stop]
            return
        loader = torch.utils.data.DataLoader(self, batch_size=batch_size, shuffle=False, num_workers=workers)
        yield from loader

    def materialize(self) -> ImageSet:
        """Every image in memory as an ImageSet; for folders small enough to hold."""
        images = self.load(range(len(self)))
        return ImageSet(images, self.labels.clone(), list(self.class_names), self.name, self.split, self.source)


def split_folder(root: Path, split: str) -> Path:
    """The class tree of `split` under `root`; see the module docstring for the layout rules."""
    has_train = (root / "train").is_dir()
    if split == "all":
        if has_train:
            raise DataError(f"{root} is split into train/ and val/ or test/; load split 'train' or 'test', not 'all'")
        return root
    if not has_train:
        raise DataError(
            f"{root} has no train/ sub-folder, so it has no train/test split; arrange it as "
            f"{root}/train/<class>/... and {root}/val/<class>/..., or load split 'all'"
        )
    if split == "train":
        return root / "train"
    for name in ("test", "val"):
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root} has train/ but neither test/ nor val/, so split 'test' cannot be loaded")


def locate_imagefolder(root: Path | None) -> Path | None:
    if root is None or not root.is_dir():
        return None
    return root if _visible_dirs(root) else None


def load_imagefolder(
    split: str, root: Path | None = None, download: bool = False, transform: ImageTransform | None = None
) -> ImageFolderImages:
    """A streaming `ImageFolderImages` of `split` ("train", "test" or "all") under `root`."""
    if download:
        raise DataError("imagefolder cannot be downloaded; point root (--root) at a folder of images")
    if root is None or not root.is_dir():
        where = "(no root given)" if root is None else root
        raise not_found("imagefolder", split, [(where, "imagefolder needs root (--root)" if root is None else "does not exist")])
    folder = split_folder(root, split)
    # Test folders are labelled with train's classes so labels mean the same in both splits.
    class_names = [f.name for f in _visible_dirs(root / "train")] if split == "test" else None
    images = ImageFolderImages(folder, class_names=class_names, transform=transform, name="imagefolder", split=split)
    if split == "test" and (transform is None or transform.channels is None):
        _check_channels_as_train(images, root / "train")
    return images


def _check_channels_as_train(test: ImageFolderImages, train: Path) -> None:
    """DataError unless the test split is read with the channel count of the train split (that of its
    first image: the train split's own, `ImageFolderImages`), naming an image of each: a VAE or a student
    fitted on one split cannot take the other's images."""
    folders = _visible_dirs(train)
    first = _image_files(folders[0], IMAGE_EXTENSIONS)[:1] if folders else []
    if not first:
        return  # loading the train split says what is wrong with it
    channels = probe_image_file(first[0])[0]
    if channels != test.image_shape[0]:
        raise DataError(f"the test split {test.root} holds {test.image_shape[0]}-channel images (e.g. {test.files[0]}) "
                        f"but the train split {channels}-channel ones (e.g. {first[0]}); set dataset.channels "
                        "(--channels 1 or 3) so that both splits are read alike, or convert the images")


register_dataset(
    DatasetInfo(
        name="imagefolder",
        description="any <root>/train|val/<class>/<images> tree (ImageNette, ImageWoof, ...), streamed from disk",
        flip_augment=True,
        loader=load_imagefolder,
        locate=locate_imagefolder,
        how_to_get=(
            "pass root (--root DIR) with DIR/train/<class>/*.png|jpg and DIR/val/<class>/...\n"
            "e.g. ImageNette: wget https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz && tar xzf imagenette2-160.tgz"
        ),
        splits=("train", "test", "all"),
    )
)
