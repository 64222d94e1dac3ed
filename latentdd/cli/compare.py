"""The `latentdd compare` command: its flags that are not config keys, and its body."""

from __future__ import annotations

import argparse

from latentdd.cli import run
from latentdd.cli.run import run_setup
from latentdd.cli.sections import COMPARE_DEFAULTS, teacher_config

ABOUT = "Several distillers on the same latents, decoder and evaluator: table, CSV, plot, image grids."
EXAMPLES = (
    "examples:\n  latentdd compare --dataset fashion_mnist --methods bacon,kmeans,idm,random,herding --ipc 1,10 "
    "--num-eval 3 --out runs/compare\n"
    "  latentdd compare --config configs/compare_fashion_mnist.yaml"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `latentdd compare` that are not config keys: `latentdd run`'s."""
    run.add_arguments(p, out_default="runs/<dataset>_compare")


def command(args, raw) -> int:
    from latentdd.parallel import process_state
    from latentdd.pipelines.compare import compare

    data, space, decoder, evaluator, config, out = run_setup(args, raw, run_defaults=COMPARE_DEFAULTS,
                                                              out_default="runs/{dataset}_compare")
    compare(data, space, config, evaluator, out, decoder=decoder, progress=not args.quiet,
            teacher=teacher_config(args, raw))
    if not process_state().is_main_process:  # under accelerate launch the first process reports
        return 0
    print((out / "results.md").read_text())
    print(f"also in {out}: results.csv, accuracy_vs_ipc.png, grid_<method>.png, and each method's folder")
    return 0
