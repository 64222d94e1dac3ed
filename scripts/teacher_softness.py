"""How soft each teacher's labels are, on the VAL split: accuracy, the mean largest probability and the mean
entropy (in units of log K) of softmax(logits / T) at each temperature, and the logits' spread. The `soft`
protocols train on softmax(logits / 4): a teacher with larger logits hands the student sharper labels.

    python scripts/teacher_softness.py --presets quick strong --out results/teacher_fashion_mnist/softness_val.json

Reads cached teachers (fits any that is missing, as `latentdd fit-teacher` would); never reads the test split's
labels for anything but the teachers' own records.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latentdd.config import DataConfig  # noqa: E402
from latentdd.evaluate.teacher import TeacherConfig, resolve_teacher  # noqa: E402
from latentdd.io import atomic_write_json  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--validation", type=float, default=0.1)
    p.add_argument("--presets", nargs="+", default=["quick", "strong"])
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 4.0])
    p.add_argument("--cache-dir", default="~/.cache/latentdd")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    data = DataConfig(name=args.dataset, validation=args.validation)
    train, test, val = data.load("train"), data.load("test"), data.load("val")
    out = {"dataset": args.dataset, "split": f"val ({len(val)} images)", "teachers": {}}
    for preset in args.presets:
        teacher = resolve_teacher(TeacherConfig(preset=preset, cache_dir=args.cache_dir), train, test)
        with torch.no_grad():
            batches = [(teacher(x), y) for x, y in val.iter_batches(500)]
        logits, labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        row = {"name": teacher.record["name"], "val_accuracy": float((logits.argmax(1) == labels).float().mean() * 100),
               "logit_std": float(logits.std(1).mean()), "temperatures": {}}
        for t in args.temperatures:
            probs = torch.softmax(logits / t, 1)
            entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1).mean() / math.log(logits.shape[1])
            row["temperatures"][f"{t:g}"] = {"mean_max_probability": float(probs.max(1).values.mean()),
                                             "mean_entropy_over_log_k": float(entropy)}
        out["teachers"][preset] = row
        soft = ", ".join(f"T={k}: max prob {v['mean_max_probability']:.3f}, entropy {v['mean_entropy_over_log_k']:.3f}"
                         for k, v in row["temperatures"].items())
        print(f"{preset} ({row['name']}): val {row['val_accuracy']:.2f} %, logit std {row['logit_std']:.2f}; {soft}")
    if args.out:
        atomic_write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
