"""Distillation split by class over N processes against one (issue 36), side by side in one invocation: for
kmeans and DM over every class of an image folder (e.g. the procedural folder's 1000 classes), the wall seconds of
`latentdd distill` in 1 and in N processes (`accelerate launch`), each process's peak RSS, and whether the
N-process set equals the one-process set byte for byte.

    python scripts/make_scale_fixture.py procedural --out ~/scale/proc1000 --classes 1000 --per-class 20
    python benchmarks/bench_distill_processes.py --root ~/scale/proc1000 --work ~/scale/bdp --processes 2 \\
        --json results/parallel_fashion_mnist/distill_processes.json

The folder is encoded once first (`latentdd encode`, untimed) into a latent cache that every configuration reads
with `--latents`. Each process of a configuration runs this script's `--stage`, which calls the CLI and then
writes its own wall seconds and peak RSS (ru_maxrss), so the figures are per process. Every process runs one
thread: the machine's cores are the processes'. DM runs in the latent embedding (the pixel embedding normalises
by every decoded latent, so each process would hold them all), `--dm-iterations` iterations: its seconds per
iteration, not a distilled set's quality, are measured.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from latentdd.parallel import launch_args  # noqa: E402


def stage(args: list[str], report: Path) -> None:
    """One process's part: `latentdd ARGS`, then {"rank", "wall_seconds", "peak_rss_mb"} to report.rank<R>.json."""
    from latentdd.cli import main

    t0 = time.perf_counter()
    code = main(args)
    wall = time.perf_counter() - t0
    rank = int(os.environ.get("RANK", "0"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    report.with_name(f"{report.name}.rank{rank}.json").write_text(json.dumps(
        {"rank": rank, "wall_seconds": wall, "peak_rss_mb": peak, "exit_code": code}))
    sys.exit(code)


def run(args: list[str], processes: int, report: Path) -> dict:
    """`latentdd ARGS` in `processes` processes -> {"wall_seconds", "per_process": [each one's figures]}."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, *launch_args(processes), str(Path(__file__).resolve()), "--stage", str(report), "--",
                           *args], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"latentdd {' '.join(args)} failed in {processes} process(es):\n{done.stderr[-3000:]}")
    parts = [json.loads(report.with_name(f"{report.name}.rank{r}.json").read_text()) for r in range(processes)]
    return {"wall_seconds": wall, "per_process": parts}


def same_set(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(a / "latents.safetensors"), load_file(b / "latents.safetensors")
    return x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) and x[k].dtype == y[k].dtype for k in x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", type=Path, help=argparse.SUPPRESS)  # one process's part (see `stage`)
    p.add_argument("--root", help="an image folder with train/ and val/ (scripts/make_scale_fixture.py)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--vae", default="pixel", help="the latent space (default pixel: no VAE to fit or load)")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--ipc", type=int, default=1)
    p.add_argument("--dm-iterations", type=int, default=20)
    p.add_argument("--methods", nargs="+", default=["kmeans", "dm"], choices=["kmeans", "dm"])
    p.add_argument("--work", help="scratch folder (default: a temporary one)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args, rest = p.parse_known_args()
    if args.stage is not None:
        return stage(rest[1:] if rest[:1] == ["--"] else rest, args.stage)
    if not args.root:
        p.error("--root is required")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_distill_processes_")).expanduser()
    common = ["--dataset", "imagefolder", "--root", str(Path(args.root).expanduser()), "--image-size",
              str(args.image_size), "--channels", "3", "--resize", "resize", "--vae", args.vae, "--cache-dir",
              str(work / "cache"), "--quiet"]
    cache = work / "latents"
    t0 = time.perf_counter()
    if not (cache / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "latentdd", "encode", *common, "--out", str(cache)], cwd=REPO,
                       check=True)
    print(f"latent cache {cache} ready ({time.perf_counter() - t0:.0f} s, untimed)", flush=True)
    params = {"kmeans": [], "dm": ["--preset", "reference", "--param", f"iterations={args.dm_iterations}",
                                   "--param", "embedding=latent", "--param", "batch_real=64"]}
    rows = []
    for method in args.methods:
        outs = {}
        for processes in sorted({1, args.processes}):
            out = work / f"{method}-p{processes}"
            command = ["distill", *common, "--latents", str(cache), "--method", method, *params[method],
                       "--ipc", str(args.ipc), "--seed", "0", "--out", str(out), "--overwrite"]
            figures = run(command, processes, work / f"{method}-p{processes}")
            outs[processes] = out
            record = json.loads((out / "distill.json").read_text())
            row = {"method": method, "processes": processes, **figures,
                   "classes": len(record["extras"].get("quantization_error") or []) or None,
                   "split_by_class": record["extras"].get("split_by_class")}
            rows.append(row)
            peak = max(part["peak_rss_mb"] for part in figures["per_process"])
            each = ", ".join(f"{q['peak_rss_mb']:.0f}" for q in figures["per_process"])
            print(f"{method:<6} {processes} process(es): {figures['wall_seconds']:8.1f} s wall, peak RSS per "
                  f"process {each} MB (largest {peak:.0f})", flush=True)
        if args.processes > 1:
            equal = same_set(outs[1], outs[args.processes])
            one, many = (next(r for r in rows if r["method"] == method and r["processes"] == n)
                         for n in (1, args.processes))
            many |= {"speedup": one["wall_seconds"] / many["wall_seconds"], "same_set_as_one_process": equal}
            print(f"{method:<6} speedup {many['speedup']:.2f}x; the same set as one process: {equal}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"root": args.root, "image_size": args.image_size, "vae": args.vae,
                                         "ipc": args.ipc, "dm_iterations": args.dm_iterations, "rows": rows},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
