"""How close the evaluator runs to what the CPU can do.

Times one evaluation of a Fashion-MNIST IPC-10 set (random real, 100 images, ConvNet-3,
1000 epochs, DSA: training plus the 10k-image test pass) and prints its training FLOP/s
as a fraction of a large fp32 `torch.matmul` measured in the same run (the machine's
practical peak). Then times the variants tried, each for --variant-epochs epochs, side
by side with plain eager training as the baseline:

    python benchmarks/bench_evaluator.py                 # full evaluation + variants
    python benchmarks/bench_evaluator.py --epochs 200 --variant-epochs 30   # quicker look

FLOPs per step come from torch.utils.flop_counter on one eager step (convolutions and
linear layers, forward and backward; the DSA ops and norms are not counted, so the
fraction is conservative).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from latentdd.data import load_dataset
from latentdd.evaluate import EvalConfig, train_model
from latentdd.evaluate.trainer import _normalise, channel_stats, top1_accuracy
from latentdd.nn.convnet import ConvNet
from latentdd.nn.dsa import DiffAugment
from latentdd.pipelines.baseline import random_real


def matmul_peak(n: int = 4096, repeats: int = 5) -> float:
    """Best fp32 matmul FLOP/s of `repeats` timed (n x n) @ (n x n) products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def step_flops(images: torch.Tensor, num_classes: int) -> int:
    model = ConvNet(images.shape[1], num_classes, images.shape[-1])
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(images), torch.zeros(len(images), dtype=torch.long)).backward()
    return counter.get_total_flops()


class GroupedConvNets(nn.Module):
    """G ConvNet-3s in one network (grouped convolutions): one way to train G seeds at once."""

    def __init__(self, groups: int, in_channels: int, num_classes: int, image_size: int, width: int = 128) -> None:
        super().__init__()
        layers, c = [], in_channels * groups
        for d in range(3):
            pad = 3 if d == 0 and image_size == 28 else 1
            layers += [nn.Conv2d(c, width * groups, 3, padding=pad, groups=groups),
                       nn.GroupNorm(width * groups, width * groups), nn.ReLU(), nn.AvgPool2d(2)]
            c = width * groups
        self.features, self.groups = nn.Sequential(*layers), groups
        self.head = nn.Parameter(torch.randn(groups, width * 16, num_classes) * 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, G*C, H, W) -> (G, B, classes)
        f = self.features(x).view(x.shape[0], self.groups, -1).transpose(0, 1)  # (G, B, width*16)
        return torch.bmm(f, self.head)


def time_grouped(x_all, y_all, groups: int, epochs: int, compile_: bool) -> float:
    """Seconds per epoch training `groups` networks at once, each with its own DSA draws."""
    model = GroupedConvNets(groups, x_all.shape[1], 10, x_all.shape[-1])
    fwd = torch.compile(model, dynamic=False) if compile_ else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    aug, gen = DiffAugment(), torch.Generator().manual_seed(0)

    def epoch():
        x = torch.cat([aug(x_all, gen) for _ in range(groups)], dim=1)  # (B, G*C, H, W)
        opt.zero_grad()
        logits = fwd(x)
        F.cross_entropy(logits.reshape(-1, 10), y_all.repeat(groups)).backward()
        opt.step()

    for _ in range(3):
        epoch()
    t = time.perf_counter()
    for _ in range(epochs):
        epoch()
    return (time.perf_counter() - t) / epochs


def time_train(x, y, mean, std, epochs: int, **overrides) -> float:
    """Seconds per epoch of latentdd's own training loop (after a warm-up that compiles)."""
    cfg = EvalConfig(epochs=3, **overrides)
    train_model(x, y, num_classes=10, config=cfg, mean=mean, std=std)
    t = time.perf_counter()
    train_model(x, y, num_classes=10, config=dataclasses.replace(cfg, epochs=epochs), mean=mean, std=std)
    return (time.perf_counter() - t) / epochs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--variant-epochs", type=int, default=40)
    p.add_argument("--skip-variants", action="store_true")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

    train, test = load_dataset("fashion_mnist", "train"), load_dataset("fashion_mnist", "test")
    mean, std = channel_stats(train)
    subset = random_real(train, 10, seed=0)
    x, y = subset.images, subset.labels
    peak = matmul_peak()
    flops = step_flops(_normalise(x, mean, std), 10)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"matmul peak (4096^2 fp32): {peak / 1e9:.1f} GFLOP/s")
    print(f"training FLOPs per step (100 images, fwd+bwd): {flops / 1e9:.2f} GFLOP")

    cfg = EvalConfig(epochs=args.epochs, num_eval=1)
    t0 = time.perf_counter()
    model = train_model(x, y, num_classes=10, config=cfg, mean=mean, std=std, seed=0)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    acc = top1_accuracy(model, test, mean=mean, std=std, compile=cfg.compile)
    test_s = time.perf_counter() - t1
    rate = args.epochs * flops / train_s
    figures = {"peak_gflops": peak / 1e9, "train_gflops": rate / 1e9, "fraction_of_peak": rate / peak,
               "epochs": args.epochs, "train_seconds": train_s, "test_seconds": test_s,
               "evaluation_seconds": train_s + test_s, "accuracy": acc}
    print(f"\none evaluation, IPC 10, {args.epochs} epochs, DSA, compile={cfg.compile}:")
    print(f"  train {train_s:.1f} s + test {test_s:.1f} s = {train_s + test_s:.1f} s  (test accuracy {acc:.2f}%)")
    print(f"  training {rate / 1e9:.1f} GFLOP/s = {rate / peak:.2f} of the matmul peak")

    if not args.skip_variants:
        e = args.variant_epochs
        base = time_train(x, y, mean, std, e, compile="off")
        variants = {
            "eager (baseline)": base,
            "torch.compile (default)": time_train(x, y, mean, std, e, compile="on"),
            "eager, 1 thread": _with_threads(1, lambda: time_train(x, y, mean, std, e, compile="off")),
            "3 seeds at once, grouped conv, eager (per seed)": time_grouped(x, y, 3, e, False) / 3,
            "3 seeds at once, grouped conv, compiled (per seed)": time_grouped(x, y, 3, e, True) / 3,
        }
        print(f"\nvariants, seconds per epoch (one network), {e} epochs each:")
        for name, sec in variants.items():
            print(f"  {name:<52} {sec * 1000:7.1f} ms  speed x{base / sec:.2f}  "
                  f"{flops / sec / 1e9:6.1f} GFLOP/s ({flops / sec / peak:.2f} of peak)")
        figures["variants_seconds_per_epoch"] = variants
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


def _with_threads(n: int, fn):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(old)


if __name__ == "__main__":
    main()
