"""Class consistency: how many rendered images a classifier of REAL images calls their intended class.

A rendered synthetic image can train a good student and still not look like its class
(or the other way round); D4M and DDOQ-style decoders are judged on both. The judge is a
ConvNet trained on the whole real train split (no augmentation, a few epochs), cached
under `cache_dir/<hash16>` (`cachekey.content_key` of its config and the train images'
and labels' checksums), with its
test accuracy kept beside it so that a consistency figure can be read against it.

    judge = fit_judge(train, test, JudgeConfig(), cache_dir)
    class_consistency(judge, synthetic_images)  # {"share": 93.0, "per_class": [...], ...}
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from latentdd.cache import cached
from latentdd.cachekey import content_key, tensor_sha256
from latentdd.checkpoint import StateRejected, restore, save_state
from latentdd.data.base import LabelledImages, data_identity
from latentdd.evaluate.trainer import EvalConfig, _normalise, channel_stats, top1_accuracy, train_model
from latentdd.io import atomic_write_json
from latentdd.nn.convnet import build_model

JUDGE_VERSION = 1  # bump when a change here makes the same config train a different judge
_META, _WEIGHTS = "judge.json", "judge.safetensors"  # the weights: latentdd.checkpoint


@dataclass
class JudgeConfig:
    """The judge: ConvNet-`depth` of `width` channels, SGD as the evaluator's, no augmentation.

    Width 32 (not the evaluator's 128) keeps an epoch of Fashion-MNIST's 60k images near
    20 s on 2 CPU cores; the lr drops x0.1 after half the epochs as in the evaluator.
    """

    width: int = 32
    depth: int | None = None
    epochs: int = 6
    lr: float = 0.01
    batch_size: int = 256
    seed: int = 0

    def eval_config(self) -> EvalConfig:
        return EvalConfig(width=self.width, depth=self.depth, epochs=self.epochs, lr=self.lr,
                          batch_size=self.batch_size, dsa=False, num_eval=1, seed=self.seed, compile="off")


@dataclass
class Judge:
    model: torch.nn.Module
    mean: torch.Tensor  # (C,) of the real train split
    std: torch.Tensor
    report: dict  # config, train identity, test accuracy, seconds, cache entry


def fit_judge(train: LabelledImages, test: LabelledImages, config: JudgeConfig, cache_dir: Path | str, *,
              progress: bool = False) -> Judge:
    """Train the judge on every image of `train` (or load it from cache_dir) and test it on `test`."""
    identity = {"version": JUDGE_VERSION, "config": dataclasses.asdict(config), "train": data_identity(train),
                "labels_sha256": tensor_sha256(train.labels.long())}
    key = content_key("judge", **identity)[:16]
    folder = Path(cache_dir).expanduser() / key
    sample = train.load([0])  # (1, C, H, W)
    _, c, h, _ = sample.shape
    eval_config = config.eval_config()

    def from_state(state: dict) -> Judge:
        try:
            report = json.loads((folder / _META).read_text())
        except (OSError, ValueError) as err:
            raise StateRejected(f"its report {folder / _META} cannot be read ({err})") from None
        model = build_model(eval_config.model, c, len(train.class_names), h, **eval_config.arch_kwargs(h))
        model.load_state_dict(state["model"])
        mean, std = torch.tensor(report["mean"]), torch.tensor(report["std"])
        if mean.shape != (c,) or std.shape != (c,):
            raise StateRejected(f"its report's mean and std are not {c} channels")
        return Judge(model.eval(), mean, std, report | {"cached": True})

    def load(entry: Path) -> Judge | None:
        if not (entry / _META).exists():
            return None
        return restore(entry / _WEIGHTS, from_state, otherwise="the judge is trained again")

    def build() -> Judge:
        t = time.perf_counter()
        mean, std = channel_stats(train)
        images = torch.cat([x for x, _ in train.iter_batches(4096)])  # (N, C, H, W)
        model = train_model(images, train.labels, num_classes=len(train.class_names), config=eval_config, mean=mean,
                            std=std, seed=config.seed, progress=progress)
        seconds = time.perf_counter() - t
        accuracy = top1_accuracy(model, test, mean=mean, std=std)
        report = {"name": f"judge:{key}", **identity, "test_accuracy": accuracy, "train_seconds": seconds,
                  "mean": mean.tolist(), "std": std.tolist(), "cache": str(folder)}
        return Judge(model, mean, std, report)

    def save(entry: Path, judge: Judge) -> Judge:
        save_state(entry / _WEIGHTS, {"model": judge.model.state_dict()})
        atomic_write_json(entry / _META, judge.report)  # written last: its presence marks a finished entry
        judge.report = judge.report | {"cached": False}
        return judge

    return cached(folder, build, load=load, save=save, otherwise="the judge is trained again")[0]


@torch.no_grad()
def class_consistency(judge: Judge, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """images (N, C, H, W) in [0, 1], labels (N,) -> share (%) the judge assigns to their label, overall and per class."""
    predicted = torch.cat([judge.model(_normalise(x.float(), judge.mean, judge.std)).argmax(1)
                           for x in images.split(512)])  # (N,)
    hit = (predicted == labels).double()
    per_class = [100.0 * float(hit[labels == k].mean()) if bool((labels == k).any()) else None
                 for k in range(int(labels.max()) + 1)]
    return {"share": 100.0 * float(hit.mean()), "per_class": per_class, "judge": judge.report["name"],
            "judge_test_accuracy": judge.report["test_accuracy"]}
