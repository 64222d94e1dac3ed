"""One process against N (`accelerate launch`), side by side in one invocation (issue 36):

- one training split over the processes (`latentdd evaluate`, DSA, IPC 10): wall seconds, speedup, and the
  accuracy of each (the difference is the floating-point tolerance of a shared training);
- a `run` table (2 sets x 3 trainings + 5 random-real subsets) with its trainings dealt to the processes
  (run.parallel trainings) and split over them (data): wall seconds, speedup, and whether every number of the
  table equals the one-process table's.

Each configuration runs as its own command on a fresh output folder; every process runs one thread (the
machine's cores are the processes'). Example (Fashion-MNIST, in pixel space: no VAE to fit):

    python benchmarks/bench_parallel.py --processes 2 --json results/parallel_fashion_mnist/bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from latentdd.parallel import launch_args  # noqa: E402


def latentdd(args: list[str], processes: int) -> float:
    """Run `latentdd ARGS` in `processes` processes (accelerate launch for more than one) -> wall seconds."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, *launch_args(processes), "-m", "latentdd", *args], cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"latentdd {' '.join(args)} failed in {processes} process(es):\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--epochs", type=int, default=1000, help="the single training's (DSA's 1000)")
    p.add_argument("--table-epochs", type=int, default=300, help="each training of the run table's (a recorded cut)")
    p.add_argument("--skip-table", action="store_true")
    p.add_argument("--cache-dir", default="~/.cache/latentdd")
    p.add_argument("--work", help="scratch folder (default: a temporary one)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_parallel_"))
    common = ["--dataset", args.dataset, "--quiet"]
    cache = ["--cache-dir", args.cache_dir]
    latentdd(["distill", *common, *cache, "--vae", "pixel", "--method", "random", "--ipc", str(args.ipc),
              "--out", str(work / "set")], 1)
    results = {"dataset": args.dataset, "ipc": args.ipc, "processes": args.processes, "cpu_count": os.cpu_count()}

    single = {}
    for n in (1, args.processes):
        report = work / f"evaluate_{n}.json"
        seconds = latentdd(["evaluate", *common, "--images", str(work / "set" / "images"), "--num-eval", "1",
                            "--epochs", str(args.epochs), "--json", str(report)], n)
        single[n] = {"seconds": seconds, "accuracy": json.loads(report.read_text())["accuracies"][0]}
    results["one_training"] = {"protocol": "dsa", "epochs": args.epochs, **{str(n): v for n, v in single.items()},
                               "speedup": single[1]["seconds"] / single[args.processes]["seconds"],
                               "accuracy_difference": single[args.processes]["accuracy"] - single[1]["accuracy"]}

    if not args.skip_table:
        config = work / "run.yaml"
        config.write_text(f"run:\n  methods: [kmeans, random]\n  ipcs: [{args.ipc}]\n  random_real_subsets: 5\n")
        tables = {}
        for name, n, parallel in (("one", 1, "trainings"), ("trainings", args.processes, "trainings"),
                                  ("data", args.processes, "data")):
            out = work / f"run_{name}"
            seconds = latentdd(["run", "--config", str(config), *common, *cache, "--vae", "pixel", "--num-eval", "3",
                                "--epochs", str(args.table_epochs), "--run.parallel", parallel, "--out", str(out)], n)
            tables[name] = {"seconds": seconds,
                            "means": [r["mean"] for r in json.loads((out / "results.json").read_text())]}
        results["run_table"] = {"sets": 2, "trainings_per_set": 3, "random_real_subsets": 5,
                                "epochs": args.table_epochs, **tables,
                                **{f"{k}_speedup": tables["one"]["seconds"] / tables[k]["seconds"]
                                   for k in ("trainings", "data")},
                                "trainings_table_equal": tables["trainings"]["means"] == tables["one"]["means"],
                                "data_table_largest_difference": max(abs(a - b) for a, b in
                                                                     zip(tables["data"]["means"], tables["one"]["means"]))}

    n = args.processes
    t = results["one_training"]
    print(f"{args.dataset}, IPC {args.ipc}, {os.cpu_count()} cores, one thread a process")
    print(f"{'measurement':44s} {'1 process':>10s} {f'{n} processes':>12s} {'speedup':>8s}")
    print(f"{'one training (dsa, %d epochs), s' % args.epochs:44s} {t['1']['seconds']:10.1f} "
          f"{t[str(n)]['seconds']:12.1f} {t['speedup']:7.2f}x   accuracy {t['1']['accuracy']:.2f} vs "
          f"{t[str(n)]['accuracy']:.2f} ({t['accuracy_difference']:+.2f})")
    if "run_table" in results:
        r = results["run_table"]
        for k in ("trainings", "data"):
            print(f"{f'run table, run.parallel {k}, s':44s} {r['one']['seconds']:10.1f} {r[k]['seconds']:12.1f} "
                  f"{r[f'{k}_speedup']:7.2f}x")
        print(f"trainings table equals the one-process table: {r['trainings_table_equal']}; data table's largest "
              f"difference {r['data_table_largest_difference']:.2f} points")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
