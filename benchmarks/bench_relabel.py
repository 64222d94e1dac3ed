"""The teacher's labels online against computed once and replayed (`--relabel K`, FKD), side by side (issue 36):
the same set, the same seeds, `--num-eval` trainings each; seconds per training (the relabel's own seconds
apart) and the accuracies of each.

    python benchmarks/bench_relabel.py --images runs/rr10/images --dataset fashion_mnist --validation 0.1 \\
        --teacher-preset quick --num-eval 3 --json results/relabel_fashion_mnist/bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def evaluate(args, report: Path, relabel: int) -> dict:
    command = [sys.executable, "-m", "latentdd", "evaluate", "--images", args.images, "--dataset", args.dataset,
               "--protocol", args.protocol, "--num-eval", str(args.num_eval), "--teacher-preset", args.teacher_preset,
               "--teacher-cache-dir", args.cache_dir, "--relabel", str(relabel), "--json", str(report), "--quiet"]
    if args.validation:
        command += ["--validation", str(args.validation)]
    if args.epochs:
        command += ["--epochs", str(args.epochs)]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(report.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, help="the set's image folder")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--validation", type=float, help="dataset.validation (the teacher's key depends on it)")
    p.add_argument("--protocol", default="soft")
    p.add_argument("--teacher-preset", default="quick")
    p.add_argument("--relabel", type=int, help="stored epochs of views (default: the protocol's epochs)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the protocol's)")
    p.add_argument("--num-eval", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", default="~/.cache/latentdd")
    p.add_argument("--work", type=Path, default=Path("runs/bench_relabel"))
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    online = evaluate(args, args.work / "online.json", 0)
    views = args.relabel or online["record"]["evaluator"]["epochs"]
    cached = evaluate(args, args.work / "relabel.json", views)
    out = {"images": args.images, "protocol": args.protocol, "teacher": online["record"]["evaluator"]["teacher"]["name"],
           "views": views, "threads": args.threads}
    for name, report in (("online", online), ("relabel", cached)):
        out[name] = {"accuracies": report["accuracies"], "mean": float(np.mean(report["accuracies"])),
                     "std": float(np.std(report["accuracies"])), "train_seconds": report["train_seconds"],
                     "seconds_per_training": float(np.mean(report["train_seconds"]))}
    out["relabel"]["relabel_seconds"] = cached["record"]["evaluator"]["relabel"].get("seconds")
    out["speedup_per_training"] = out["online"]["seconds_per_training"] / out["relabel"]["seconds_per_training"]
    print(f"{args.images}: {args.protocol}, teacher {out['teacher']}, {args.num_eval} trainings each, "
          f"{args.threads} thread(s)")
    print(f"{'labels':10s} {'s/training':>11s} {'accuracy':>16s}")
    for name in ("online", "relabel"):
        r = out[name]
        print(f"{name:10s} {r['seconds_per_training']:11.1f} {r['mean']:9.2f} ± {r['std']:.2f}")
    print(f"speedup per training {out['speedup_per_training']:.2f}x; the relabel itself "
          f"{out['relabel']['relabel_seconds'] or 0:.1f} s ({views} views), once per set")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
