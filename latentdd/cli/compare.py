"""The `latentdd compare` command: its flags that are not config keys, and its body."""

from __future__ import annotations

import argparse

from latentdd.cli.sections import (
    COMPARE_DEFAULTS,
    teacher_config,
)
from latentdd.cli.run import run_setup

ABOUT = "Several distillers on the same latents, decoder and evaluator: table, CSV, plot, image grids."
EXAMPLES = (
    "examples:\n  latentdd compare --dataset fashion_mnist --methods bacon,kmeans,idm,random,herding --ipc 1,10 "
    "--num-eval 3 --out runs/compare\n"
    "  latentdd compare --config configs/compare_fashion_mnist.yaml"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `latentdd compare` that are not config keys (those come from `latentdd.cli.settings`)."""
    p.add_argument("--reports-from", dest="reports_from", metavar="DIR,...",
                   help="earlier run folders (added to the config's run.reports_from) whose finished trainings "
                        "of the same images, data and evaluator settings are reused seed by seed, e.g. trainings "
                        "run in parallel processes with --seed S --num-eval 1 --no-random-real")
    p.add_argument("--out", help="output folder (default runs/<dataset>_compare); re-running resumes")


def command(args, raw) -> int:
    from latentdd.pipelines.compare import compare

    data, space, decoder, evaluator, config, out = run_setup(args, raw, run_defaults=COMPARE_DEFAULTS,
                                                              out_default="runs/{dataset}_compare")
    compare(data, space, config, evaluator, out, decoder=decoder, progress=not args.quiet,
            teacher=teacher_config(args, raw) if evaluator.loss == "teacher_kl" else None)
    print((out / "results.md").read_text())
    print(f"also in {out}: results.csv, accuracy_vs_ipc.png, grid_<method>.png, and each method's folder")
    return 0
