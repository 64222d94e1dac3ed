"""Synthetic sets as plain image folders (+ manifest.json), and back.

Layout written by `export_image_folder`:

    <out>/<class folder>/<index>.png   index = position in the set, zero-padded, so the
                                       order is recoverable from the names alone
    <out>/manifest.json                everything the PNGs cannot hold (see below)

Any tool that reads `<class>/<images>` trees (torchvision ImageFolder, ...) can train on it;
`load_image_folder` reads it back exactly. PNGs hold uint8 `round(clamp(x, 0, 1) * 255)`, 1
channel as mode "L", 3 as "RGB"; reading back gives that value / 255, bit for bit.

manifest.json: format, format_version, name, split, source, num_images, image_shape
[C, H, W], class_names, class_folders, images [{file, label, sha256, weight?}] in set
order, soft_labels ([N][K] or null), meta (the set's meta) and record (the protocol
record, opaque here). JSON cannot hold everything Python can: tuples come back as lists,
and Paths, numpy values and tensors are stored as strings, numbers and lists.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from latentdd.data.base import SyntheticImages
from latentdd.data.image_folder import ImageFolderImages, class_folder_name, class_folder_names
from latentdd.data.transforms import RESIZE_POLICIES, ImageTransform, decode_image_bytes
from latentdd.errors import DataError, DatasetNotFoundError, OutputExistsError
from latentdd.io import is_int, is_number, is_temporary, list_of, replace_dir, start_output

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "OutputExistsError",
    "class_folder_name",
    "class_folder_names",
    "export_image_folder",
    "image_grid",
    "load_image_folder",
    "read_manifest",
]

FORMAT_NAME = "latentdd-image-folder"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) float in [0, 1] -> (N, H, W, C) uint8 by round(x * 255), clamped."""
    if not torch.isfinite(images).all():
        raise DataError("images contain NaN or infinite values; they cannot be written as PNG")
    return torch.round(images.detach().float().cpu().clamp(0.0, 1.0) * 255.0).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _png_bytes(pixels: np.ndarray) -> bytes:
    """(H, W, C) uint8, C in {1, 3} -> PNG file bytes (mode "L" or "RGB")."""
    buffer = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def export_image_folder(
    synthetic: SyntheticImages, out: Path | str, *, record: dict | None = None, overwrite: bool = False
) -> Path:
    """Write `synthetic` as `<out>/<class folder>/<index>.png` + `<out>/manifest.json` -> `out`.

    Atomic: everything is written to a sibling `<out>.tmp-<random>` folder, renamed into place
    when complete, and removed if anything fails (`latentdd.io.start_output` / `replace_dir`,
    which also clean what a killed export left). If `out` exists: OutputExistsError unless
    `overwrite`; with `overwrite` (allowed only over a folder latentdd wrote or an empty one)
    the old folder is renamed aside, the new one renamed in, then the old one deleted.
    record: the protocol record, stored as is in the manifest (JSON-serializable).
    """
    out = Path(out).expanduser()
    c = synthetic.image_shape[0]
    if c not in (1, 3):
        raise DataError(f"only 1- or 3-channel images can be written as PNG; these have {c} channels")
    pixels = _to_uint8(synthetic.images)  # (N, H, W, C)
    folders = class_folder_names(synthetic.class_names)
    width = max(6, len(str(len(synthetic) - 1)))

    tmp = start_output(out, overwrite=overwrite)
    try:
        entries = []
        labels = synthetic.labels.tolist()
        weights = synthetic.weights.tolist() if synthetic.weights is not None else None
        for k in sorted(set(labels)):
            (tmp / folders[k]).mkdir()
        for i, label in enumerate(labels):
            data = _png_bytes(pixels[i])
            file = f"{folders[label]}/{i:0{width}d}.png"
            (tmp / file).write_bytes(data)
            entry = {"file": file, "label": label, "sha256": hashlib.sha256(data).hexdigest()}
            if weights is not None:
                entry["weight"] = weights[i]
            entries.append(entry)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "name": synthetic.name,
            "split": synthetic.split,
            "source": synthetic.source,
            "num_images": len(synthetic),
            "image_shape": list(synthetic.image_shape),
            "class_names": list(synthetic.class_names),
            "class_folders": folders,
            "images": entries,
            "soft_labels": synthetic.soft_labels.tolist() if synthetic.soft_labels is not None else None,
            "meta": synthetic.meta,
            "record": record,
        }
        try:
            text = json.dumps(manifest, indent=1, default=_json_default)
        except (TypeError, ValueError) as e:
            raise DataError(f"meta or record cannot be stored as JSON: {e}") from e
        (tmp / MANIFEST_NAME).write_text(text)  # written last: its presence marks a complete export
        replace_dir(tmp, out, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def image_grid(synthetic: SyntheticImages, max_per_class: int = 10, max_classes: int = 100) -> bytes:
    """PNG bytes of a synthetic set: a row per class (the first `max_classes`), its first
    `max_per_class` images (white padding where a class has fewer), 1 px grey gaps.

    The class cap keeps the preview a picture: 1000 classes at 64 px would make a
    65,000-pixel-tall PNG and a gigabyte of float copies on the way.
    """
    from torchvision.utils import make_grid

    rows = []
    for k in range(min(len(synthetic.class_names), max_classes)):
        x = synthetic.images[synthetic.labels == k][:max_per_class]  # (n, C, H, W)
        rows.append(torch.cat([x, x.new_ones(max_per_class - len(x), *x.shape[1:])]))
    grid = make_grid(torch.cat(rows), nrow=max_per_class, padding=1, pad_value=0.5)  # (3, H', W')
    buffer = io.BytesIO()
    Image.fromarray((grid.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def read_manifest(path: Path | str) -> dict:
    """The parsed manifest.json of an exported folder (its `record` included), checked field by field
    (`_check_manifest`); DataError naming what is wrong and what to do."""
    manifest_path = Path(path).expanduser() / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{manifest_path} does not exist; {path} is not an image folder written by latentdd") from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {manifest_path}: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise DataError(f"{manifest_path} is not a latentdd image-folder manifest (format {FORMAT_NAME!r})")
    version = manifest.get("format_version")
    if not is_int(version) or version < 1:
        raise DataError(f"{manifest_path} has format_version {version!r}; it must be a positive integer (a "
                        f"latentdd export writes {FORMAT_VERSION}): correct it, or export the set again")
    if version > FORMAT_VERSION:
        raise DataError(
            f"{manifest_path} has format_version {version!r}; this latentdd reads versions up to {FORMAT_VERSION}: upgrade latentdd"
        )
    _check_manifest(manifest, manifest_path)
    return manifest


def _check_manifest(manifest: dict, where: Path) -> None:
    """DataError unless every field a reader uses holds what `export_image_folder` writes, and the
    fields agree with each other (a label with its file's class folder, num_images with the entries)."""
    def bad(field: str, rule: str) -> DataError:
        return DataError(f"{where} has {field} {str(manifest.get(field))[:200]}; {rule}: export the set again")

    names, folders, shape = manifest.get("class_names"), manifest.get("class_folders"), manifest.get("image_shape")
    if not list_of(names, lambda v: isinstance(v, str)) or not names:
        raise bad("class_names", "it must be a non-empty list of class names")
    if not list_of(folders, lambda v: isinstance(v, str)) or len(folders) != len(names):
        raise bad("class_folders", f"it must name the folder of each of the {len(names)} classes")
    if not list_of(shape, is_int) or len(shape) != 3 or shape[0] not in (1, 3) or min(shape) < 1:
        raise bad("image_shape", "it must be [C, H, W], C 1 or 3")
    entries = manifest.get("images")
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{where} lists no images (its `images` must be a non-empty list); export the set again")
    for entry in entries:
        _check_entry(entry, names, folders, where)
    has_weight = ["weight" in e for e in entries]
    if any(has_weight) and not all(has_weight):
        raise DataError(f"{where}: some images have a weight and some do not; export the set again")
    if not is_int(manifest.get("num_images")) or manifest["num_images"] != len(entries):
        raise bad("num_images", f"it lists {len(entries)} images (were entries lost?)")
    soft = manifest.get("soft_labels")
    if soft is not None and not (list_of(soft, lambda row: list_of(row, is_number) and len(row) == len(names))
                                 and len(soft) == len(entries)):
        raise bad("soft_labels", f"it must be null or {len(entries)} rows of {len(names)} numbers, one per image")
    for field in ("name", "split", "source"):
        if not isinstance(manifest.get(field, ""), str):
            raise bad(field, "it must be a string")
    for field in ("meta", "record"):
        if not isinstance(manifest.get(field) or {}, dict):
            raise bad(field, "it must be a mapping or null")


def _check_entry(entry, names: list[str], folders: list[str], where: Path) -> None:
    """DataError unless `entry` has a label, a sha256 and a file inside its label's class folder (and a
    weight that is a non-negative number, if any)."""
    shown = str(entry)[:200]
    label = entry.get("label") if isinstance(entry, dict) else None
    if not is_int(label) or not 0 <= label < len(names):
        raise DataError(f"{where}: the entry {shown} has label {label!r}; a label is the index of its class, "
                        f"0 to {len(names) - 1} ({len(names)} classes)")
    for field in ("file", "sha256"):
        if not isinstance(entry.get(field), str) or not entry[field]:
            raise DataError(f"{where}: the entry {shown} has no {field!r} (a non-empty string); every entry "
                            "needs file, label and sha256: export the set again")
    if "weight" in entry and not (is_number(entry["weight"]) and entry["weight"] >= 0):
        raise DataError(f"{where}: the entry {shown} has weight {entry['weight']!r}; a weight is a non-negative "
                        "number: export the set again")
    relative = PurePosixPath(entry["file"])
    if relative.is_absolute() or ".." in relative.parts:  # a manifest must not reach outside its folder
        raise DataError(f"{where} lists {entry['file']!r}, which is outside the folder")
    folder = relative.parts[0]
    if folder != folders[label]:
        raise DataError(f"{where}: the entry {shown} has label {label} (class {names[label]!r}, folder "
                        f"{folders[label]!r}) but its file lies in {folder!r}: correct the label, or export the "
                        "set again")


def load_image_folder(
    path: Path | str,
    *,
    class_names: list[str] | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    resize: str | None = "pad",
) -> SyntheticImages:
    """Read an image folder back as SyntheticImages (images float32 (N, C, H, W) in [0, 1]).

    With a manifest.json (a latentdd export): exact labels, weights, soft labels, class
        names, meta and order; each file's sha256 is checked (DataError naming the file on a
        mismatch). `class_names`, if given, must equal the manifest's. Files not listed in
        the manifest are ignored: the manifest is authoritative. `read_manifest` gives the record.
    Without one (a folder made by another tool): class sub-folders, read as
        `ImageFolderImages` does: with `class_names`, each folder must be named
        `class_folder_names(class_names)[k]` or `class_names[k]`, labels follow that order;
        without, the sorted folder names are the classes. No weights, soft labels or meta.
    image_size / channels / resize: as in `ImageTransform`; with resize=None, images whose
        size differs from image_size raise DataError. Without image_size all images must
        have one size.
    """
    path = Path(path).expanduser()
    if is_temporary(path):
        raise DataError(f"{path} is a temporary folder an interrupted latentdd write left behind, not a finished "
                        "image folder; write the output again (that removes it), or remove it yourself")
    if not path.exists():
        raise DatasetNotFoundError(f"image folder {path} does not exist")
    if not path.is_dir():
        raise DataError(f"{path} is not a folder")
    transform = ImageTransform(image_size=image_size, channels=channels, resize=resize)
    if not (path / MANIFEST_NAME).exists():
        streamed = ImageFolderImages(path, class_names=class_names, transform=transform, name=path.name)
        data = streamed.materialize()
        return SyntheticImages(data.images, data.labels, data.class_names, data.name, "", str(path))

    manifest = read_manifest(path)
    names = list(manifest["class_names"])
    if class_names is not None and list(class_names) != names:
        raise DataError(
            f"{path}/{MANIFEST_NAME} has classes {names}, but {list(class_names)} were asked for; "
            "use the dataset the set was made from"
        )
    entries = manifest["images"]
    shape = tuple(manifest["image_shape"])
    images = torch.empty((len(entries), *shape), dtype=torch.float32)
    listed: dict[Path, str] = {}  # resolved file -> the entry's `file` that listed it first
    for i, entry in enumerate(entries):
        file = _listed_file(path, entry)
        if file in listed:
            also = f" (also as {listed[file]!r})" if listed[file] != entry["file"] else ""
            raise DataError(f"{path}/{MANIFEST_NAME} lists the file {entry['file']!r} twice{also}; each image must be "
                            "listed once: remove the duplicate entry, or export the set again")
        listed[file] = entry["file"]
        images[i] = _read_listed_image(file, path, entry, shape)
    size = transform.image_size
    if size is not None and resize is None and shape[1:] != (size, size):
        raise DataError(
            f"images in {path} are {shape[1]}x{shape[2]} but the dataset is {size}x{size}; "
            f"pass resize ({', '.join(RESIZE_POLICIES)}): --images-resize for `latentdd evaluate --images`, "
            "--resize for a dataset"
        )
    images = transform(images)

    weights = torch.tensor([e["weight"] for e in entries], dtype=torch.float32) if "weight" in entries[0] else None
    soft = manifest.get("soft_labels")
    return SyntheticImages(
        images,
        torch.tensor([e["label"] for e in entries], dtype=torch.long),
        names,
        manifest.get("name", ""),
        manifest.get("split", ""),
        str(path),
        weights=weights,
        soft_labels=torch.tensor(soft, dtype=torch.float32) if soft is not None else None,
        meta=manifest.get("meta") or {},
    )


def _listed_file(root: Path, entry: dict) -> Path:
    """The resolved path of `entry`'s file (inside `root`: `_check_entry`); DataError if a symlink leads outside."""
    file = root.joinpath(*PurePosixPath(entry["file"]).parts).resolve()
    if not file.is_relative_to(root.resolve()):
        raise DataError(f"{root}/{MANIFEST_NAME} lists {entry['file']!r}, which leads through a symbolic link to "
                        f"{file}, outside the folder; replace the link with the image itself, or export the set again")
    return file


def _read_listed_image(file: Path, root: Path, entry: dict, shape: tuple[int, ...]) -> torch.Tensor:
    try:
        data = file.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {file}, listed in {root}/{MANIFEST_NAME}: {e}") from e
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise DataError(f"{file} was changed after export: its sha256 does not match {MANIFEST_NAME}")
    image = decode_image_bytes(data, str(file))
    if tuple(image.shape) != shape:
        raise DataError(f"{file} is {tuple(image.shape)} but {MANIFEST_NAME} says images are {shape}")
    return image
