"""Train a network on a small image set and test it on the real test split.

The default is the protocol of DC / DSA / DM / IDM / BACON (PROTOCOLS.md section 1): SGD lr 0.01,
momentum 0.9, weight decay 5e-4, batch 256, cross-entropy, lr x0.1 from epoch E//2 + 1 (0-based);
1000 epochs with DSA augmentation, 300 without. The other presets (`soft`, `minimax`; see
`latentdd.evaluate.protocols`) change the optimiser, schedule, augmentation and loss. Reported:
mean and std over `num_eval` independently initialised runs, each tested after its final epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from pydantic import Field

from latentdd.checkpoint import StateRejected, check_count, load_optimizer, restore, save_state
from latentdd.config import (Checked, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                             Probability)
from latentdd.data.base import LabelledImages, SyntheticImages
from latentdd.errors import DataError, LatentDDError
from latentdd.evaluate.protocols import (LOSSES, OPTIMIZERS, PROTOCOL_SOURCES, PROTOCOLS, SCHEDULES, TEACHER_LOSSES,
                                         CropFlip, cutmix, epochs_for_ipc, lr_factor, make_optimizer)
from latentdd.io import atomic_write_json
from latentdd.nn.compile import COMPILE_MODES, CompileStatus, CompiledModel
from latentdd.nn.convnet import MODELS, build_model, default_depth
from latentdd.nn.dsa import DiffAugment, DSAConfig
from latentdd.nn.factorization import untile
from latentdd.parallel import DataParallel
from latentdd.progress import progress_bar

if TYPE_CHECKING:
    from latentdd.evaluate.relabel import Relabelled

log = logging.getLogger(__name__)


Factor = Annotated[int, Field(ge=1, description="1: no factorization, 2: IDM's --aug")]


@dataclass
class EvalConfig(Checked):
    """Evaluator settings; the defaults are the DSA protocol with ConvNet-3 (see `protocols.PROTOCOLS`)."""

    section: ClassVar[str] = "evaluator"

    model: Literal[tuple(MODELS)] = "convnet"
    width: PositiveInt | None = None  # None: the architecture's own (ConvNet 128, ResNets and VGG-11 64, AlexNet 128)
    depth: PositiveInt | None = None  # ConvNet only; None: 3 up to 32 px, 4 at 64 px, 5 at 128 px
    norm: str | None = None  # None: the architecture's own (instancenorm; AlexNet none)
    act: str = "relu"
    pool: str = "avgpool"
    epochs: PositiveInt | None = 1000  # None: by the set's IPC from epochs_by_ipc (the minimax protocol)
    lr: PositiveFloat = 0.01
    momentum: NonNegativeFloat = 0.9  # SGD only
    weight_decay: NonNegativeFloat = 5e-4
    batch_size: PositiveInt = 256
    dsa: bool = True
    dsa_strategy: str = DSAConfig.strategy
    use_weights: bool = False  # per-sample weighted loss (DDOQ), when the set has weights
    use_soft_labels: bool = False  # soft-label cross-entropy, when the set has soft labels
    num_eval: PositiveInt = 3
    seed: NonNegativeInt = 0  # run i uses seed + i for initialisation, shuffling and augmentation
    test_batch_size: PositiveInt = 1000
    compile: Literal[COMPILE_MODES] = "auto"  # torch.compile the training step: auto (fall back to eager) | on | off
    factor: Factor = 1  # factorization: train on factor x factor upsampled tiles of each image (IDM's --aug: 2); 1 = off
    protocol: Literal[tuple(PROTOCOLS)] = "dsa"  # the preset these settings started from (a label: the settings are the fields)
    optimizer: Literal[OPTIMIZERS] = "sgd"  # sgd (lr, momentum, weight_decay) | adamw (lr, weight_decay)
    schedule: Literal[SCHEDULES] = "step"  # step: x gamma from epoch E//2 + 1 | multistep: x gamma at each milestone | cosine
    milestones: tuple[Annotated[float, Field(gt=0, lt=1)], ...] = ()  # multistep: fractions of the epochs (2/3, 5/6 -> 2E//3, 5E//6)
    gamma: PositiveFloat = 0.1
    crop_scale: tuple[float, float] | None = None  # per-image RandomResizedCrop area range; None: no crop
    hflip: bool = False  # per-image horizontal flip (not for datasets that flips change, e.g. digits)
    cutmix: Probability = 0.0  # probability that a batch is CutMixed; 0: never
    cutmix_alpha: PositiveFloat = 1.0  # CutMix's Beta(alpha, alpha)
    loss: Literal[LOSSES] = "ce"  # ce: on the set's labels | teacher_kl: the teacher's, online | static_kl: fixed soft ones
    temperature: PositiveFloat = 4.0  # teacher_kl, static_kl: T of KL(label_T || student_T) * T^2
    relabel: NonNegativeInt = 0  # teacher_kl: 0 the teacher labels every batch; K: its labels of K epochs of views, computed once and replayed (FKD)
    relabel_topk: PositiveInt = 10  # relabel: the logits kept per view (its top-k classes)
    epochs_by_ipc: dict[int, int] | None = None  # {IPC bound: epochs}, used when epochs is None; beyond: 300

    @classmethod
    def preset(cls, name: str, **overrides) -> "EvalConfig":
        """The settings of protocol `name` (see `protocols.PROTOCOLS`), then overrides."""
        if name not in PROTOCOLS:
            raise DataError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
        return dataclasses.replace(cls(**(PROTOCOLS[name] | {"protocol": name})), **overrides)

    def __post_init__(self) -> None:
        super().__post_init__()
        spec = MODELS[self.model]
        if self.norm is not None and self.norm not in spec.norms:
            raise DataError(f"evaluator.norm must be one of {', '.join(spec.norms)} for model {self.model}; "
                            f"got {self.norm!r}")
        if self.depth is not None and not spec.has_depth:
            raise DataError(f"evaluator.depth applies to convnet only; {self.model} has its depth in its name "
                            "(leave depth unset)")
        if self.epochs is None and not self.epochs_by_ipc:
            raise DataError("evaluator.epochs is unset and there is no epochs_by_ipc table; set epochs (e.g. 1000)")
        if self.crop_scale is not None and not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise DataError(f"evaluator.crop_scale must be (low, high) with 0 < low <= high <= 1; got {self.crop_scale!r}")
        if self.relabel and self.loss != "teacher_kl":
            raise DataError(f"evaluator.relabel replays the teacher's labels of stored views (loss teacher_kl); loss "
                            f"{self.loss} has no teacher at training time: set relabel 0")
        if self.loss in TEACHER_LOSSES and self.use_soft_labels:
            raise DataError(f"evaluator.loss {self.loss} brings its own soft labels (teacher_kl: the teacher's; "
                            "static_kl: the set's, else the teacher's); unset use_soft_labels (or use loss ce to train "
                            "on the set's own soft labels with cross-entropy)")

    @property
    def uses_teacher(self) -> bool:
        """Whether this loss may need a teacher: teacher_kl always, static_kl for sets without soft labels."""
        return self.loss in TEACHER_LOSSES

    def arch_kwargs(self, image_size: int) -> dict:
        """The architecture's options, every default resolved (they go into the record)."""
        spec = MODELS[self.model]
        width, norm = self.width or spec.width, self.norm or spec.norm
        if spec.has_depth:
            return {"width": width, "depth": self.depth or default_depth(image_size), "norm": norm,
                    "act": self.act, "pool": self.pool}
        return {"width": width, "norm": norm}

    def resolved_epochs(self, ipc: int) -> int:
        """`epochs`, or when unset the epochs_by_ipc entry for `ipc` images per class (as trained, after factorization)."""
        return self.epochs if self.epochs is not None else epochs_for_ipc(self.epochs_by_ipc, ipc)

    def departures(self) -> dict[str, tuple]:
        """The settings that differ from the preset of `protocol`: {field: (this, the protocol's)}, e.g. a light
        evaluation's {"epochs": (300, 1000)}. Empty: the protocol as published."""
        preset = EvalConfig.preset(self.protocol)
        return {f.name: (getattr(self, f.name), getattr(preset, f.name)) for f in dataclasses.fields(self)
                if f.name not in ("num_eval", "seed", "compile", "use_weights", "use_soft_labels", "factor")
                and getattr(self, f.name) != getattr(preset, f.name)}

    def identity(self) -> dict:
        """What names an evaluation of these settings in a content key: every field but `protocol` (a label),
        with the architecture's width and norm resolved."""
        out = dataclasses.asdict(self)
        out.pop("protocol")
        if not out["relabel"]:  # online labels: the identity every evaluation had before relabelling existed
            out.pop("relabel"), out.pop("relabel_topk")
        spec = MODELS[self.model]
        out["width"], out["norm"] = self.width or spec.width, self.norm or spec.norm
        if self.model != "convnet":
            out["architecture_version"] = 2  # ResNet-18's small-input stem and the students of issue 13
        return out

    def record(self, image_size: int, *, flip: bool, has_weights: bool, has_soft: bool,
               num_images: int | None = None, compile_status: "CompileStatus | None" = None,
               teacher: dict | None = None) -> dict:
        """The evaluator part of the protocol record; `num_images`: stored images, before factorization;
        `compile_status`: how the training ran (None: not known, only the setting is recorded);
        `teacher`: the record of the teacher that labelled the batches (loss teacher_kl) or the images (static_kl
        on a set without soft labels)."""
        trained = None if num_images is None else num_images * self.factor**2
        v2_parts = []
        if self.crop_scale is not None:
            v2_parts.append(f"random_resized_crop(scale {self.crop_scale[0]:g}-{self.crop_scale[1]:g})")
        if self.hflip and flip:
            v2_parts.append("flip")
        if self.cutmix > 0:
            v2_parts.append(f"cutmix(p {self.cutmix:g}, beta {self.cutmix_alpha:g})")
        dsa = (self.dsa_strategy if flip else self.dsa_strategy.replace("_flip", "")) if self.dsa else None
        augmentation = "+".join(([dsa] if dsa else []) + v2_parts) or "none"
        if self.loss == "teacher_kl" and self.relabel:
            labels = (f"soft: the teacher's top-{self.relabel_topk} of {self.relabel} stored epochs of augmented "
                      "batches, computed once and replayed (FKD relabel)")
        elif self.loss == "teacher_kl":
            labels = "soft: the teacher's, for every augmented batch"
        elif self.loss == "static_kl":
            labels = ("static soft: the teacher's of each training image, computed once before training" if teacher
                      else "static soft: the set's own")
        else:
            labels = "soft" if (self.use_soft_labels and has_soft) else "hard"
        return {
            "protocol": self.protocol,
            "protocol_source": PROTOCOL_SOURCES.get(self.protocol),
            "architecture": self.model,
            **self.arch_kwargs(image_size),
            "epochs": self.epochs,
            "optimizer": (f"SGD lr {self.lr} momentum {self.momentum} weight_decay {self.weight_decay}"
                          if self.optimizer == "sgd" else f"AdamW lr {self.lr} weight_decay {self.weight_decay}"),
            "batch_size": self.batch_size,
            "lr_schedule": self._schedule_text(),
            "augmentation": augmentation,
            "augmentation_mode": "DSA single (one group per batch), per-image parameters" if self.dsa else None,
            "labels": labels,
            "loss": {"teacher_kl": f"T^2 KL(teacher || student) at T = {self.temperature:g}",
                     "static_kl": f"T^2 KL(label || student) at T = {self.temperature:g}"}.get(self.loss, "cross-entropy"),
            "teacher": teacher,
            "sample_weights": bool(self.use_weights and has_weights),
            "factorization": {"factor": self.factor, "images_trained": trained} if self.factor > 1 else False,
            "normalisation": "per-channel mean/std of the real train split",
            "std": "population std (numpy default) over runs, as DC/DSA report",
            **(compile_status.record() if compile_status else {"compile": self.compile}),
            "settings": _plain_settings(self),  # every field, as resolved
        }

    def _schedule_text(self) -> str:
        epochs = self.epochs or 0
        if self.schedule == "step":
            if self.gamma == 0.1:
                return f"x0.1 from epoch {epochs // 2 + 1} (0-based) on"
            return f"x{self.gamma:g} from epoch {epochs // 2 + 1} (0-based) on"
        if self.schedule == "multistep":
            at = [int(f * epochs + 1e-9) for f in self.milestones]
            return f"x{self.gamma:g} at each of epochs {at} (0-based)"
        return f"cosine per epoch: lr * (1 + cos(pi * epoch / {epochs})) / 2"


