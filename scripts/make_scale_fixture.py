"""Generate (never commit) the image folders of the scale rehearsal: train/ and val/ class trees.

    fashion64    Fashion-MNIST (the Debian package latentdd loads) at 64 px RGB (--size 128 for
                 128 px): train/ = its 60k train images, val/ = its 10k test images, each
                 bilinearly resized (with antialiasing) and the gray channel repeated;
                 --per-class N / --val-per-class N keep the first N train / test images of
                 each class (for the scaling runs and tests).
    procedural   --classes K (default 1000) classes of --per-class (default 60) train and
                 --val-per-class (default 5) val images, drawn from per-class parameters
                 (shape, two colours, stripe frequency and orientation, size) with per-image
                 jitter (position, scale, rotation, colour, noise): distinct per class,
                 learnable, and the same bytes for the same --seed.

    python scripts/make_scale_fixture.py fashion64 --out ~/scale/fmnist64
    python scripts/make_scale_fixture.py procedural --out ~/scale/proc1000 --classes 1000 --per-class 60
    latentdd encode --dataset imagefolder --root ~/scale/proc1000 --image-size 64 --channels 3 \\
        --vae taesd:../shared/weights/taef2 --out runs/latents/proc1000

The folder is written as a temporary sibling and renamed into place (latentdd.io), so a
killed run leaves no half folder; an existing --out is replaced only with --overwrite and
only when latentdd wrote it. fixture.json at the root says how it was made.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SHAPES = ("disc", "square", "triangle", "ring", "cross", "diamond")
SPLITS = ("train", "val")


# ---------------------------------------------------------------------------------------
# The procedural classes.


def class_params(seed: int, k: int) -> dict:
    """What makes class k itself, drawn from SeedSequence([seed, k]) (JSON-ready floats)."""
    rng = np.random.default_rng([seed, k])
    fg, bg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    while np.abs(fg - bg).sum() < 0.9:  # the shape must stand out of its background
        bg = rng.uniform(0, 1, 3)
    return {"shape": SHAPES[k % len(SHAPES)] if k < len(SHAPES) else SHAPES[int(rng.integers(len(SHAPES)))],
            "fg": fg.tolist(), "fg2": rng.uniform(0, 1, 3).tolist(), "bg": bg.tolist(),
            "stripe_freq": float(rng.uniform(1.0, 6.0)), "stripe_angle": float(rng.uniform(0, np.pi)),
            "radius": float(rng.uniform(0.22, 0.4))}


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask (S, S) of `shape` of size r in rotated, centred coordinates u, v in [-1, 1]."""
    if shape == "disc":
        return (u**2 + v**2) <= r**2
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= r
    if shape == "triangle":
        return (v <= r * 0.8) & (v >= 2 * np.abs(u) - r)
    if shape == "ring":
        d = np.sqrt(u**2 + v**2)
        return (d <= r) & (d >= 0.55 * r)
    if shape == "cross":
        return ((np.abs(u) <= 0.35 * r) & (np.abs(v) <= r)) | ((np.abs(v) <= 0.35 * r) & (np.abs(u) <= r))
    return (np.abs(u) + np.abs(v)) <= 1.3 * r  # diamond


