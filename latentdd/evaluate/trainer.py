"""Train a network on a small image set and test it on the real test split.

The protocol of DC / DSA / DM / IDM / BACON (PROTOCOLS.md section 1): SGD lr 0.01,
momentum 0.9, weight decay 5e-4, batch 256, cross-entropy, lr x0.1 from epoch E//2 + 1 (0-based);
1000 epochs with DSA augmentation, 300 without. Reported: mean and std over
`num_eval` independently initialised runs, each tested after its final epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from latentdd.data.base import LabelledImages, SyntheticImages
from latentdd.errors import DataError, LatentDDError
from latentdd.evaluate.convnet import MODELS, build_model, default_depth
from latentdd.evaluate.dsa import DiffAugment, DSAConfig
from latentdd.evaluate.factorization import untile
from latentdd.io import atomic_write_json
from latentdd.progress import progress_bar

log = logging.getLogger(__name__)


NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")  # latentdd.evaluate.convnet's


@dataclass
class EvalConfig:
    """Evaluator settings; the defaults are the DSA protocol with ConvNet-3."""

    model: str = "convnet"
    width: int = 128
    depth: int | None = None  # None: 3 up to 32 px, 4 at 64 px, 5 at 128 px
    norm: str = "instancenorm"
    act: str = "relu"
    pool: str = "avgpool"
    epochs: int = 1000
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    dsa: bool = True
    dsa_strategy: str = DSAConfig.strategy
    use_weights: bool = False  # per-sample weighted loss (DDOQ), when the set has weights
    use_soft_labels: bool = False  # soft-label cross-entropy, when the set has soft labels
    num_eval: int = 3
    seed: int = 0  # run i uses seed + i for initialisation, shuffling and augmentation
    test_batch_size: int = 1000
    compile: str = "auto"  # torch.compile the training step: auto (fall back to eager) | on | off
    factor: int = 1  # factorization: train on factor x factor upsampled tiles of each image (IDM's --aug: 2); 1 = off

    @classmethod
    def preset(cls, name: str, **overrides) -> "EvalConfig":
        """`dsa` (1000 epochs, DSA) or `dc` (300 epochs, no augmentation), then overrides."""
        if name not in PROTOCOLS:
            raise DataError(f"unknown protocol {name!r}; choose one of {sorted(PROTOCOLS)}")
        return dataclasses.replace(cls(**PROTOCOLS[name]), **overrides)

    def __post_init__(self) -> None:
        for name, allowed in (("model", MODELS), ("norm", NORMS), ("compile", ("auto", "on", "off"))):
            if getattr(self, name) not in allowed:
                raise DataError(f"evaluator.{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.width < 1 or (self.depth is not None and self.depth < 1):
            raise DataError(f"evaluator.width and depth must be positive; got {self.width!r}, {self.depth!r}")
        if not self.lr > 0 or self.momentum < 0 or self.weight_decay < 0 or self.seed < 0:
            raise DataError(f"evaluator: lr must be > 0 and momentum, weight_decay, seed >= 0; got lr {self.lr!r}, "
                            f"momentum {self.momentum!r}, weight_decay {self.weight_decay!r}, seed {self.seed!r}")
        for name in ("epochs", "batch_size", "num_eval", "test_batch_size"):
            if getattr(self, name) < 1:
                raise DataError(f"{name} must be at least 1; got {getattr(self, name)}")
        if isinstance(self.factor, bool) or not isinstance(self.factor, int) or self.factor < 1:
            raise DataError(f"factor must be a positive integer (1: no factorization, 2: IDM's --aug); "
                            f"got {self.factor!r}")

    def arch_kwargs(self, image_size: int) -> dict:
        if self.model == "convnet":
            return {"width": self.width, "depth": self.depth or default_depth(image_size), "norm": self.norm,
                    "act": self.act, "pool": self.pool}
        return {"norm": self.norm}  # resnet18: instancenorm (as DC's ResNet18) or batchnorm

    def record(self, image_size: int, *, flip: bool, has_weights: bool, has_soft: bool,
               num_images: int | None = None, compile_status: "CompileStatus | None" = None) -> dict:
        """The evaluator part of the protocol record; `num_images`: stored images, before factorization;
        `compile_status`: how the training ran (None: not known, only the setting is recorded)."""
        trained = None if num_images is None else num_images * self.factor**2
        return {
            "architecture": self.model,
            **self.arch_kwargs(image_size),
            "epochs": self.epochs,
            "optimizer": f"SGD lr {self.lr} momentum {self.momentum} weight_decay {self.weight_decay}",
            "batch_size": self.batch_size,
            "lr_schedule": f"x0.1 from epoch {self.epochs // 2 + 1} (0-based) on",
            "augmentation": (self.dsa_strategy if flip else self.dsa_strategy.replace("_flip", "")) if self.dsa else "none",
            "augmentation_mode": "DSA single (one group per batch), per-image parameters" if self.dsa else None,
            "labels": "soft" if (self.use_soft_labels and has_soft) else "hard",
            "sample_weights": bool(self.use_weights and has_weights),
            "factorization": {"factor": self.factor, "images_trained": trained} if self.factor > 1 else False,
            "normalisation": "per-channel mean/std of the real train split",
            "std": "population std (numpy default) over runs, as DC/DSA report",
            **(compile_status.record() if compile_status else {"compile": self.compile}),
        }


PROTOCOLS: dict[str, dict] = {
    "dsa": {"epochs": 1000, "dsa": True},
    "dc": {"epochs": 300, "dsa": False},
}


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


@dataclass
class CompileStatus:
    """How the steps of an evaluation ran: through torch.compile or eagerly (shared by its models).

    `compiled` holds while every step so far ran compiled; `fallback` is the reason of the
    first fall back to eager (mode auto), after which the later models of the evaluation
    run eagerly too, so that its runs do not mix compiled and eager training.
    """

    mode: str  # EvalConfig.compile: auto | on | off
    compiled: bool = field(init=False)  # mode != off, until a fall back
    fallback: str | None = None

    def __post_init__(self) -> None:
        self.compiled = self.mode != "off"

    def record(self) -> dict:
        """The protocol record's fields: compiled and eager training give different accuracies."""
        return {"compile": self.mode, "compiled": self.compiled, "compile_fallback": self.fallback}


