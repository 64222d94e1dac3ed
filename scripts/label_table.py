"""One table of the same sets under a hard-label protocol and under a soft-label one, with DD-Ranking's scores.

Reads `latentdd run` folders that evaluated the same sets and random-real subsets, some under a
hard-label protocol (e.g. `dsa`) and some under a soft-label protocol (e.g. `soft`; a protocol's rows
may come from several folders, e.g. one per IPC, or the sets and random real apart), and prints a
Markdown table: for each set and IPC the accuracy under each protocol, IOR under each (against the
random-real subsets of the same IPC, same protocol), HLR (full data's hard-label accuracy minus the
set's, from the hard run; full data from `--calibration`) and LRS under each protocol (DD-Ranking's
pairing: that protocol's IOR with the hard-label HLR). The scores are `latentdd.evaluate.scores`;
the seconds per evaluation are the reports' own training seconds (mean per training).

    python scripts/label_table.py --hard runs/label_table/dsa --soft runs/label_table/soft \\
        --calibration results/calibration_fashion_mnist --out results/label_table_fashion_mnist/table.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latentdd.evaluate.scores import hlr, ior, lrs  # noqa: E402
from latentdd.pipelines.calibrate import full_data_accuracy  # noqa: E402


def load(folders: list[Path]) -> tuple[dict, dict]:
    """(rows keyed by (method, ipc), random-real subset means by ipc and subset) of run folders."""
    sets, subsets = {}, {}
    for folder in folders:
        for r in json.loads((folder / "results.json").read_text()):
            if r.get("subset_of"):
                subsets.setdefault(r["ipc"], {})[r["method"]] = r["mean"]
            elif not r.get("subsets"):
                sets[(r["method"], r["ipc"])] = r
    return sets, {ipc: list(means.values()) for ipc, means in subsets.items()}


def report(row: dict) -> dict:
    return json.loads(Path(row["report"]).read_text())


def seconds_per_training(row: dict) -> float:
    rep = report(row)
    return sum(rep["train_seconds"]) / len(rep["train_seconds"])


def cell(row: dict) -> str:
    return f"{row['mean']:.2f} ± {row['std']:.2f} (n={row['n']})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hard", type=Path, nargs="+", required=True, help="run folders under a hard-label protocol")
    p.add_argument("--soft", type=Path, nargs="+", required=True, help="run folders of the same sets under a "
                   "soft-label protocol")
    p.add_argument("--calibration", default="results/calibration_fashion_mnist",
                   help="a `latentdd calibrate` folder: full data's hard-label accuracy (HLR)")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args(argv)

    full = full_data_accuracy(args.calibration, args.dataset)
    hard_sets, hard_random = load(args.hard)
    soft_sets, soft_random = load(args.soft)
    protocols = [report(next(iter(s.values())))["record"]["evaluator"]["protocol"] for s in (hard_sets, soft_sets)]
    teacher = report(next(iter(soft_sets.values())))["record"]["evaluator"].get("teacher") or {}
    lines = [f"Hard: `{protocols[0]}` ({', '.join(map(str, args.hard))}); soft: `{protocols[1]}` "
             f"({', '.join(map(str, args.soft))}). Full data (hard labels, "
             f"{args.calibration}): {full:.2f}. Teacher: {teacher.get('name')}, test accuracy "
             f"{teacher.get('test_accuracy')}%. IOR: points over random real (mean of its subsets, same IPC and "
             "protocol); HLR: full data minus the set, hard labels; LRS (%): DD-Ranking's, from that protocol's IOR "
             "and the hard HLR. s/training: mean training seconds of one evaluation.", "",
             f"| set | IPC | {protocols[0]} % | IOR | HLR | LRS | {protocols[1]} % | IOR | LRS | s/training "
             f"({protocols[0]} / {protocols[1]}) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for ipc in sorted({ipc for _, ipc in hard_sets}):
        h, s = hard_random.get(ipc, []), soft_random.get(ipc, [])
        if h and s:
            random_hlr = full - float(np.mean(h))
            lines.append(f"| random real, {len(h)} / {len(s)} subsets | {ipc} | {np.mean(h):.2f} ± {np.std(h):.2f} "
                         f"| 0 | {random_hlr:.2f} | {lrs(0.0, random_hlr):.2f} | {np.mean(s):.2f} ± {np.std(s):.2f} "
                         f"| 0 | {lrs(0.0, random_hlr):.2f} | |")
        for (method, row_ipc), hard in hard_sets.items():
            if row_ipc != ipc or (method, ipc) not in soft_sets:
                continue
            soft = soft_sets[(method, ipc)]
            i_h = ior([hard["mean"]], [[m] for m in hard_random[ipc]])
            i_s = ior([soft["mean"]], [[m] for m in soft_random[ipc]])
            h = hlr([full], [hard["mean"]])
            lines.append(f"| {method} | {ipc} | {cell(hard)} | {i_h:+.2f} | {h:.2f} | {lrs(i_h, h):.2f} | {cell(soft)} "
                         f"| {i_s:+.2f} | {lrs(i_s, h):.2f} | {seconds_per_training(hard):.0f} / "
                         f"{seconds_per_training(soft):.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
