"""The `latentdd baseline` command: its flags that are not config keys, and its body."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentdd.cli.sections import (
    data_config,
    settings_of,
)
from latentdd.config import plain, save_resolved
from latentdd.configs import build_section

ABOUT = "Export a random real subset (IPC images per class) as an image folder."
EXAMPLES = "examples:\n  latentdd baseline --dataset fashion_mnist --method random --ipc 10 --seed 0 --out runs/random_ipc10"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `latentdd baseline` that are not config keys (those come from `latentdd.cli.settings`)."""
    p.add_argument("--out", required=True, help="output image folder (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def command(args, raw) -> int:
    from latentdd.export import export_image_folder
    from latentdd.pipelines.baseline import make_baseline

    data = data_config(args, raw)
    job = build_section("baseline", raw.get("baseline"), settings_of(args, "baseline"))
    method, ipc, seed = job.method, job.ipc, job.seed
    out = Path(args.out)
    train = data.load("train")
    subset = make_baseline(method, train, ipc, seed)
    resolved = {"dataset": data, "baseline": job}
    subset.meta["config"] = plain(resolved)
    export_image_folder(subset, out, overwrite=args.overwrite,
                        record={"dataset": {"name": data.name, "split": "train", "source": getattr(train, "source", "")},
                                "method": {"name": method, "ipc": ipc, "seed": seed}})
    save_resolved(out / "config.yaml", resolved)
    print(f"wrote {len(subset)} images ({ipc} per class, {method}, seed {seed}) to {out}")
    return 0
