"""Real images -> VAE latents (cached) -> per-class synthetic latents -> rendered image folder.

    prepare_latent_space   load the dataset, fit or load the VAE, encode the train split
                           into the latent cache (keyed by `cachekey.content_key` of the VAE,
                           the dataset record and the train images' and labels' sha256)
    distill_to_folder      run a distiller on those latents, render, and write
                           <out>/images (image folder), <out>/latents.safetensors,
                           <out>/distill.json and <out>/config.yaml, all or nothing
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from latentdd.cachekey import content_key, split_sha256
from latentdd.config import DataConfig, save_resolved
from latentdd.data import LabelledImages
from latentdd.errors import DataError
from latentdd.export import export_image_folder, image_grid
from latentdd.io import atomic_write_json, mark, replace_dir, start_output
from latentdd.latents.cache import (
    MANIFEST,
    CacheConfig,
    CacheDamagedError,
    encode_split,
    read_manifest,
    write_manifest,
)
from latentdd.latents.sharded import ShardedLatents, open_latents
from latentdd.latents.types import Latents, SyntheticLatents
from latentdd.record import dataset_record, protocol_record
from latentdd.render import DECODERS, VAEDecoder, render_set
from latentdd.render.config import DecoderConfig  # the stages' configs live in the library; imported from here too
from latentdd.render import load_or_fit_prior as _load_or_fit_prior
from latentdd.vae import FitVAEConfig, LatentVAE, PixelVAE, VAEInputAdapter, fit_vae, load_vae
from latentdd.vae.config import LatentSpaceConfig

log = logging.getLogger(__name__)


@dataclass
class LatentSpace:
    train: LabelledImages
    test: LabelledImages
    vae: LatentVAE
    adapter: VAEInputAdapter
    # Read from the cache's shards on demand: per-class distillers hold one class at a time;
    # those that need every latent read `.latents`, which loads them all once.
    latents: Latents | ShardedLatents
    record: dict  # dataset and vae parts of the protocol record
    seconds: dict[str, float]
    train_sha256: dict = field(default_factory=dict)  # images_sha256, labels_sha256 of `train` (cachekey.split_sha256)
    cache_dir: Path | None = None  # latentdd's cache root (fitted VAEs, latents, statistics such as forgetting counts)

    _decoded: torch.Tensor | None = field(default=None, repr=False)  # decoded_latents, once computed

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (n, c, h, w) -> images (n, C, H, W) at the dataset's shape, differentiable."""
        return self.adapter.from_vae(self.vae.decode(z))

    def decoded_latents(self) -> torch.Tensor:
        """Every train latent decoded (`decode_latents`: (N, C, H, W) float32 in [0, 1]), what the matching
        methods' pixel embedding reads: kept after the first call, and cached by content (the VAE and adapter,
        the latents) under cache_dir/decoded, since a decoder's pass over a train split costs minutes on a CPU.
        The identity VAE (vae "pixel") is decoded here, not cached."""
        if self._decoded is None:
            from latentdd.cache import cached_state
            from latentdd.cachekey import tensor_sha256
            from latentdd.checkpoint import StateRejected
            from latentdd.distill.matching.inputs import decode_latents

            latents = self.latents.latents
            build = lambda: decode_latents(self.decode, latents)  # noqa: E731
            if self.cache_dir is None or isinstance(self.vae, PixelVAE):
                self._decoded = build()
                return self._decoded
            key = content_key("decoded-latents", vae=self.vae.identity() | {"adapter": self.adapter.identity()},
                              latents=tensor_sha256(latents))

            def load(state: dict) -> torch.Tensor:
                pixels = state["pixels"]
                if state["key"] != key:
                    raise StateRejected("it holds other latents or another decoder's images")
                if (pixels.dtype != torch.float32 or pixels.dim() != 4 or len(pixels) != len(latents)
                        or not bool(torch.isfinite(pixels).all())):
                    raise StateRejected(f"it does not hold {len(latents)} finite float32 images")
                return pixels

            self._decoded, _ = cached_state(Path(self.cache_dir) / "decoded" / f"{key[:24]}.safetensors", build,
                                            state=lambda pixels: {"key": key, "pixels": pixels}, load=load,
                                            otherwise="the latents are decoded again")
        return self._decoded


