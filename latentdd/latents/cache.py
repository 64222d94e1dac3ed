"""Latent cache: the latents of a dataset split as safetensors shards plus a manifest.

Layout of a cache folder:

    plan.json                 what is being encoded (dataset, VAE identity, shard ranges)
    shard-00000.safetensors   latents (n, c, h, w), labels (n,), indices (n,) of images [start, stop)
    shard-00000.safetensors.sha256   its sha256, in `sha256sum` format (`sha256sum -c` checks it)
    ...
    manifest.json             written last: shapes, dtype, per-class counts, sha256 of every shard

Every shard is written to a temporary file, its checksum beside it, and then renamed into
place. A resumed encode reads every shard whole and checks it against its checksum, so a
missing, truncated or altered shard (even one of the right size) is encoded again and the
manifest only ever holds checksums of data that was checked. Work is split over
processes by shard (shard s belongs to rank s % world_size), so `accelerate launch`
encodes an ImageNet-scale subset on several GPUs (on CPUs: `accelerate launch --multi_gpu
--num_processes N`, see `latentdd.parallel`); rank 0 writes the manifest once every shard is
there. A shard's bytes do not depend on the number of processes (its batches are the same),
so N processes write the cache one process writes. The temporary files a killed rank left
are removed by that rank's next run. Memory stays bounded by one batch of images and one
shard of latents.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from latentdd.config import Checked, NonNegativeInt, PositiveInt
from latentdd.data.base import LabelledImages
from latentdd.errors import DataError, LatentDDError
from latentdd.io import atomic_write_json, file_sha256, is_int, list_of, stored_checksum, write_checksum
from latentdd.latents.types import Latents
from latentdd.progress import progress_bar

log = logging.getLogger(__name__)

FORMAT_NAME = "latentdd-latent-cache"
FORMAT_VERSION = 1
PLAN, MANIFEST = "plan.json", "manifest.json"
# What repairs a damaged cache: the encode checks every shard and re-encodes only the bad ones.
REPAIR_ADVICE = ("run the same command again (the `latentdd encode` that wrote this cache, with the same "
                 "settings and --out, or the distill / run that made it under --cache-dir): it checks every "
                 "shard and encodes the missing or damaged ones again")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


class CacheDamagedError(DataError):
    """A shard of a finished cache is missing or fails its checksum; re-running the encode repairs it."""


@dataclass(frozen=True)
class CacheConfig(Checked):
    """How a split is cut into shards and batches."""

    shard_size: PositiveInt = 4096  # images per shard: bounds memory and the work lost to an interruption
    batch_size: PositiveInt = 256  # images per encoder call
    # DataLoader processes decoding the next batches while the encoder runs (0: decode in this
    # process). On a GPU, decoding image files one by one is slower than the VAE; the batches,
    # and so the latents, are the same either way.
    workers: NonNegativeInt = 0


class _OneImage(torch.utils.data.Dataset):
    """Image i of a LabelledImages as (C, H, W), for a DataLoader's workers (what `load([i])` gives)."""

    def __init__(self, data: LabelledImages) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data.load([index])[0]


def _image_batches(data: LabelledImages, batches: list[tuple[int, int]], workers: int):
    """Images (b, C, H, W) of each [lo, hi) in `batches`, in order, decoded by `workers` processes (0: here)."""
    if workers == 0:
        for lo, hi in batches:
            yield data.load(torch.arange(lo, hi))
        return
    loader = torch.utils.data.DataLoader(_OneImage(data), batch_sampler=[list(range(lo, hi)) for lo, hi in batches],
                                         num_workers=workers)
    yield from loader


