"""Issue 34's table: the same sets under several protocols (hard labels, the teacher's online labels, static
labels), each with IOR against random real of its own tiling and DD-Ranking's LRS.

Reads `latentdd run` folders (a protocol's rows may come from several folders: per IPC, sets and random real
apart) and prints a Markdown table: a row per set and IPC, for each protocol its accuracy (mean ± std over its
trainings), IOR against the random-real subsets of the same IPC, protocol and tiling (random real tiles for a set
trained on 2x2 tiles, when the runs have them), and LRS from that IOR and the hard-label HLR (full data's
hard-label accuracy from --calibration minus the set's under the first, hard-label protocol). The random-real
rows give the mean ± std over subsets. The header names each protocol's teacher, its test accuracy and its cost.
Every number comes from the runs' results.json and reports; nothing is typed.

    python scripts/teacher_table.py --runs dsa=runs/tt/dsa_ipc1,runs/tt/dsa_ipc10 --runs soft=runs/tt/soft_ipc1 \\
        --runs static=runs/tt/static_ipc1 --out results/teacher_table_fashion_mnist/table.md
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
    """(set rows keyed by (label, ipc), random-real subset means keyed by (ipc, tiles)) of run folders."""
    sets, subsets = {}, {}
    for folder in folders:
        for r in json.loads((folder / "results.json").read_text()):
            if r.get("subset_of"):
                subsets.setdefault((r["ipc"], r.get("tiles", 1)), {})[r["method"]] = r["mean"]
            elif not r.get("subsets"):  # its report read from this folder (the row names where the run wrote it)
                sets[(r["method"], r["ipc"])] = r | {"report": str(folder / "reports" / Path(r["report"]).name)}
    return sets, {key: list(means.values()) for key, means in subsets.items()}


def report(row: dict) -> dict:
    return json.loads(Path(row["report"]).read_text())


def teacher_of(sets: dict) -> dict | None:
    for row in sets.values():
        teacher = report(row)["record"]["evaluator"].get("teacher")
        if teacher:
            return teacher
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", action="append", required=True, metavar="PROTOCOL=FOLDER[,FOLDER...]",
                   help="a protocol's run folders; the first --runs is the hard-label protocol HLR comes from")
    p.add_argument("--calibration", default="results/calibration_fashion_mnist",
                   help="a `latentdd calibrate` folder: full data's hard-label accuracy (HLR)")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args(argv)

    full = full_data_accuracy(args.calibration, args.dataset)
    runs = {}
    for spec in args.runs:
        name, _, folders = spec.partition("=")
        runs[name] = load([Path(f) for f in folders.split(",") if f])
    names = list(runs)
    hard_sets, hard_random = runs[names[0]]
    lines = [f"Protocols: {', '.join(f'`{n}`' for n in names)}; HLR from `{names[0]}` (full data "
             f"{full:.2f}, {args.calibration}). IOR: points over random real of the same IPC, protocol and tiling "
             "(random real tiles for a set of 2x2 tiles); LRS (%): DD-Ranking's, from that IOR and the hard HLR."]
    for name in names:
        teacher = teacher_of(runs[name][0])
        if teacher:
            cost = teacher.get("epoch_seconds") or teacher.get("train_seconds")
            lines.append(f"`{name}`'s teacher: {teacher.get('name')} (preset {teacher.get('preset')}), "
                         f"{teacher.get('test_accuracy'):.2f}% on test"
                         + (f", {cost / 3600:.2f} h to fit" if cost else "") + ".")
    lines += ["", "| set | IPC | " + " | ".join(f"{n} % | IOR | LRS" for n in names) + " |",
              "|---|---|" + "---|---|---|" * len(names)]
    keys = sorted({key for sets, _ in runs.values() for key in sets}, key=lambda k: (k[1], k[0]))
    for ipc in sorted({ipc for _, ipc in keys}):
        for tiles in sorted({t for _, rnd in runs.values() for (i, t) in rnd if i == ipc}):
            cells = []
            for name in names:
                means = runs[name][1].get((ipc, tiles), [])
                cells += [f"{np.mean(means):.2f} ± {np.std(means):.2f} ({len(means)} subsets)", "0", ""] if means \
                    else ["", "", ""]
            what = "random real" if tiles == 1 else f"random real tiles {tiles}x{tiles}"
            lines.append(f"| {what} | {ipc} | " + " | ".join(cells) + " |")
        for label, row_ipc in keys:
            if row_ipc != ipc:
                continue
            hard = hard_sets.get((label, ipc))
            h = hlr([full], [hard["mean"]]) if hard else None
            cells = []
            for name in names:
                sets, random = runs[name]
                row = sets.get((label, ipc))
                if row is None:
                    cells += ["", "", ""]
                    continue
                baseline = random.get((ipc, row.get("tiles", 1))) or random.get((ipc, 1))
                i = ior([row["mean"]], [[m] for m in baseline]) if baseline else None
                cells += [f"{row['mean']:.2f} ± {row['std']:.2f} (n={row['n']})",
                          "" if i is None else f"{i:+.2f}", "" if i is None or h is None else f"{lrs(i, h):.2f}"]
            lines.append(f"| {label} | {ipc} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