def load_or_fit_prior(config: DecoderConfig, space: LatentSpace, cache_dir: str, *, progress: bool = True):
    """The diffusion prior of `config.prior` fitted to space.latents (or loaded from cache_dir/prior)
    -> (unet, scheduler, report)."""
    return _load_or_fit_prior(config, space.latents, cache_dir, device=space.vae.device, progress=progress)


def make_decoder(config: DecoderConfig, space: LatentSpace, cache_dir: str, *, progress: bool = True):
    """(decoder, its protocol record) from the class `latentdd.render.DECODERS[config.name]`;
    for diffusion, the prior is fitted to space.latents or loaded from its cache."""
    return DECODERS[config.name].from_config(config, space.vae, space.adapter, space.latents, cache_dir, progress=progress)


def load_or_fit_vae(space: LatentSpaceConfig, train, test, *, progress: bool = True) -> tuple[LatentVAE, dict | None]:
    """The VAE `space.vae` names; for "fit", fitted to `train` (or loaded from its cache) with its report."""
    if space.vae == "fit":
        cache = Path(space.cache_dir).expanduser() / "vae"
        return fit_vae(train, test, FitVAEConfig(**space.fit), cache, progress=progress)
    if space.vae == "pixel":
        channels, size, _ = train.load([0]).shape[1:]  # (1, C, H, W) -> C, H
        return PixelVAE(int(channels), space.input_size or int(size)), None
    return load_vae(space.vae, input_size=space.input_size), None


def cache_dataset_record(data: DataConfig, train, test, split: str = "train") -> dict:
    """The dataset record of a latent cache of `split`. The train split's is the one
    `prepare_latent_space` writes, so `latentdd encode --split train --out <its cache folder>`
    and distill / run accept and reuse each other's caches."""
    record = dataset_record(data, train, test)
    return record if split == "train" else record | {"encoded_split": split}


def prepare_latent_space(data: DataConfig, space: LatentSpaceConfig, *, latents_dir: Path | str | None = None,
                         progress: bool = True) -> LatentSpace:
    """Load `data`, get the VAE (fitting it if asked), and the train split's latents (cached).

    latents_dir: a latent cache `latentdd encode --out DIR` wrote, read instead of encoding;
    DataError unless it holds this dataset's train split encoded with this VAE and adapter.
    """
    seconds = {}
    t = time.perf_counter()
    train, test = data.load("train"), data.load("test")
    seconds["load_data"] = time.perf_counter() - t
    cache = Path(space.cache_dir).expanduser()

    t = time.perf_counter()
    vae, vae_report = load_or_fit_vae(space, train, test, progress=progress)
    seconds["vae"] = time.perf_counter() - t
    image_shape = tuple(train.load([0]).shape[1:])
    adapter = VAEInputAdapter.for_vae(vae, image_shape, space.resize)

    t = time.perf_counter()
    identity = vae.identity() | {"adapter": adapter.identity()}
    dataset = cache_dataset_record(data, train, test)
    images_sha256, labels_sha256, _ = split_sha256(train.iter_batches(space.batch_size))
    content = {"images_sha256": images_sha256, "labels_sha256": labels_sha256}
    key = content_key("latent-cache", vae=identity, dataset=dataset, train=content)[:16]
    folder = cache / "latents" / f"{data.name}-{key}" / "train"
    latents = None
    if latents_dir is not None:
        folder = Path(latents_dir).expanduser()
        check_latent_cache(folder, identity, data, dataset)
        latents = open_latents(folder, expect_vae=identity)
    elif (folder / MANIFEST).exists():
        try:
            latents = open_latents(folder, expect_vae=identity)
        except CacheDamagedError as err:  # repaired below: encode_split re-encodes only the damaged shards
            log.warning("the latent cache is damaged (%s); encoding the damaged shards again", str(err).split(";")[0])
    if latents is None:
        encode_split(train, lambda x: vae.encode(adapter.to_vae(x)), folder, vae=identity, dataset=dataset,
                     config=CacheConfig(space.shard_size, space.batch_size, space.workers), progress=progress)
        write_manifest(folder, list(train.class_names))
        latents = open_latents(folder, expect_vae=identity)
    seconds["encode"] = time.perf_counter() - t
    record = {
        "dataset": dataset,
        "vae": {**identity, "cache": str(folder), "encoding": "posterior mean (deterministic), times scaling",
                **({"fit_report": {k: vae_report[k] for k in ("test_psnr", "train_seconds", "steps", "cached")}}
                   if vae_report else {})},
    }
    return LatentSpace(train, test, vae, adapter, latents, record, seconds, train_sha256=content, cache_dir=cache)