def render_procedural(params: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """One image of the class `params` describes, jittered by `rng` -> (size, size, 3) uint8."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1) * 2 - 1  # (S, S) each in [-1, 1]
    cx, cy = rng.uniform(-0.25, 0.25, 2)
    angle = rng.uniform(-0.5, 0.5)
    scale = rng.uniform(0.8, 1.2)
    u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
    mask = _shape_mask(params["shape"], u, v, params["radius"] * scale)[..., None]  # (S, S, 1)
    theta = params["stripe_angle"] + angle
    stripes = 0.5 + 0.5 * np.sin(np.pi * params["stripe_freq"] * (u * np.cos(theta) + v * np.sin(theta))
                                 + rng.uniform(0, 2 * np.pi))[..., None]  # (S, S, 1) in [0, 1]
    jitter = lambda c: np.clip(np.asarray(c) + rng.normal(0, 0.04, 3), 0, 1)  # noqa: E731 - per-image colour
    fg = stripes * jitter(params["fg"]) + (1 - stripes) * jitter(params["fg2"])  # (S, S, 3)
    bg = np.broadcast_to(jitter(params["bg"]), fg.shape)
    image = np.where(mask, fg, bg) + rng.normal(0, 0.05, fg.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


# ---------------------------------------------------------------------------------------
# Writing.


def _save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path, format="PNG", compress_level=1)  # fast: these folders are big


def write_procedural(tmp: Path, *, classes: int, per_class: int, val_per_class: int, size: int, seed: int,
                     progress: bool) -> dict:
    from latentdd.progress import progress_bar

    names = [f"class{k:04d}" for k in range(classes)]
    counts = {"train": per_class, "val": val_per_class}
    bar = progress_bar(total=classes * sum(counts.values()), desc="procedural", unit="img", disable=not progress)
    for k, name in enumerate(names):
        params = class_params(seed, k)
        for s, split in enumerate(SPLITS):
            folder = tmp / split / name
            folder.mkdir(parents=True)
            for i in range(counts[split]):
                # Each image its own stream: any one image regenerates alone, and val never repeats train.
                rng = np.random.default_rng([seed, k, s, i])
                _save_png(folder / f"{i:05d}.png", render_procedural(params, size, rng))
                bar.update(1)
    bar.close()
    return {"kind": "procedural", "classes": classes, "per_class": per_class, "val_per_class": val_per_class,
            "size": size, "seed": seed, "shapes": list(SHAPES)}


def write_fashion(tmp: Path, *, size: int, per_class: int | None, val_per_class: int | None, root: str | None,
                  progress: bool) -> dict:
    import torch

    from latentdd.data import ImageTransform, class_folder_names, load_dataset
    from latentdd.progress import progress_bar

    transform = ImageTransform(image_size=size, channels=3, resize="resize")
    splits = {"train": load_dataset("fashion_mnist", "train", root=root),
              "val": load_dataset("fashion_mnist", "test", root=root)}
    names = class_folder_names(list(splits["train"].class_names))
    keep = {}
    for split, data in splits.items():
        labels, limit = data.labels, per_class if split == "train" else val_per_class
        if limit is not None:
            # The first `limit` of each class, in dataset order: a balanced prefix of the split.
            rows = torch.cat([torch.nonzero(labels == k).flatten()[:limit] for k in range(len(names))]).sort().values
        else:
            rows = torch.arange(len(labels))
        keep[split] = rows
    bar = progress_bar(total=sum(len(r) for r in keep.values()), desc="fashion64", unit="img", disable=not progress)
    for split, data in splits.items():
        for name in names:
            (tmp / split / name).mkdir(parents=True)
        rows = keep[split]
        for start in range(0, len(rows), 1024):
            batch = rows[start : start + 1024]
            images = transform(data.images[batch])  # (b, 3, size, size) in [0, 1]
            pixels = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()  # (b, S, S, 3)
            for row, index in enumerate(batch.tolist()):
                label = int(data.labels[index])
                _save_png(tmp / split / names[label] / f"{index:05d}.png", pixels[row])
            bar.update(len(batch))
    bar.close()
    return {"kind": "fashion64", "size": size, "per_class": per_class, "val_per_class": val_per_class, "source": splits["train"].source,
            "train_images": len(keep["train"]), "val_images": len(keep["val"])}


def make_fixture(kind: str, out: Path, *, overwrite: bool = False, progress: bool = True, **options) -> Path:
    """Write the `kind` fixture (see the module docstring) to `out`, atomically -> `out`."""
    import shutil

    from latentdd.io import atomic_write_json, mark, replace_dir, start_output

    out = Path(out).expanduser()
    tmp = start_output(out, overwrite=overwrite)  # a foreign or existing --out is refused before any work
    try:
        writer = write_procedural if kind == "procedural" else write_fashion
        description = writer(tmp, progress=progress, **options)
        atomic_write_json(tmp / "fixture.json", {**description, "written_by": "scripts/make_scale_fixture.py"})
        mark(tmp, "scale-fixture")
        replace_dir(tmp, out, overwrite=overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {value}")
    return number


def _size(value: str) -> int:
    number = _positive(value)
    if number % 8:
        raise argparse.ArgumentTypeError(f"must be a multiple of 8 (TAEF2 downsamples by 8); got {value}")
    return number


def main(argv: list[str] | None = None) -> int:
    from latentdd.errors import LatentDDError

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="kind", required=True)
    fashion = sub.add_parser("fashion64", help="Fashion-MNIST at 64 px RGB (or --size 128)")
    fashion.add_argument("--size", type=_size, default=64, choices=(64, 128))
    fashion.add_argument("--per-class", type=_positive, help="first N train images of each class (default all)")
    fashion.add_argument("--val-per-class", type=_positive, help="first N test images of each class (default all)")
    fashion.add_argument("--root", help="where the Fashion-MNIST IDX files are (default: latentdd's search)")
    proc = sub.add_parser("procedural", help="K procedurally drawn classes")
    proc.add_argument("--classes", type=_positive, default=1000)
    proc.add_argument("--per-class", type=_positive, default=60, help="train images per class")
    proc.add_argument("--val-per-class", type=_positive, default=5)
    proc.add_argument("--size", type=_size, default=64)
    proc.add_argument("--seed", type=int, default=0)
    for q in (fashion, proc):
        q.add_argument("--out", required=True, help="the folder to create (train/ and val/ inside)")
        q.add_argument("--overwrite", action="store_true", help="replace an --out this script wrote earlier")
        q.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in ("kind", "out", "overwrite", "quiet")}
    try:
        out = make_fixture(args.kind, Path(args.out), overwrite=args.overwrite, progress=not args.quiet, **options)
    except LatentDDError as err:
        print(f"make_scale_fixture: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {json.loads((out / 'fixture.json').read_text())}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    sys.exit(main())