class _Step:
    """SGD steps and test forwards of one model, through torch.compile when asked and able.

    Compiled graphs are cached per shape and reused by later models of the same
    architecture, so only the first evaluation of a process pays for compilation.
    """

    def __init__(self, model: torch.nn.Module, mode: str, status: CompileStatus | None = None) -> None:
        self.model = model
        self.mode = mode
        self.status = status or CompileStatus(mode)
        eager = mode == "off" or self.status.fallback is not None
        self.forward = model if eager else torch.compile(model, dynamic=False)
        self.calls = {"train": 0, "test": 0}

    def _guarded(self, phase: str, fn):
        """Run fn(); in mode auto, fall back to eager if compilation fails, on any call: a new
        shape (the smaller last batch, the test batches) compiles again on its first call."""
        self.calls[phase] += 1
        if self.forward is self.model:
            return fn()
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - any compiler failure
            if self.mode == "on":
                raise
            first_line = (str(err).splitlines() or [type(err).__name__])[0][:200]
            reason = f"{phase} call {self.calls[phase]}: {first_line}"
            log.warning("torch.compile failed (%s); running eagerly", reason)
            self.forward = self.model
            self.status.compiled = False
            self.status.fallback = self.status.fallback or reason
            return fn()  # fn starts from zeroed gradients, so a step that failed half-way is redone whole

    def _loss(self, x, y, weights, soft) -> torch.Tensor:
        logits = self.forward(x)
        if soft is not None:
            per_sample = -(soft * F.log_softmax(logits, dim=1)).sum(1)
        else:
            per_sample = F.cross_entropy(logits, y, reduction="none")
        if weights is None:
            return per_sample.mean()
        return (weights * per_sample).sum() / weights.sum().clamp_min(1e-12)

    def train(self, optimizer, x, y, weights=None, soft=None) -> torch.Tensor:
        def run():
            optimizer.zero_grad(set_to_none=True)
            loss = self._loss(x, y, weights, soft)
            loss.backward()
            return loss

        loss = self._guarded("train", run)
        optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self._guarded("test", lambda: self.forward(x)).argmax(1)


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
) -> torch.nn.Module:
    """Train a freshly initialised model on images (N, C, H, W) in [0, 1] with labels (N,).

    weights (N,) turn the loss into a weighted mean; soft_labels (N, K) replace the hard
    targets. `compile_status` (mode config.compile) is told whether the steps ran compiled.
    Returns the model after the final epoch, in eval mode.
    """
    if not torch.isfinite(images).all():
        raise DataError("the training images contain NaN or infinite values")
    n, c, h, w = images.shape
    if h != w:
        raise DataError(f"the evaluator expects square images; got {h}x{w}")
    with torch.random.fork_rng(devices=[]):  # initialisation from the seed, caller's RNG untouched
        torch.manual_seed(seed)
        model = build_model(config.model, c, num_classes, h, **config.arch_kwargs(h))
    gen = torch.Generator().manual_seed(seed)
    augment = DiffAugment(DSAConfig(strategy=config.dsa_strategy), flip=flip) if config.dsa else None
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    step = _Step(model, config.compile, compile_status)
    x_all = _normalise(images.float(), mean, std)
    y_all = labels.long()
    model.train()
    epochs = progress_bar(range(config.epochs), desc=f"train seed {seed}", disable=not progress, leave=False)
    for epoch in epochs:
        if epoch == config.epochs // 2 + 1:
            for group in optimizer.param_groups:
                group["lr"] = config.lr * 0.1
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            x = x_all[idx]
            if augment is not None:
                x = augment(x, gen)
            loss = step.train(
                optimizer, x, y_all[idx],
                weights[idx] if weights is not None else None,
                soft_labels[idx] if soft_labels is not None else None,
            )
        if not torch.isfinite(loss):
            raise LatentDDError(f"training diverged (loss {loss.item()}) at epoch {epoch}; lower the learning rate")
        if progress and epoch % 50 == 0:
            epochs.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


