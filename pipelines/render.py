"""Synthetic latents (a distill folder's latents.safetensors) -> a rendered image folder, split over processes.

    render_to_folder   every process renders its share of whole decoder batches
                       (`latentdd.render.parallel`); the main process joins them and writes
                       <out>/images (image folder + manifest with the protocol record),
                       <out>/grid.png, <out>/render.json and <out>/config.yaml, all or nothing

Run by `latentdd render`, under `accelerate launch` for several processes; the images equal a
one-process render's bit for bit.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
import yaml

from latentdd.config import DataConfig, safe_yaml, save_resolved
from latentdd.errors import DataError
from latentdd.export import export_image_folder, image_grid
from latentdd.io import atomic_write_json, claim_folder, mark, replace_dir, start_output
from latentdd.latents.types import SyntheticLatents
from latentdd.record import protocol_record
from latentdd.render import DECODERS
from latentdd.render.parallel import render_split
from latentdd.vae import VAEInputAdapter
from latentdd.pipelines.distill import (
    DecoderConfig,
    LatentSpaceConfig,
    cache_dataset_record,
    load_or_fit_vae,
    make_decoder,
    prepare_latent_space,
)


def load_synthetic_latents(path: Path | str) -> SyntheticLatents:
    """The synthetic latents at `path`: a latents.safetensors file, or a distill folder holding one."""
    path = Path(path).expanduser()
    return SyntheticLatents.load(path / "latents.safetensors" if path.is_dir() else path)


def setup_decoder(data: DataConfig, space: LatentSpaceConfig, config: DecoderConfig, state, *,
                  latents_dir: Path | None, progress: bool):
    """(decoder, its record, {"dataset", "vae": parts of the protocol record, "class_names"}) on every process.

    The vae decoder needs only the VAE, so no process opens the latent cache or hashes the train
    images for it; the other decoders need the train latents (the prior is fitted to them, or
    checked against them), which `prepare_latent_space` provides. Rank 0 goes first, so a VAE,
    cache or prior that must be made is made once and the other ranks load it.
    """
    with state.main_process_first():
        if config.name == "vae":
            train, test = data.load("train"), data.load("test")
            vae, _ = load_or_fit_vae(space, train, test, progress=progress)
            vae = vae.to(state.device)
            adapter = VAEInputAdapter.for_vae(vae, tuple(train.load([0]).shape[1:]), space.resize)
            decoder, record = DECODERS["vae"].from_config(config, vae, adapter, None, space.cache_dir, progress=progress)
            stages = {"dataset": cache_dataset_record(data, train, test),
                      "vae": vae.identity() | {"adapter": adapter.identity()}, "class_names": list(train.class_names)}
        else:
            prepared = prepare_latent_space(data, space, latents_dir=latents_dir, progress=progress)
            decoder, record = make_decoder(config, prepared, space.cache_dir, progress=progress)
            stages = {"dataset": prepared.record["dataset"], "vae": prepared.record["vae"],
                      "class_names": list(prepared.latents.class_names)}
    return decoder, record, stages


def render_to_folder(synthetic: SyntheticLatents, decoder, decoder_record: dict, stages: dict, out: Path, *,
                     seed: int, state, overwrite: bool = False, config: dict | None = None) -> Path | None:
    """Render `synthetic` with the processes of `state` and write `out` (main process) -> `out` there, None
    elsewhere. The parts travel through `<out>.render-parts/`, removed once `out` is written."""
    out = Path(out).expanduser()
    parts = out.with_name(f"{out.name}.render-parts")
    with state.main_process_first():
        claim_folder(parts, "render-parts")
    start = time.perf_counter()
    images = render_split(decoder, synthetic, seed=seed, state=state, parts=parts)
    seconds = time.perf_counter() - start
    if not state.is_main_process:
        return None
    counts = torch.bincount(images.labels, minlength=len(images.class_names))  # stored images: tiles joined
    ipc = int(counts[0]) if bool((counts == counts[0]).all()) else None
    record = protocol_record(dataset=stages["dataset"], vae=stages["vae"],
                             method={"name": synthetic.method, **synthetic.params}, ipc=ipc, decoder=decoder_record,
                             evaluator={}, num_eval=0, seeds=[seed], stage_seconds={"render": seconds})
    record["render_processes"] = state.num_processes
    tmp = start_output(out, overwrite=overwrite)
    try:
        export_image_folder(images, tmp / "images", record=record)
        (tmp / "grid.png").write_bytes(image_grid(images))
        atomic_write_json(tmp / "render.json", {"record": record, "processes": state.num_processes,
                                                "seconds": seconds})
        if config:
            save_resolved(tmp / "config.yaml", config)
        mark(tmp, "render")
        replace_dir(tmp, out, overwrite=overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(parts, ignore_errors=True)
    return out


def check_synthetic(synthetic: SyntheticLatents, data: DataConfig, stages: dict, latent_shape, where: Path) -> None:
    """DataError unless `synthetic` is of these classes and of the decoder's latent shape; every process
    checks the same, so all of them stop before rendering rather than one failing inside it. A shape that
    differs because the dataset's images do (another --channels, --image-size or --resize than the
    distillation's, which its folder records) is blamed on those settings, not on the VAE."""
    class_names = stages["class_names"]
    if list(synthetic.class_names) != list(class_names):
        raise DataError(f"the synthetic latents {where} are of classes {synthetic.class_names[:5]}..., not this "
                        f"dataset's {list(class_names)[:5]}...; pass the --dataset (and --root) they were distilled from")
    shape, latent_shape = tuple(synthetic.latents.shape[1:]), tuple(latent_shape)
    if shape == latent_shape:
        return
    folder = where if where.is_dir() else where.parent
    distilled = _distilled_images(folder)
    images = tuple(stages["dataset"]["image_shape"])
    if distilled is not None and distilled[0] != images:
        image_shape, settings = distilled
        shown = lambda value: "unset" if value is None else value  # noqa: E731
        differ = [f"--{key.replace('_', '-')} {shown(getattr(data, key))} here, {shown(settings[key])} when distilled"
                  for key in ("channels", "image_size", "resize")
                  if key in settings and settings[key] != getattr(data, key)]
        raise DataError(
            f"the synthetic latents {where} were distilled from images of shape {image_shape}, but this dataset's "
            f"images are {images}{' (' + '; '.join(differ) + ')' if differ else ''}, so the VAE decodes latents of "
            f"shape {latent_shape}, not their {shape}: render with the dataset settings they were distilled with "
            f"(the dataset: section of {folder / 'config.yaml'})")
    if stages["vae"].get("name") == "pixel":  # pixel-space latents are the images themselves: no VAE to blame
        raise DataError(f"the synthetic latents {where} are pixel-space images of shape {shape}, but this dataset's "
                        f"images reach the pixel space as {latent_shape}: render with the --channels, --image-size "
                        "and --vae-input-size they were distilled with")
    raise DataError(f"the synthetic latents {where} have shape {shape}, but the VAE decodes {latent_shape}; pass the "
                    "--vae (and --vae-input-size) they were distilled with, and their dataset settings (--channels, "
                    "--image-size)")


def _distilled_images(folder: Path) -> tuple[tuple[int, ...], dict] | None:
    """(image shape, dataset settings) that the distill folder `folder` records (its distill.json, and the
    dataset: section of its config.yaml, {} if unreadable), or None if it records no image shape (a latents
    file from elsewhere, a damaged record)."""
    try:
        record = json.loads((folder / "distill.json").read_text(encoding="utf-8"))["record"]
        shape = tuple(int(v) for v in record["dataset"]["image_shape"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        settings = safe_yaml((folder / "config.yaml").read_text(encoding="utf-8"))["dataset"]
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        settings = {}
    return shape, settings if isinstance(settings, dict) else {}
