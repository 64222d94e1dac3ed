"""Probe a teacher recipe on the VAL split: seconds per epoch and val accuracy after each epoch, no test split.

    python scripts/teacher_probe.py --preset strong --epochs 2 --out results/teacher_fashion_mnist/probes/NAME.json
    python scripts/teacher_probe.py --preset strong --epochs 2 --set crop_scale=[0.35,1] --out ...

Trains on train minus the val split (dataset.validation, default 0.1) exactly as `fit_teacher` would with these
settings (its `TeacherConfig.eval_config`, the train split's mean/std), but never loads the test split, so
that a recipe is chosen on val alone. The cosine schedule spans --epochs: a probe of 2 epochs is a full
(short) schedule, not the first 2 epochs of a longer one. Writes one JSON record, updated after each epoch.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
import yaml

from latentdd.config import DataConfig
from latentdd.evaluate.teacher import TeacherConfig
from latentdd.evaluate.trainer import channel_stats, top1_accuracy, train_model
from latentdd.io import atomic_write_json


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--validation", type=float, default=0.1)
    p.add_argument("--preset", default="strong")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=YAML", help="a teacher field over the preset's")
    p.add_argument("--limit", type=int, default=None, help="train on the first N train images only (a timing probe)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    config = TeacherConfig(preset=args.preset, epochs=args.epochs, **overrides)
    data = DataConfig(name=args.dataset, validation=args.validation)
    train, val = data.load("train"), data.load("val")
    images = torch.cat([x for x, _ in train.iter_batches(4096)])  # (N, C, H, W)
    labels = train.labels
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    mean, std = channel_stats(train)
    record = {"command": "PYTHONPATH=. OMP_NUM_THREADS=1 taskset -c 1 python " + shlex.join(sys.argv),
              "preset": args.preset, "settings": {**config.fit_settings(), "crop_scale": config.crop_scale,
                                                  "hflip": config.hflip},
              "dataset": args.dataset, "validation": args.validation, "train_images": len(images),
              "val_images": len(val), "split_used_for_choice": "val (the test split is never loaded)",
              "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "epochs": []}

    def on_epoch(epoch, model):
        acc = top1_accuracy(model, val, mean=mean, std=std)
        print(f"epoch {epoch + 1}/{args.epochs}: val {acc:.2f}%", flush=True)
        return {"val_accuracy": acc}

    log: list[dict] = []

    class Logged(list):
        def append(self, entry):
            super().append(entry)
            record["epochs"] = list(self)
            atomic_write_json(args.out, record)
            print(f"  {entry['seconds']:.1f} s, loss {entry['loss']:.4f}", flush=True)

    log = Logged()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    train_model(images, labels, num_classes=len(train.class_names), config=config.eval_config(), mean=mean, std=std,
                seed=config.seed, on_epoch=on_epoch, epoch_log=log)
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_json(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