def _plain_settings(config: EvalConfig) -> dict:
    out = dataclasses.asdict(config)
    for key, value in out.items():
        if isinstance(value, tuple):
            out[key] = list(value)
    if out.get("epochs_by_ipc"):
        out["epochs_by_ipc"] = {str(k): v for k, v in out["epochs_by_ipc"].items()}
    return out


@dataclass
class EvalReport:
    """Test accuracies (percent, final epoch) of `num_eval` runs and the record behind them."""

    accuracies: list[float]
    seeds: list[int]
    train_seconds: list[float]
    wall_seconds: float
    record: dict = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))

    def summary(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f} (n={len(self.accuracies)})"

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, **dataclasses.asdict(self)}

    def save_json(self, path) -> None:
        atomic_write_json(path, self.to_dict())


def channel_stats(data: LabelledImages, max_streamed: int = 20000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (C,) of a split: all of it when in memory, else a seeded
    sample of at most `max_streamed` images (a streamed folder is not decoded whole)."""
    images = getattr(data, "images", None)
    if images is None:
        n = len(data)
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_streamed].sort().values
        images = data.load(idx)
    return images.mean(dim=(0, 2, 3)), images.std(dim=(0, 2, 3))


def _normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


class _Step(CompiledModel):
    """SGD steps and test forwards of one model, through torch.compile when asked and able (`CompiledModel`)."""

    def _loss(self, x, y, weights, soft, temperature, denominator=None) -> torch.Tensor:
        logits = self.forward(x)
        if temperature is not None:  # soft (B, K): the teacher's or the static labels, at this temperature
            log_student = F.log_softmax(logits / temperature, dim=1)
            per_sample = (torch.special.xlogy(soft, soft) - soft * log_student).sum(1) * temperature**2
        elif soft is not None:
            per_sample = -(soft * F.log_softmax(logits, dim=1)).sum(1)
        else:
            per_sample = F.cross_entropy(logits, y, reduction="none")
        if denominator is not None:  # a shard of a batch: its part of the whole batch's (weighted) mean
            return (per_sample if weights is None else weights * per_sample).sum() / denominator
        if weights is None:
            return per_sample.mean()
        return (weights * per_sample).sum() / weights.sum().clamp_min(1e-12)

    def train(self, optimizer, x, y, weights=None, soft=None, temperature=None, *, group: DataParallel | None = None,
              denominator=None) -> torch.Tensor:
        """One optimiser step on the batch; with a `group` of several processes, on this process's shard of it:
        its loss is its part of the whole batch's (`denominator`: the whole batch's size or weight), and the
        gradients and losses are summed over the processes before the step. Returns the whole batch's loss."""
        def run():
            optimizer.zero_grad(set_to_none=True)
            if len(x) == 0:  # a shard left empty by a batch smaller than the group
                for param in self.model.parameters():
                    param.grad = torch.zeros_like(param)
                return torch.zeros((), device=x.device)
            loss = self._loss(x, y, weights, soft, temperature, denominator)
            loss.backward()
            return loss

        loss = self.guarded("train", run).detach()
        if group is not None and group.size > 1:
            grads = [param.grad for param in self.model.parameters() if param.grad is not None]
            loss = loss.reshape(1).clone()
            group.sum_(grads + [loss])
            loss = loss[0]
        optimizer.step()
        return loss

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.guarded("test", lambda: self.forward(x)).argmax(1)


