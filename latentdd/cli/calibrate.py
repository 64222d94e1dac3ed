"""The `latentdd calibrate` command: its flags that are not config keys, and its body."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentdd.cli.sections import (
    data_config,
    settings_of,
)
from latentdd.config import check_mapping
from latentdd.configs import build_section

ABOUT = "Reproduce the published random-real and full-data accuracies (the ruler's check)."
EXAMPLES = (
    "examples:\n  latentdd calibrate --out runs/calibration\n"
    "  latentdd calibrate --config configs/calibrate_fashion_mnist.yaml --out runs/calibration"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `latentdd calibrate` that are not config keys (those come from `latentdd.cli.settings`)."""
    p.add_argument("--out", required=True, help="output folder (re-running resumes)")


def command(args, raw) -> int:
    from latentdd.pipelines.calibrate import run_calibration

    data = data_config(args, raw)
    section = dict(check_mapping(raw.get("calibrate"), "calibrate")) | settings_of(args, "calibrate")
    for mapping in ("evaluator", "teacher"):
        if more := settings_of(args, f"calibrate.{mapping}"):
            section[mapping] = dict(check_mapping(section.get(mapping), f"calibrate.{mapping}")) | more
    config = build_section("calibrate", section)
    rows = run_calibration(data, config, Path(args.out), progress=not args.quiet)
    print((Path(args.out) / "results.md").read_text())
    return 0 if rows else 1