def shard_ranges(num_images: int, shard_size: int) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering range(num_images) in order."""
    return [(s, min(s + shard_size, num_images)) for s in range(0, num_images, shard_size)]


def _verified_sha256(shard: Path, rows: int) -> str | None:
    """sha256 of `shard` when it is whole (its bytes match its stored checksum and it holds `rows`
    images), else None -- with a warning for a shard that exists but is damaged."""
    from safetensors import safe_open

    if not shard.exists():
        return None
    expected, actual = stored_checksum(shard), file_sha256(shard)
    if expected != actual:
        log.warning("shard %s fails its checksum (%s); encoding it again", shard,
                    "none stored" if expected is None else "altered or truncated")
        return None
    try:
        with safe_open(str(shard), framework="pt") as f:
            if f.get_slice("labels").get_shape() == [rows]:
                return actual
    except Exception as err:  # noqa: BLE001 - any unreadable shard is re-encoded
        log.warning("shard %s is unreadable (%s); encoding it again", shard, err)
        return None
    log.warning("shard %s holds the wrong number of images; encoding it again", shard)
    return None


def _write_shard(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write the shard and its checksum; the checksum lands first, so a shard in place always has one."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        write_checksum(path, file_sha256(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale_temporaries(out: Path, shards: list[int]) -> None:
    """Remove the temporary files a killed encode left for `shards` (a shard's and its checksum's).

    Only this rank writes these shards and one encode runs per cache, so any such file is
    stale; without this, each `kill -9` would leave up to a shard's worth of bytes behind.
    """
    for index in shards:
        for stale in out.glob(f".{shard_name(index)}.*tmp"):
            stale.unlink(missing_ok=True)


def _check_plan(out: Path, plan: dict) -> None:
    """Refuse to resume a cache that was started for another dataset, VAE or sharding."""
    existing = out / PLAN
    if existing.exists():
        try:
            old = json.loads(existing.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            old = err
        if not isinstance(old, dict):  # what the shards there were encoded from is unknown: they cannot be kept
            raise DataError(f"{existing} is damaged ({str(old)[:200]}), so what the shards in {out} were encoded "
                            f"from is unknown; delete {out} (or choose another output folder) and encode again")
        for key in ("dataset", "vae", "num_images", "shards"):
            if old.get(key) != plan.get(key):
                raise DataError(
                    f"the latent cache in {out} was started with a different {key} "
                    f"({json.dumps(old.get(key))[:200]} vs {json.dumps(plan.get(key))[:200]}); "
                    "choose another output folder or delete this one"
                )


def encode_split(
    data: LabelledImages,
    encode: Callable[[torch.Tensor], torch.Tensor],
    out: Path | str,
    *,
    vae: dict,
    dataset: dict,
    config: CacheConfig = CacheConfig(),
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> list[Path]:
    """Encode this rank's shards of `data` into `out`; existing shards that pass their checksum are kept.

    encode: images (b, C, H, W) float32 in [0, 1], as `data` yields them -> latents
    (b, c, h, w); any resizing for the VAE happens inside it. vae / dataset: identities
    recorded in the plan and the manifest. Returns the shard paths of this rank.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ranges = shard_ranges(len(data), config.shard_size)
    plan = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "dataset": dataset, "vae": vae,
            "num_images": len(data), "shards": [list(r) for r in ranges]}
    _check_plan(out, plan)
    if rank == 0:
        atomic_write_json(out / PLAN, plan)
    mine = [(i, r) for i, r in enumerate(ranges) if i % world_size == rank]
    _remove_stale_temporaries(out, [i for i, _ in mine])
    todo = [(i, r) for i, r in mine if _verified_sha256(out / shard_name(i), r[1] - r[0]) is None]
    bar = progress_bar(total=sum(b - a for _, (a, b) in todo), desc=f"encode (rank {rank})", unit="img", disable=not progress)
    batches = {index: [(lo, min(lo + config.batch_size, stop)) for lo in range(start, stop, config.batch_size)]
               for index, (start, stop) in todo}
    images = _image_batches(data, [b for index, _ in todo for b in batches[index]], config.workers)
    for index, (start, stop) in todo:
        parts = []
        for lo, hi in batches[index]:
            with torch.inference_mode():
                z = encode(next(images))  # (b, C, H, W) -> (b, c, h, w)
            if not torch.isfinite(z).all():
                raise LatentDDError(f"the VAE produced NaN/inf latents for images {lo}..{hi - 1}")
            parts.append(z.float().cpu())
            bar.update(hi - lo)
        _write_shard(out / shard_name(index), {
            "latents": torch.cat(parts), "labels": data.labels[start:stop].long(),
            "indices": torch.arange(start, stop, dtype=torch.long),
        })
    bar.close()
    return [out / shard_name(i) for i, _ in mine]