def train_model(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    config: EvalConfig,
    mean: torch.Tensor,
    std: torch.Tensor,
    flip: bool = True,
    seed: int = 0,
    weights: torch.Tensor | None = None,
    soft_labels: torch.Tensor | None = None,
    progress: bool = False,
    compile_status: CompileStatus | None = None,
    teacher=None,
    loss_history: list | None = None,
    checkpoint: Path | None = None,
    on_epoch: Callable[[int, torch.nn.Module], dict] | None = None,
    epoch_log: list | None = None,
    device: torch.device | str | None = None,
    group: DataParallel | None = None,
    relabelled: Relabelled | None = None,
) -> torch.nn.Module:
    """Train a freshly initialised model on images (N, C, H, W) in [0, 1] with labels (N,).

    weights (N,) turn the loss into a weighted mean; soft_labels (N, K) replace the hard
    targets (loss static_kl: they are the labels at the config's temperature, `tempered`).
    `compile_status` (mode config.compile) is told whether the steps ran compiled.
    The optimiser, lr schedule, augmentation and loss are the config's (its protocol preset).
    `teacher` (loss teacher_kl): a callable images (B, C, H, W) in [0, 1] -> logits (B, K) that
    labels every augmented batch. `loss_history`, when given, receives each epoch's mean loss.
    `epoch_log`, when given, receives one dict per epoch: {"epoch", "seconds" (its training), "loss"
    (its mean)} and what `on_epoch(epoch, model)` returns (e.g. a val accuracy; the model is put back
    in training mode after it).
    `checkpoint`: a file (`latentdd.checkpoint.save_state`) written after every epoch but the last with
    the model, the optimizer, the generator's state, the epoch and the logs; a call that finds a usable
    one there resumes from it and ends with the weights, bit for bit, of an uninterrupted training on as many
    threads (every draw comes from the one generator, whose state the file holds). One that does not fit
    (another architecture, a later epoch than this training has) is ignored with a warning.
    `device`: where the model trains (default the CPU; the teacher must be there too). `group`: the processes
    that share this training (`DataParallel`, default this one alone): each draws the same batches and trains on
    its shard of each, their gradients summed before every step, so that the training is one process's up to
    the order of floating-point sums (every process must call this with the same arguments).
    `relabelled` (loss teacher_kl): the teacher's labels of stored epochs of augmented batches (`relabel`), replayed
    instead of running the teacher: epoch e draws the batches of stored epoch e mod its views, whatever `seed`
    (which then sets the initialisation only), with their stored labels.
    Returns the model after the final epoch, in eval mode.
    """
    group = group or DataParallel()
    if group.size > 1 and checkpoint is not None:
        raise DataError("a training shared by several processes keeps no epoch checkpoint; run it in one process "
                        "to resume it epoch by epoch")
    if not torch.isfinite(images).all():
        raise DataError("the training images contain NaN or infinite values")
    n, c, h, w = images.shape
    if h != w:
        raise DataError(f"the evaluator expects square images; got {h}x{w}")
    if config.loss == "teacher_kl" and teacher is None and relabelled is None:
        raise DataError(f"protocol {config.protocol} (loss teacher_kl) needs a teacher: fit one with "
                        "`latentdd fit-teacher` or pass --teacher")
    if config.loss == "static_kl" and soft_labels is None:
        raise DataError(f"protocol {config.protocol} (loss static_kl) trains on a soft label per image; none given")
    epochs_total = config.resolved_epochs(-(-n // num_classes))
    with torch.random.fork_rng(devices=[]):  # initialisation from the seed, caller's RNG untouched
        torch.manual_seed(seed)
        model = build_model(config.model, c, num_classes, h, **config.arch_kwargs(h))
    device = torch.device(device or "cpu")
    model.to(device)
    mean, std = mean.to(device), std.to(device)
    gen = torch.Generator().manual_seed(seed)  # on the CPU: every draw is the same whatever the device
    augment, crop_flip = augmentations(config, h, flip)
    optimizer = make_optimizer(config.optimizer, model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    step = _Step(model, config.compile, compile_status)
    x_all = _normalise(images.float().to(device), mean, std)
    y_all = labels.long().to(device)
    weights = None if weights is None else weights.to(device)
    soft_labels = None if soft_labels is None else soft_labels.to(device)
    temperature = config.temperature if config.loss in TEACHER_LOSSES else None
    losses = [] if loss_history is None and epoch_log is not None else loss_history
    first = 0
    if checkpoint is not None:
        first = _resume(checkpoint, model, optimizer, gen, epochs_total, losses, epoch_log)
    model.train()
    epochs = progress_bar(range(first, epochs_total), desc=f"train seed {seed}", disable=not progress, leave=False,
                          initial=first, total=epochs_total)
    for epoch in epochs:
        t0 = time.perf_counter()
        lr = config.lr * lr_factor(config.schedule, epoch, epochs_total, gamma=config.gamma,
                                   milestones=config.milestones)
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr
        total, position = 0.0, 0
        view = None if relabelled is None else epoch % relabelled.views  # the stored epoch of batches replayed
        batches = epoch_batches(x_all, y_all, weights, soft_labels, config, num_classes, augment, crop_flip,
                                 gen if view is None else relabelled.generator(view))
        for idx, x, y, batch_weights, soft in batches:
            if view is not None:
                soft = relabelled.labels(view, position, len(idx), temperature).to(device)
                position += len(idx)
            denominator = None
            if group.size > 1:  # the whole batch was drawn; this process trains on its shard of it
                denominator = len(idx) if batch_weights is None else batch_weights.sum().clamp_min(1e-12)
                part = group.shard(len(idx))
                x, y = x[part], y[part]
                batch_weights = None if batch_weights is None else batch_weights[part]
                soft = None if soft is None else soft[part]
            if teacher is not None and config.loss == "teacher_kl" and view is None and len(x):
                with torch.no_grad():  # the teacher sees the augmented batch in [0, 1]
                    soft = F.softmax(teacher(x * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)) / temperature, dim=1)
            loss = step.train(optimizer, x, y, batch_weights, soft, temperature, group=group, denominator=denominator)
            if losses is not None:
                total += float(loss) * len(idx)
        if losses is not None:
            losses.append(total / n)
        if not torch.isfinite(loss):
            raise LatentDDError(f"training diverged (loss {loss.item()}) at epoch {epoch}; lower the learning rate")
        if epoch_log is not None:
            entry = {"epoch": epoch, "seconds": time.perf_counter() - t0, "loss": losses[-1]}
            if on_epoch is not None:
                entry |= on_epoch(epoch, model) or {}
                model.train()
            epoch_log.append(entry)
        if checkpoint is not None and epoch + 1 < epochs_total:
            save_state(checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "generator": gen.get_state(), "epoch": epoch + 1, "losses": list(losses or []),
                                    "epoch_log": list(epoch_log or [])})
        if progress and epoch % 50 == 0:
            epochs.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


def augmentations(config: EvalConfig, size: int, flip: bool) -> tuple[DiffAugment | None, CropFlip | None]:
    """The config's DSA and its crops and flips for images of side `size` (None where it has none)."""
    augment = DiffAugment(DSAConfig(strategy=config.dsa_strategy), flip=flip) if config.dsa else None
    crop_flip = CropFlip(size, config.crop_scale, config.hflip and flip) if (config.crop_scale or config.hflip) else None
    return augment, crop_flip


def epoch_batches(x_all, y_all, weights, soft_labels, config: EvalConfig, num_classes: int, augment, crop_flip,
                   gen: torch.Generator):
    """One epoch's batches as the config draws them from `gen` (order, DSA, crops and flips, CutMix), each
    (indices (b,), x (b, C, H, W) normalised and augmented, labels (b,), weights (b,) or None, soft targets (b, K)
    or None: the set's soft labels, CutMixed; one-hot ones when CutMix mixes a batch without any). Drawn lazily:
    the generator is at the same state for a batch whatever its caller does between two."""
    n = len(x_all)
    order = torch.randperm(n, generator=gen)
    for start in range(0, n, config.batch_size):
        idx = order[start : start + config.batch_size]
        x = x_all[idx]
        if augment is not None:
            x = augment(x, gen)
        if crop_flip is not None:
            x = crop_flip(x, gen)
        batch_weights = weights[idx] if weights is not None else None
        soft = soft_labels[idx] if soft_labels is not None else None
        y = y_all[idx]
        if config.cutmix > 0 and float(torch.rand((), generator=gen)) < config.cutmix:
            targets = soft if soft is not None else F.one_hot(y, num_classes).float()
            x, soft, batch_weights, _ = cutmix(x, targets, batch_weights, alpha=config.cutmix_alpha, generator=gen)
        yield idx, x, y, batch_weights, soft


def _resume(path: Path, model: torch.nn.Module, optimizer, gen: torch.Generator, epochs_total: int,
            losses: list | None, epoch_log: list | None) -> int:
    """Load the checkpoint `train_model` wrote at `path` into model, optimizer, generator and logs; the epoch
    to start from (0 when there is none or it does not fit, with a warning naming the file)."""

    def load(state: dict) -> int:
        epoch = check_count(state["epoch"], epochs_total - 1, "epoch")  # none is written after the last epoch
        want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        have = {k: tuple(v.shape) for k, v in state["model"].items()}
        if have != want:
            raise StateRejected("it holds the weights of another architecture")
        if len(state["losses"]) not in (0, epoch) or len(state["epoch_log"]) not in (0, epoch):
            raise StateRejected(f"its logs do not cover its {epoch} epochs")
        model.load_state_dict(state["model"])
        load_optimizer(optimizer, state["optimizer"])
        gen.set_state(state["generator"])
        if losses is not None:
            losses[:] = [float(v) for v in state["losses"]]
        if epoch_log is not None:
            epoch_log[:] = list(state["epoch_log"])
        return epoch

    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    epoch = restore(path, load, otherwise="the training starts afresh")
    if epoch is None:  # a load that failed half-way may have changed the model: back to its initialisation
        model.load_state_dict(fresh)
        optimizer.state.clear()
        return 0
    log.info("resuming the training from %s at epoch %d of %d", path, epoch, epochs_total)
    return epoch


def tempered(log_labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """(N, K) log-probabilities -> the label distributions at `temperature`: softmax(log_labels / T), which is
    softmax(logits / T) for labels that are softmax(logits); a zero probability stays zero."""
    return F.softmax(log_labels.float() / temperature, dim=1)


@torch.no_grad()
def top1_accuracy(
    model: torch.nn.Module, test_set: LabelledImages, *, mean, std, batch_size: int = 1000, compile: str = "off",
    compile_status: CompileStatus | None = None, group: DataParallel | None = None,
) -> float:
    """Top-1 accuracy in percent of `model` on every image of `test_set` (on the model's device); with a `group`
    of several processes each tests every size-th batch and the counts are summed."""
    group = group or DataParallel()
    model.eval()
    device = next(model.parameters()).device
    mean, std = mean.to(device), std.to(device)
    runner = _Step(model, compile, compile_status)
    counts = torch.zeros(2, dtype=torch.float64, device=device)  # correct, total
    batches = (test_set.iter_batches(batch_size) if group.size == 1 else  # every size-th batch, from rank on
               ((test_set.load(idx), test_set.labels[idx]) for idx in
                torch.arange(len(test_set)).split(batch_size)[group.rank :: group.size]))
    for images, labels in batches:
        pred = runner.predict(_normalise(images.float().to(device), mean, std))
        counts += torch.stack([(pred == labels.to(device)).sum(), torch.tensor(labels.numel(), device=device)])
    group.sum_([counts])
    correct, total = (int(v) for v in counts.tolist())
    if total == 0:
        raise DataError("the test split is empty")
    return 100.0 * correct / total


def evaluate_synthetic(
    synthetic: SyntheticImages,
    test_set: LabelledImages,
    config: EvalConfig,
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    flip: bool = True,
    record: dict | None = None,
    progress: bool = True,
    teacher=None,
    done: dict[int, dict] | None = None,
    on_training=None,
    device: torch.device | str | None = None,
    group: DataParallel | None = None,
    relabel_dir: Path | None = None,
) -> EvalReport:
    """Train `config.num_eval` models on the synthetic set, test each on `test_set`.

    With `config.factor` f > 1 every stored image (N, C, H, W) is split into f x f tiles,
    each upsampled to H x W (see `factorization.untile`): the models train on f**2 * N
    images whose labels, soft labels and weights (divided by f**2) repeat per tile.
    `mean`/`std` (C,) are the real train split's statistics (see `channel_stats`);
    `flip=False` drops flips from DSA for classes that flipping changes. `record` is
    the protocol record of the stages before; the evaluator's part is added to it, and
    `missing_classes`: the classes the set has no image of (warned about; [] for a full set).
    `teacher` (protocol soft, loss teacher_kl; or static_kl, for a set without soft labels, whose training images
    it labels once): see `latentdd.evaluate.teacher`; its record,
    test accuracy included, goes into the evaluator's. With `config.epochs` unset the epochs
    come from `config.epochs_by_ipc` for the set's IPC (as trained: times factor**2, as Minimax).
    `done`: trainings already finished, by seed ({"accuracy", "seconds", "compiled", "report"}), from an
    evaluation of the same set, data and settings but for num_eval (a training is its seed's alone): they
    are taken, not run again, and the record lists them under `reused_trainings`.
    `on_training(seed, accuracy, seconds, compile_record)` is called after each training this call runs, so that
    a caller can keep it before the evaluation ends (`compile_record`: how the trainings so far ran); with a
    `group` of several processes, by the main process only.
    `device`, `group`: where each training runs and the processes that share it (`train_model`); every process of
    the group calls this with the same arguments and gets the same report.
    With `config.relabel` K > 0 (loss teacher_kl) the teacher labels K epochs of views of the set once
    (`latentdd.evaluate.relabel`, cached under `relabel_dir` when given) and every training replays them.
    """
    group = group or DataParallel()
    progress = progress and group.is_main
    if synthetic.class_names != list(test_set.class_names):
        raise DataError(
            f"the synthetic set's classes {synthetic.class_names[:5]}... differ from the test split's "
            f"{list(test_set.class_names)[:5]}...; evaluate against the dataset the set was made from"
        )
    sample = test_set.load([0])
    if tuple(sample.shape[1:]) != synthetic.image_shape:
        raise DataError(
            f"synthetic images are {synthetic.image_shape} (C, H, W) but test images are {tuple(sample.shape[1:])}; "
            "load the dataset with the same image_size/channels"
        )
    counts = torch.bincount(synthetic.labels, minlength=synthetic.num_classes)
    missing = [name for name, count in zip(synthetic.class_names, counts.tolist()) if count == 0]
    if missing:  # e.g. an external folder with only some class folders: its models never see those classes
        log.warning("the set has no images of %d of its %d classes (%s); its models cannot learn them, so the "
                    "accuracy is not comparable to a full set's; the record lists them under missing_classes",
                    len(missing), synthetic.num_classes, ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else ""))
    weights = synthetic.weights if config.use_weights else None
    if config.use_weights and weights is None:
        raise DataError("use_weights is set but the synthetic set carries no weights")
    soft = synthetic.soft_labels if config.use_soft_labels else None
    if config.use_soft_labels and soft is None:
        raise DataError("use_soft_labels is set but the synthetic set carries no soft labels")
    tiles = config.factor**2
    if config.epochs is None:
        config = dataclasses.replace(config, epochs=config.resolved_epochs(int(counts.max()) * tiles))
    images = untile(synthetic.images.float(), config.factor)  # (tiles*N, C, H, W), tile-major
    labels = synthetic.labels.repeat(tiles)
    weights = None if weights is None else weights.repeat(tiles) / tiles  # each stored image keeps its weight
    soft = None if soft is None else soft.repeat(tiles, 1)
    labelled_by = None  # static_kl: the teacher whose labels of the training images stand in for the set's own
    if config.loss == "static_kl":
        if synthetic.soft_labels is not None:
            log_labels = synthetic.soft_labels.repeat(tiles, 1).log()
        elif teacher is None:
            raise DataError(f"protocol {config.protocol} (loss static_kl) trains on a soft label per image: this set "
                            "carries none, so a teacher must label it; fit one with `latentdd fit-teacher` or pass "
                            "--teacher")
        else:
            from latentdd.evaluate.teacher import teacher_log_probs

            log_labels, labelled_by = teacher_log_probs(teacher, images), teacher
        soft = tempered(log_labels, config.temperature)
    relabelled = None
    if config.relabel and any(config.seed + i not in (done or {}) for i in range(config.num_eval)):
        if teacher is None:
            raise DataError(f"evaluator.relabel stores a teacher's labels; protocol {config.protocol} got no teacher")
        from latentdd.evaluate.relabel import relabel

        relabelled = relabel(images, labels, config=config, teacher=teacher, mean=mean, std=std, flip=flip,
                             views=config.relabel, topk=config.relabel_topk, seed=0, num_classes=synthetic.num_classes,
                             cache_dir=relabel_dir, progress=progress)
    start = time.perf_counter()
    seeds = [config.seed + i for i in range(config.num_eval)]
    accuracies, seconds = [], []
    status = CompileStatus(config.compile)
    runs = progress_bar(seeds, desc=f"evaluate {len(synthetic)} images", disable=not progress)
    done = done or {}
    for seed in runs:
        if seed in done:
            accuracies.append(float(done[seed]["accuracy"]))
            seconds.append(float(done[seed]["seconds"]))
            continue
        t0 = time.perf_counter()
        model = train_model(
            images, labels, num_classes=synthetic.num_classes, config=config, mean=mean,
            std=std, flip=flip, seed=seed, weights=weights, soft_labels=soft, progress=progress,
            compile_status=status, teacher=teacher if config.loss == "teacher_kl" else None, device=device,
            group=group, relabelled=relabelled,
        )
        seconds.append(time.perf_counter() - t0)
        accuracies.append(
            top1_accuracy(model, test_set, mean=mean, std=std, batch_size=config.test_batch_size,
                          compile=config.compile, compile_status=status, group=group)
        )
        runs.set_postfix(acc=f"{accuracies[-1]:.2f}", mean=f"{np.mean(accuracies):.2f}")
        if on_training is not None and group.is_main:
            on_training(seed, accuracies[-1], seconds[-1], status.record())
    full_record = copy.deepcopy(record) if record else {}
    full_record["evaluator"] = config.record(
        synthetic.image_shape[-1], flip=flip, has_weights=weights is not None, has_soft=soft is not None,
        num_images=len(synthetic), compile_status=status,
        teacher=getattr(teacher if config.loss == "teacher_kl" else labelled_by, "record", None),
    )
    if relabelled is not None:
        full_record["evaluator"]["relabel"] = relabelled.record
    full_record["evaluator"]["device"] = str(torch.device(device or "cpu"))
    full_record["evaluator"]["processes"] = group.size  # data-parallel: each training's batches split over them
    full_record["missing_classes"] = missing  # classes without a single training image
    full_record["num_eval"] = config.num_eval
    full_record["seeds"] = seeds
    reused = [{"seed": seed, **{k: done[seed].get(k) for k in ("report", "compiled")}} for seed in seeds if seed in done]
    if reused:
        full_record["reused_trainings"] = reused
    return EvalReport(accuracies, seeds, seconds, time.perf_counter() - start, full_record)
