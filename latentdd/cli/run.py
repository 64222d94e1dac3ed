"""The `latentdd run` command: its flags that are not config keys, and its body."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentdd.cli.sections import (
    data_config,
    decoder_config,
    eval_config,
    latent_config,
    settings_of,
    teacher_config,
)
from latentdd.config import check_mapping, coerce
from latentdd.configs import build_section

ABOUT = "The main job: fit/load the VAE, encode, distil, render, evaluate next to random real, tabulate."
EXAMPLES = (
    "examples:\n  latentdd run                                  # configs/fashion_mnist.yaml defaults\n"
    "  latentdd run --config configs/fashion_mnist.yaml --num-eval 3 --out runs/fmnist_n3\n"
    "  latentdd run --config configs/cross_arch_fashion_mnist.yaml --out runs/cross_arch   # cross_arch.md\n"
    "  latentdd run --methods dm,kmeans --students convnet,convnet-bn,resnet18 --epochs 300 --out runs/xarch"
)


def add_arguments(p: argparse.ArgumentParser, out_default: str = "runs/<dataset>") -> None:
    """The flags of `latentdd run` (and `compare`) that are not config keys (those come from
    `latentdd.cli.settings`)."""
    p.add_argument("--reports-from", dest="reports_from", metavar="DIR,...",
                   help="earlier run folders (added to the config's run.reports_from) whose finished trainings "
                        "of the same images, data and evaluator settings are reused seed by seed, e.g. trainings "
                        "run in parallel processes with --seed S --num-eval 1 --no-random-real")
    p.add_argument("--out", help=f"output folder (default {out_default}); re-running resumes")


def run_setup(args, raw, *, run_defaults: dict, out_default: str):
    """The shared inputs of `run` and `compare` -> (data, space, decoder, evaluator, RunConfig, out)."""
    data = data_config(args, raw)
    space = latent_config(args, raw)
    decoder = decoder_config(args, raw)
    evaluator, _ = eval_config(args, raw)
    section = run_defaults | dict(check_mapping(raw.get("run"), "run"))
    section |= settings_of(args, "run")
    listed = section.get("reports_from", [])
    if args.reports_from is not None and isinstance(listed, list):  # added to the config's (any other: refused)
        section["reports_from"] = listed + [p.strip() for p in args.reports_from.split(",") if p.strip()]
    config = build_section("run", section)
    out = Path(args.out or coerce(str | None, raw.get("out"), "out") or out_default.format(dataset=data.name))
    return data, space, decoder, evaluator, config, out


def command(args, raw) -> int:
    from latentdd.parallel import process_state
    from latentdd.pipelines.run import run

    data, space, decoder, evaluator, config, out = run_setup(args, raw, run_defaults={},
                                                              out_default="runs/{dataset}")
    run(data, space, config, evaluator, out, decoder=decoder, progress=not args.quiet,
        teacher=teacher_config(args, raw))
    if not process_state().is_main_process:  # under accelerate launch the first process reports
        return 0
    print((out / "results.md").read_text())
    if config.students:
        print((out / "cross_arch.md").read_text())
    for spec in config.specs() if config.random_real_part is None else []:
        for ipc in filter(spec.runs_at, config.ipcs):
            folder = out / f"{spec.label}_ipc{ipc}"
            print(f"{spec.label}, IPC {ipc}: grid {folder / 'grid.png'}; exported image folder {folder / 'images'} "
                  "(manifest.json beside the images)")
    return 0