def write_manifest(out: Path | str, class_names: list[str]) -> dict:
    """Check every planned shard against its checksum, then write manifest.json (rank 0, at the end)."""
    from safetensors import safe_open

    out = Path(out)
    plan = json.loads((out / PLAN).read_text())
    shards, counts, latent_shape = [], torch.zeros(len(class_names), dtype=torch.long), None
    for index, (start, stop) in enumerate(plan["shards"]):
        path = out / shard_name(index)
        digest = _verified_sha256(path, stop - start)
        if digest is None:
            raise LatentDDError(f"shard {path} is missing or damaged; run the same encode again: it encodes "
                                "every missing or damaged shard and keeps the others")
        with safe_open(str(path), framework="pt") as f:
            labels = f.get_tensor("labels")
            latent_shape = f.get_slice("latents").get_shape()[1:]
        counts += torch.bincount(labels, minlength=len(class_names))
        shards.append({"file": path.name, "start": start, "stop": stop, "sha256": digest})
    manifest = {**plan, "class_names": class_names, "latent_shape": latent_shape, "dtype": "float32",
                "per_class_counts": counts.tolist(), "shards": shards, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def read_manifest(out: Path | str) -> dict:
    """The manifest of the finished cache `out`, every field a reader uses checked (`_manifest_problem`).

    DataError if `out` is not a finished latent cache; CacheDamagedError (saying how to repair it) if
    the manifest of a cache is damaged: encoding again rewrites it from the plan and the shards.
    """
    out = Path(out)
    path = out / MANIFEST
    if not path.exists():
        hint = " (encoding was started but not finished: run it again to resume)" if (out / PLAN).exists() else ""
        raise DataError(f"{path} does not exist: {out} is not a finished latent cache{hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        problem = f"cannot be read ({err})"
    else:
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise DataError(f"{path} is not a latent cache this latentdd can read")
        version = manifest.get("format_version")
        if is_int(version) and version > FORMAT_VERSION:
            raise DataError(f"{path} has format_version {version}; this latentdd reads versions up to "
                            f"{FORMAT_VERSION}: upgrade latentdd")
        problem = _manifest_problem(manifest)
        if problem is None:
            return manifest
    if (out / PLAN).exists():  # a cache whose manifest was damaged: encoding again rewrites it
        raise CacheDamagedError(f"{path} {problem}; {REPAIR_ADVICE}")
    raise DataError(f"{path} {problem}: {out} is not a latent cache latentdd wrote; make one with "
                    "latentdd encode --out DIR")


def _manifest_problem(manifest: dict) -> str | None:
    """What is wrong with a parsed manifest (as "has ..."), or None when every field holds what
    `write_manifest` writes: the shards named in order and covering images 0..num_images."""
    version, names, shape = manifest.get("format_version"), manifest.get("class_names"), manifest.get("latent_shape")
    if not is_int(version) or version < 1:
        return f"has format_version {version!r:.200}, not a positive integer"
    if not list_of(names, lambda v: isinstance(v, str)) or not names:
        return f"has class_names {names!r:.200}, not a non-empty list of names"
    if not list_of(shape, is_int) or len(shape) != 3 or min(shape) < 1:
        return f"has latent_shape {shape!r:.200}, not [c, h, w]"
    for field in ("vae", "dataset"):
        if not isinstance(manifest.get(field), dict):
            return f"has {field} {manifest.get(field)!r:.200}, not a mapping"
    shards, stop = manifest.get("shards"), 0
    if not isinstance(shards, list):
        return f"has shards {shards!r:.200}, not a list"
    for index, shard in enumerate(shards):
        if not isinstance(shard, dict) or shard.get("file") != shard_name(index) or shard.get("start") != stop or \
                not is_int(shard["start"]) or not is_int(shard.get("stop")) or shard["stop"] <= stop or \
                not isinstance(shard.get("sha256"), str):
            return (f"has the shard entry {shard!r:.200}; entry {index} must be {{file: {shard_name(index)}, "
                    f"start: {stop}, stop: (larger), sha256}}")
        stop = shard["stop"]
    if manifest.get("num_images") != stop or not is_int(manifest["num_images"]):
        return f"has num_images {manifest.get('num_images')!r:.200}, but its shards hold {stop} images"
    return None


def check_vae(out: Path, manifest: dict, expect_vae: dict | None) -> None:
    """DataError unless the cache `out` (its `manifest`) was encoded with `expect_vae` (None: any)."""
    if expect_vae is not None and expect_vae != manifest["vae"]:
        diff = {k for k in set(expect_vae) | set(manifest["vae"]) if expect_vae.get(k) != manifest["vae"].get(k)}
        raise DataError(
            f"the latent cache in {out} was encoded with another VAE (differs in {sorted(diff)}: cached "
            f"latent_shape {manifest['vae'].get('latent_shape')}, yours {expect_vae.get('latent_shape')}); "
            "encode again into another folder"
        )


def load_latents(out: Path | str, *, expect_vae: dict | None = None, verify: bool = True) -> Latents:
    """All latents of a finished cache in memory, checked against the manifest (and the VAE, if given).
    `latentdd.latents.sharded.open_latents` checks the same and leaves them on disk until asked for."""
    from safetensors.torch import load_file

    out = Path(out)
    manifest = read_manifest(out)
    check_vae(out, manifest, expect_vae)
    parts, labels = [], []
    for shard in manifest["shards"]:
        path = out / shard["file"]
        if verify and (not path.exists() or file_sha256(path) != shard["sha256"]):
            raise CacheDamagedError(f"shard {path} is missing or corrupt (checksum mismatch); {REPAIR_ADVICE}")
        try:
            tensors = load_file(str(path))
        except Exception as err:  # noqa: BLE001
            raise CacheDamagedError(f"shard {path} cannot be read ({err}); {REPAIR_ADVICE}") from err
        parts.append(tensors["latents"])
        labels.append(tensors["labels"])
    latents = torch.cat(parts)
    if list(latents.shape[1:]) != list(manifest["latent_shape"]):
        raise DataError(f"shards in {out} hold latents of shape {tuple(latents.shape[1:])}, "
                        f"the manifest says {manifest['latent_shape']}")
    return Latents(latents, torch.cat(labels), manifest["class_names"], manifest["vae"])
