"""The teacher's labels computed once (FKD's relabel; Shen & Xing, ECCV 2022), for the `soft` protocols.

Online (`teacher_kl`), the teacher labels every augmented batch of every training: a forward pass per student
step, the same teacher on the same kind of views for every training of a table. `relabel` draws `views` epochs
of augmented batches of a set once -- each epoch from its own generator, seeded by (seed, epoch), with the
trainer's own code (`trainer.epoch_batches`: order, crops and flips, CutMix pairs and boxes) -- and keeps the
teacher's top-k logits of every image of them. A training then replays them: epoch e draws the batches of stored
epoch e mod views from the same generator (so the same crops, flips and CutMix pairs) and trains on the stored
labels, with no teacher. What it stores is what regenerates the views -- the seed -- and the labels; the views
are drawn again, not stored.

As in FKD, every training of a set replays the same views: a training's seed sets its initialisation only. With
views < epochs the views repeat (FKD relabels a set once for its 300-epoch trainings). The labels of the top-k
classes are kept (all of them when k >= the classes); the others get no mass. Cached by content
(`relabel_key`): the set's training images, the teacher, the augmentation settings, views, k and the seed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load, save

from latentdd.cachekey import content_key, tensor_sha256
from latentdd.errors import DataError
from latentdd.io import atomic_write_bytes

log = logging.getLogger(__name__)

RELABEL_VERSION = 1
# What draws the views and what the teacher sees of them: the settings a relabel depends on.
VIEW_SETTINGS = ("batch_size", "dsa", "dsa_strategy", "crop_scale", "hflip", "cutmix", "cutmix_alpha")


def view_generator(seed: int, view: int) -> torch.Generator:
    """The generator that draws stored epoch `view` of a relabel with `seed`."""
    return torch.Generator().manual_seed(seed * 1_000_003 + view)


@dataclass
class Relabelled:
    """The teacher's top-k logits of `views` epochs of augmented batches: values (views, N, k) float32 and the
    classes they belong to, indices (views, N, k) int64, image j of an epoch being its j-th in batch order."""

    values: torch.Tensor
    indices: torch.Tensor
    num_classes: int
    seed: int
    record: dict = field(default_factory=dict)

    @property
    def views(self) -> int:
        return int(self.values.shape[0])

    def generator(self, view: int) -> torch.Generator:
        return view_generator(self.seed, view)

    def labels(self, view: int, start: int, count: int, temperature: float) -> torch.Tensor:
        """The label distributions at `temperature` of images start .. start + count of stored epoch `view`
        (count, K): the softmax of the kept logits over their classes, zero elsewhere."""
        values, indices = self.values[view, start : start + count], self.indices[view, start : start + count]
        out = torch.zeros(count, self.num_classes)
        return out.scatter_(1, indices, F.softmax(values / temperature, dim=1))


def relabel_key(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, flip: bool, config, teacher, *,
                views: int, topk: int, seed: int) -> str:
    """The content key of a relabel: the training images (after untiling) and their normalisation, the view
    settings, the teacher, views, k and seed."""
    return content_key("relabel", version=RELABEL_VERSION, images=tensor_sha256(images.float(), mean, std),
                       flip=flip, settings={name: getattr(config, name) for name in VIEW_SETTINGS},
                       teacher=teacher.key(), views=views, topk=topk, seed=seed)


@torch.no_grad()
def relabel(images: torch.Tensor, labels: torch.Tensor, *, config, teacher, mean: torch.Tensor, std: torch.Tensor,
            flip: bool, views: int, topk: int, seed: int, num_classes: int, cache_dir: Path | None = None,
            progress: bool = False) -> Relabelled:
    """The teacher's labels of `views` epochs of augmented batches of the training images (N, C, H, W) in [0, 1]
    with `labels` (N,), drawn as `trainer.train_model` draws them under `config`; loaded from `cache_dir`/relabel
    when it holds them, else computed and written there (atomically). See the module docstring."""
    from latentdd.evaluate.trainer import _normalise, augmentations, epoch_batches
    from latentdd.progress import progress_bar

    if views < 1 or topk < 1:
        raise DataError(f"a relabel needs views >= 1 and top-k >= 1; got views {views}, k {topk}")
    k = min(topk, num_classes)
    key = relabel_key(images, mean, std, flip, config, teacher, views=views, topk=k, seed=seed)
    record = {"mode": "cached", "views": views, "topk": k, "seed": seed, "key": key, "teacher": teacher.key()}
    path = None if cache_dir is None else Path(cache_dir).expanduser() / "relabel" / f"{key[:24]}.safetensors"
    if path is not None and path.exists():
        stored = load(path.read_bytes())
        if stored["values"].shape[:2] == (views, len(images)):
            log.info("relabel: the teacher's labels of %d views of %d images from %s", views, len(images), path)
            return Relabelled(stored["values"], stored["indices"], num_classes, seed, record | {"path": str(path)})
        log.warning("relabel: %s does not hold %d views of %d images; labelling again", path, views, len(images))
    t0 = time.perf_counter()
    device = teacher.device
    mean_d, std_d = mean.to(device).view(1, -1, 1, 1), std.to(device).view(1, -1, 1, 1)
    x_all = _normalise(images.float().to(device), mean.to(device), std.to(device))
    y_all = labels.long().to(device)
    augment, crop_flip = augmentations(config, images.shape[-1], flip)
    values = torch.empty(views, len(images), k)
    indices = torch.empty(views, len(images), k, dtype=torch.long)
    for view in progress_bar(range(views), desc="relabel", disable=not progress):
        position = 0
        for idx, x, *_ in epoch_batches(x_all, y_all, None, None, config, num_classes, augment, crop_flip,
                                        view_generator(seed, view)):
            logits = teacher(x * std_d + mean_d).float().cpu()
            top = logits.topk(k, dim=1)
            values[view, position : position + len(idx)] = top.values
            indices[view, position : position + len(idx)] = top.indices
            position += len(idx)
    record["seconds"] = time.perf_counter() - t0
    if path is not None:
        atomic_write_bytes(path, save({"values": values.contiguous(), "indices": indices.contiguous()}))
        record["path"] = str(path)
    return Relabelled(values, indices, num_classes, seed, record)


__all__ = ["Relabelled", "relabel", "relabel_key", "view_generator"]