def check_latent_cache(folder: Path, identity: dict, data: DataConfig, dataset: dict) -> None:
    """DataError unless the finished cache `folder` holds the train split `dataset` records
    (`cache_dataset_record`) encoded with the VAE and adapter of `identity` -- the ones the
    synthetic latents will be rendered with."""
    manifest = read_manifest(folder)  # DataError if it is not a finished latent cache
    encoded = manifest.get("dataset") or {}
    if encoded.get("name") != data.name or "encoded_split" in encoded:
        raise DataError(
            f"the latent cache {folder} holds the {encoded.get('encoded_split', 'train')} split of "
            f"{encoded.get('name')!r}; distilling {data.name!r} needs its train split: latentdd encode --dataset "
            f"{data.name} --split train --out DIR (with the --vae you distil with), then --latents DIR")
    differs = sorted(k for k in set(encoded) | set(dataset) if encoded.get(k) != dataset.get(k))
    if differs:
        raise DataError(
            f"the latent cache {folder} holds another train split of {data.name} than this one (they differ in "
            f"{', '.join(differs)}: cached {', '.join(str(encoded.get(k)) for k in differs)}; here "
            f"{', '.join(str(dataset.get(k)) for k in differs)}; another dataset.validation, root or image size?); "
            "encode this split again into another folder")
    cached = manifest.get("vae") or {}
    differs = sorted(k for k in set(cached) | set(identity) if cached.get(k) != identity.get(k))
    if differs:
        raise DataError(
            f"the latent cache {folder} was encoded with another VAE than the one this distill renders with "
            f"(they differ in {', '.join(differs)}): cached {cached.get('name')!r}, adapter {cached.get('adapter')}; "
            f"yours {identity.get('name')!r}, adapter {identity.get('adapter')}. Pass the --vae (and --vae-input-size, "
            "--vae-resize) it was encoded with, or encode with yours: latentdd encode --vae ... --out NEWDIR")


