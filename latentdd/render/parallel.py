"""Rendering split over processes (`accelerate launch`): each renders whole decoder batches; rank 0 joins them.

Process r of W renders the latents [start_r, stop_r): a contiguous run of whole batches of the
decoder's batch_size (`rank_slice`), passing first_index = start_r, so that every latent is
decoded in the batch, and denoised with the noise, it gets in a one-process render (the noise
of latent i depends on (seed, i) alone: `latentdd.render.img2img.latent_generators`). The
joined images are therefore the one-process images, bit for bit. Parts travel as safetensors
files in a folder every process can read (`parts`); rank 0 joins them after a barrier, and tiles
them into the set's stored images where its latents are tiles (`latentdd.render.render_set`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import torch

from latentdd.data.base import SyntheticImages
from latentdd.errors import LatentDDError
from latentdd.latents.types import SyntheticLatents
from latentdd.nn.factorization import tile_set


def rank_slice(num: int, batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of the `num` latents that process `rank` of `world_size` renders: whole batches,
    contiguous, the first ranks taking one batch more when they do not divide evenly."""
    batches = math.ceil(num / batch_size)
    per, extra = divmod(batches, world_size)
    first = rank * per + min(rank, extra)
    count = per + (rank < extra)
    return min(first * batch_size, num), min((first + count) * batch_size, num)


def slice_synthetic(synthetic: SyntheticLatents, start: int, stop: int) -> SyntheticLatents:
    """Rows [start, stop) of `synthetic`, with their labels, weights and soft labels."""
    cut = lambda t: None if t is None else t[start:stop]  # noqa: E731
    return dataclasses.replace(synthetic, latents=synthetic.latents[start:stop], labels=synthetic.labels[start:stop],
                               weights=cut(synthetic.weights), soft_labels=cut(synthetic.soft_labels))


def part_path(parts: Path, rank: int) -> Path:
    return Path(parts) / f"part-{rank:05d}.safetensors"


def render_part(decoder, synthetic: SyntheticLatents, *, seed: int, rank: int, world_size: int, parts: Path) -> Path:
    """Render this rank's slice of `synthetic` and write it to `part_path(parts, rank)` (atomically)."""
    from safetensors.torch import save_file

    start, stop = rank_slice(len(synthetic), decoder.batch_size, rank, world_size)
    images, meta = torch.zeros(0), {}
    if stop > start:
        rendered = decoder.render(slice_synthetic(synthetic, start, stop), seed=seed, first_index=start)
        images, meta = rendered.images.contiguous(), rendered.meta  # (stop - start, C, H, W)
    path = part_path(parts, rank)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({"images": images}, str(tmp), metadata={"start": str(start), "stop": str(stop),
                                                      "meta": json.dumps(meta, default=str)})
    os.replace(tmp, path)
    return path


def join_parts(synthetic: SyntheticLatents, parts: Path, world_size: int) -> SyntheticImages:
    """The parts of `world_size` ranks -> the SyntheticImages of all of `synthetic`, in order."""
    from safetensors import safe_open

    pieces, meta, covered = [], None, 0
    for rank in range(world_size):
        path = part_path(parts, rank)
        try:
            with safe_open(str(path), framework="pt") as f:
                info, images = f.metadata(), f.get_tensor("images")
        except Exception as err:  # noqa: BLE001 - a missing or damaged part
            raise LatentDDError(f"the rendered part {path} of rank {rank} cannot be read ({err}); run the render "
                                "again") from err
        start, stop = int(info["start"]), int(info["stop"])
        if start != covered or (stop > start and len(images) != stop - start):
            raise LatentDDError(f"the rendered parts in {parts} do not tile the {len(synthetic)} latents (rank {rank} "
                                f"holds {start}..{stop}, expected from {covered}); run the render again")
        if stop > start:
            pieces.append(images)
            meta = meta if meta is not None else json.loads(info["meta"])
        covered = stop
    if covered != len(synthetic):
        raise LatentDDError(f"the rendered parts in {parts} cover {covered} of {len(synthetic)} latents")
    return SyntheticImages(torch.cat(pieces), synthetic.labels.clone(), list(synthetic.class_names),
                           weights=synthetic.weights, soft_labels=synthetic.soft_labels, meta=meta or {})


def render_split(decoder, synthetic: SyntheticLatents, *, seed: int, state, parts: Path) -> SyntheticImages | None:
    """Render `synthetic` with the processes of `state` (accelerate's PartialState) -> its stored images on the
    main process (`render_set`'s), None on the others. `parts` must exist and be shared by every process."""
    render_part(decoder, synthetic, seed=seed, rank=state.process_index, world_size=state.num_processes, parts=parts)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return tile_set(join_parts(synthetic, parts, state.num_processes), synthetic.tile_factor)
