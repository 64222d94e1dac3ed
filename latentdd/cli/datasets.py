"""The `latentdd datasets` command: its flags that are not config keys, and its body."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentdd.errors import LatentDDError

ABOUT = "List the datasets latentdd knows and where their files were found."
EXAMPLES = "examples:\n  latentdd datasets\n  latentdd datasets --root ~/data"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `latentdd datasets` that are not config keys (those come from `latentdd.cli.settings`)."""
    p.add_argument("--root", help="also look in this folder")


def command(args, raw) -> int:
    from latentdd.data import DATASETS

    root = Path(args.root).expanduser() if args.root else None
    width = max(len(n) for n in DATASETS)
    for name, info in DATASETS.items():
        try:
            found = info.locate(root)
        except LatentDDError:
            found = None
        where = f"found at {found}" if found else "not found"
        print(f"{name:<{width}}  {where}\n{'':<{width}}  {info.description}")
        if not found:
            steps = info.instructions().replace("\n", "\n" + " " * (width + 13))
            print(f"{'':<{width}}  to get it: {steps}")
    return 0