def load_synthetic(folder: Path, class_names: list[str]) -> tuple[SyntheticLatents, float]:
    """The synthetic latents a `distill_to_folder` folder stores, and the seconds their distillation took."""
    folder = Path(folder)
    again = "distil them again (delete the folder or drop latents_from)"
    try:
        meta = json.loads((folder / "distill.json").read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the synthetic latents in {folder}: {err}; {again}") from err
    synthetic = SyntheticLatents.load(folder / "latents.safetensors", recorded_extras=meta["extras"])
    if list(synthetic.class_names) != list(class_names):
        raise DataError(f"the synthetic latents in {folder} are of classes {synthetic.class_names[:5]}..., "
                        f"not this dataset's {list(class_names)[:5]}...; {again}")
    return synthetic, meta["record"]["stage_seconds"]["distill"]


def distill_latents(space: LatentSpace, method: str, ipc: int, seed: int, *, params: dict | None = None,
                    checkpoint_dir: Path | None = None, progress: bool = False, teacher=None,
                    parts_dir: Path | None = None) -> SyntheticLatents | None:
    """`ipc` synthetic latents per class of `space.latents` by distiller `method` built with `params`
    (as given: resolve a preset first, `latentdd.presets.resolve`). An iterative distiller decodes through
    the space's VAE and checkpoints into `checkpoint_dir` (None: never). A teacher-aware one (rded, matching
    with networks "teacher") gets `teacher`: a Teacher, or the TeacherConfig to fit or load it by (default:
    the default preset's, fitted on the space's train split and cached).
    With `parts_dir`, under several processes (accelerate launch), a distiller whose classes are independent
    (`splits_by_class`) is split by class (`distill_share`, its parts kept in `parts_dir`): the first process
    returns the whole set, the others None."""
    from latentdd.distill import DistillContext, make_distiller
    from latentdd.parallel import DataParallel

    distiller = make_distiller(method, **(params or {}))
    group = DataParallel.current()
    extra = {}
    if getattr(distiller, "uses_context", False):  # e.g. bacon: the decoder, checkpoints beside the output
        extra["context"] = DistillContext(decode=space.decode, progress=progress, checkpoint_dir=checkpoint_dir,
                                          cache_dir=space.cache_dir, decoded=space.decoded_latents,
                                          device=space.vae.device,
                                          teacher=space_teacher(space, teacher, progress=progress)
                                          if getattr(distiller, "uses_teacher", False) else None)
    if parts_dir is not None and group.size > 1 and getattr(distiller, "splits_by_class", False):
        return distill_share(distiller, space.latents, ipc, seed, group, Path(parts_dir), **extra)
    return distiller.distill(space.latents, ipc, seed=seed, **extra)


def distill_share(distiller, latents, ipc: int, seed: int, group, parts_dir: Path,
                  **extra) -> SyntheticLatents | None:
    """A distillation split by class over the processes of `group`: each distils its contiguous block of classes
    (`class_share`, reading only their latents from a sharded cache) and writes it to `parts_dir`; after all have,
    the first gathers the parts (`gather_parts`: the one-process set, byte for byte) and removes the folder ->
    the set in the first process, None in the others."""
    import torch.distributed as dist

    from latentdd.distill.base import class_share, gather_parts

    share = class_share(len(latents.class_names), group.rank, group.size)
    part = distiller.distill(latents, ipc, seed=seed, classes=share, **extra)  # extra: a matching method's context
    part.save(parts_dir / f"part-{group.rank}.safetensors")
    dist.barrier()
    if not group.is_main:
        return None
    parts = [SyntheticLatents.load(parts_dir / f"part-{rank}.safetensors") for rank in range(group.size)]
    shutil.rmtree(parts_dir)
    whole = gather_parts(parts)
    whole.extras["split_by_class"] = {"processes": group.size,
                                      "classes": [len(class_share(len(latents.class_names), r, group.size))
                                                  for r in range(group.size)]}
    return whole


def space_teacher(space: LatentSpace, teacher=None, *, progress: bool = False):
    """`teacher` if it is a Teacher, else the teacher its TeacherConfig names for the space's train split (None:
    the default preset's, cached under the space's cache_dir)."""
    from latentdd.evaluate.teacher import Teacher, TeacherConfig, resolve_teacher

    if isinstance(teacher, Teacher):
        return teacher
    config = teacher or TeacherConfig(**({"cache_dir": str(space.cache_dir)} if space.cache_dir else {}))
    return resolve_teacher(config, space.train, space.test, progress=progress)


def distill_to_folder(
    space: LatentSpace,
    method: str,
    ipc: int,
    seed: int,
    out: Path | str,
    *,
    params: dict | None = None,
    overwrite: bool = False,
    config: dict | None = None,
    request: dict | None = None,
    decoder=None,
    decoder_record: dict | None = None,
    latents_from: Path | None = None,
    checkpoint_dir: Path | None = None,
    preset: dict | None = None,
    progress: bool = False,
    teacher=None,
    split_by_class: bool = False,
) -> Path:
    """Distil `ipc` latents per class with `method`, render them (`decoder`, VAE decoding by default), write `out`.

    out/images: the image folder (+ manifest with the protocol record so far);
    out/latents.safetensors: `SyntheticLatents.save` -- latents (M, c, h, w), labels (M,), weights (M,) if any,
    and the method, parameters and extras;
    out/grid.png: the images, a row per class;
    out/distill.json: method, parameters, extras (quantization errors, indices, ...) and
    `request`, what the caller asked for (compared by `latentdd run` on resume).
    latents_from: a folder this function wrote earlier for the same method, parameters,
    IPC, seed and latents (the caller checks): its synthetic latents are rendered again
    instead of distilled again; the record keeps the original distill time.
    checkpoint_dir: where an iterative distiller (bacon) checkpoints, kept afterwards so a
    later call with more iterations continues from it; by default `<out>.checkpoint`,
    removed once the folder is written.
    preset: the record of where `params` came from (`latentdd.presets.Resolved.record`), kept in the record.
    teacher: a teacher-aware method's teacher (`distill_latents`).
    split_by_class: under several processes (accelerate launch; every one calls this), a distiller whose classes
    are independent (`splits_by_class`) is split by class over them (`distill_share`); the first process writes
    the folder, the others return at once (with any other distiller, without distilling).
    The distill time recorded is the distiller's own count when it reports one (a resumed
    BACON run: the seconds of all its iterations), else this call's.
    Written into a temporary sibling folder and renamed into place; an existing `out` must be a
    folder latentdd wrote (or an empty one), which is checked, like `out`'s writability, first.
    """
    from latentdd.distill import make_distiller
    from latentdd.distill.matching import remove_checkpoint
    from latentdd.parallel import DataParallel

    out = Path(out).expanduser()
    split = split_by_class and latents_from is None
    parts_dir = out.with_name(f".{out.name}.distill-parts") if split else None  # a split's parts (distill_share)
    chain = checkpoint_dir or out.with_name(f"{out.name}.checkpoint")
    if split and not DataParallel.current().is_main:  # one of several processes: its share of the classes, if any
        if getattr(make_distiller(method, **(params or {})), "splits_by_class", False):
            distill_latents(space, method, ipc, seed, params=params, parts_dir=parts_dir, checkpoint_dir=chain,
                            teacher=teacher)
        return out
    tmp = start_output(out, overwrite=overwrite)  # refuses a foreign or unwritable `out` before any work
    try:
        t = time.perf_counter()
        if latents_from is not None:
            synthetic, distill_seconds = load_synthetic(latents_from, list(space.latents.class_names))
        else:
            synthetic = distill_latents(space, method, ipc, seed, params=params, checkpoint_dir=chain,
                                        progress=progress, teacher=teacher, parts_dir=parts_dir)
            distill_seconds = synthetic.extras.get("seconds", time.perf_counter() - t)
        t = time.perf_counter()
        decoder = decoder or VAEDecoder(space.vae, space.adapter)
        images = render_set(decoder, synthetic, seed=seed)
        render_seconds = time.perf_counter() - t
        record = protocol_record(
            dataset=space.record["dataset"], vae=space.record["vae"],
            method={"name": method, **synthetic.params}, ipc=ipc, decoder=decoder_record or decoder.record(),
            evaluator={}, num_eval=0, seeds=[seed],
            stage_seconds={**space.seconds, "distill": distill_seconds, "render": render_seconds},
        )
        if preset is not None:  # where the parameters came from (latentdd.presets)
            record["method"]["preset"] = preset
        if latents_from is not None:
            record["method"]["latents_from"] = str(latents_from)
        if "teacher" in synthetic.extras:  # a teacher-aware method names the teacher it selected or matched with
            record["method"]["teacher"] = synthetic.extras["teacher"]
        if "device" in synthetic.extras:  # what ran the method (kmeans: faiss on the GPU or the CPU)
            record["method"]["ran_on"] = {k: synthetic.extras[k] for k in ("backend", "device") if k in synthetic.extras}
        export_image_folder(images, tmp / "images", record=record)
        (tmp / "grid.png").write_bytes(image_grid(images))  # a row per class, for a look at a glance
        synthetic.save(tmp / "latents.safetensors")
        atomic_write_json(tmp / "distill.json", {"method": method, "params": synthetic.params, "ipc": ipc,
                                                 "seed": seed, "extras": synthetic.extras, "record": record,
                                                 "request": request})
        if config:
            save_resolved(tmp / "config.yaml", config)
        mark(tmp, "distill")
        replace_dir(tmp, out, overwrite=overwrite)
        if checkpoint_dir is None and latents_from is None and \
                getattr(make_distiller(method, **(params or {})), "uses_context", False):
            remove_checkpoint(chain)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