@torch.no_grad()
def top1_accuracy(
    model: torch.nn.Module, test_set: LabelledImages, *, mean, std, batch_size: int = 1000, compile: str = "off",
    compile_status: CompileStatus | None = None,
) -> float:
    """Top-1 accuracy in percent of `model` on every image of `test_set`."""
    model.eval()
    runner = _Step(model, compile, compile_status)
    correct = total = 0
    for images, labels in test_set.iter_batches(batch_size):
        pred = runner.predict(_normalise(images.float(), mean, std))
        correct += int((pred == labels).sum())
        total += labels.numel()
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
) -> EvalReport:
    """Train `config.num_eval` models on the synthetic set, test each on `test_set`.

    With `config.factor` f > 1 every stored image (N, C, H, W) is split into f x f tiles,
    each upsampled to H x W (see `factorization.untile`): the models train on f**2 * N
    images whose labels, soft labels and weights (divided by f**2) repeat per tile.
    `mean`/`std` (C,) are the real train split's statistics (see `channel_stats`);
    `flip=False` drops flips from DSA for classes that flipping changes. `record` is
    the protocol record of the stages before; the evaluator's part is added to it, and
    `missing_classes`: the classes the set has no image of (warned about; [] for a full set).
    """
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
    images = untile(synthetic.images.float(), config.factor)  # (tiles*N, C, H, W), tile-major
    labels = synthetic.labels.repeat(tiles)
    weights = None if weights is None else weights.repeat(tiles) / tiles  # each stored image keeps its weight
    soft = None if soft is None else soft.repeat(tiles, 1)
    start = time.perf_counter()
    seeds = [config.seed + i for i in range(config.num_eval)]
    accuracies, seconds = [], []
    status = CompileStatus(config.compile)
    runs = progress_bar(seeds, desc=f"evaluate {len(synthetic)} images", disable=not progress)
    for seed in runs:
        t0 = time.perf_counter()
        model = train_model(
            images, labels, num_classes=synthetic.num_classes, config=config, mean=mean,
            std=std, flip=flip, seed=seed, weights=weights, soft_labels=soft, progress=progress,
            compile_status=status,
        )
        seconds.append(time.perf_counter() - t0)
        accuracies.append(
            top1_accuracy(model, test_set, mean=mean, std=std, batch_size=config.test_batch_size,
                          compile=config.compile, compile_status=status)
        )
        runs.set_postfix(acc=f"{accuracies[-1]:.2f}")
    full_record = copy.deepcopy(record) if record else {}
    full_record["evaluator"] = config.record(
        synthetic.image_shape[-1], flip=flip, has_weights=weights is not None, has_soft=soft is not None,
        num_images=len(synthetic), compile_status=status,
    )
    full_record["missing_classes"] = missing  # classes without a single training image
    full_record["num_eval"] = config.num_eval
    full_record["seeds"] = seeds
    return EvalReport(accuracies, seeds, seconds, time.perf_counter() - start, full_record)
