"""Peak memory and seconds of encode, per-class kmeans distill and render as the number of images N grows.

For each N in --sizes, a folder of the first N/K train images of each of the K classes of
--root (symlinks into it; val/ linked whole) is encoded, distilled and rendered, each stage
in its own process, and the stage's peak RSS (that process's ru_maxrss, from os.wait4; for
--processes > 1 the largest process's) and wall seconds are recorded:

    encode    `latentdd encode` of the folder (streamed from disk) into a sharded latent cache
              (under `accelerate launch --num_processes P` when --processes P > 1)
    distill   kmeans (faiss, IPC --ipc) over the cache opened with `open_latents`, one class at a time
    render    `latentdd render` of the synthetic latents with the VAE decoder, exported as an image
              folder (split over the same processes as encode)
    cli       (only if listed in --stages) `latentdd distill --latents CACHE --method kmeans`: the
              user's command (kmeans, VAE render and export in one process; it also hashes the
              train images for the content key)

Flat memory and linear time mean the stage scales; the JSON keeps every number with the
protocol (VAE, IPC, threads, versions), the PNG plots them, and a Markdown table is printed.

    python scripts/make_scale_fixture.py fashion64 --out ~/scale/fmnist64
    python benchmarks/bench_scale.py --root ~/scale/fmnist64 --work ~/scale/bench     # N = 10k, 30k, 60k
    python benchmarks/bench_scale.py --root ~/scale/fmnist64 --work /tmp/smoke --sizes 200 400   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from latentdd.parallel import launch_args  # noqa: E402

TAEF2 = REPO.parent / "shared" / "weights" / "taef2"
STAGES = ("encode", "distill", "render", "cli")


# ---------------------------------------------------------------------------------------
# The stages, each run in a fresh process by `--stage NAME` (so its peak RSS is its own).


def stage_distill(cache: Path, out: Path, ipc: int, seed: int) -> dict:
    from latentdd.distill import make_distiller
    from latentdd.latents.sharded import open_latents

    start = time.perf_counter()
    latents = open_latents(cache)  # labels in memory, latents on disk: one class is read at a time
    synthetic = make_distiller("kmeans").distill(latents, ipc, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    synthetic.save(out / "latents.safetensors")
    return {"seconds": time.perf_counter() - start, "classes": len(latents.class_names), "images": len(latents),
            "backend": synthetic.extras["backend"], "device": synthetic.extras["device"]}


# ---------------------------------------------------------------------------------------
# The driver.


def link_subset(root: Path, n: int, where: Path) -> Path:
    """<where>/train/<class>/ links to the first n // K files of each class of <root>/train, val/ -> <root>/val."""
    from latentdd.data.image_folder import IMAGE_EXTENSIONS, _image_files, _visible_dirs
    from latentdd.errors import DataError

    classes = _visible_dirs(root / "train")
    per_class = n // len(classes)
    if per_class < 1:
        raise DataError(f"N = {n} is fewer than one image for each of the {len(classes)} classes of {root}")
    for folder in classes:
        files = _image_files(folder, IMAGE_EXTENSIONS)
        if len(files) < per_class:
            raise DataError(f"{folder} has {len(files)} images; N = {n} needs {per_class} of each class")
        target = where / "train" / folder.name
        target.mkdir(parents=True, exist_ok=True)
        for f in files[:per_class]:
            link = target / f.name
            if not link.is_symlink():
                link.symlink_to(f.resolve())
    val = where / "val"
    if not val.is_symlink():
        val.symlink_to((root / "val").resolve(), target_is_directory=True)
    return where


def run_measured(command: list[str], report: Path | None = None) -> dict:
    """Run `command` as a child -> {"wall_seconds", "peak_rss_mb", and its report's fields}; raises if it fails."""
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage (ru_maxrss in KiB on Linux)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"bench_scale: {' '.join(command)} failed with exit code {child.returncode}")
    result = {"wall_seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024}
    if report is not None:
        result |= json.loads(report.read_text())
    return result


def measure(n: int, args, work: Path) -> list[dict]:
    """Every stage of args.stages at size n -> rows {"n", "stage", "wall_seconds", "peak_rss_mb", ...}."""
    folder = link_subset(Path(args.root).expanduser(), n, work / f"n{n}" / "data")
    cache, distilled = work / f"n{n}" / "latents", work / f"n{n}" / "distill"
    common = ["--dataset", "imagefolder", "--root", str(folder), "--image-size", str(args.image_size),
              "--channels", "3", "--resize", "resize", "--vae", args.vae, "--cache-dir", str(work / "cache"), "--quiet"]
    me = [sys.executable, str(Path(__file__).resolve())]
    rows = []
    for stage in args.stages:
        report = work / f"n{n}" / f"{stage}.json"
        launch = [sys.executable, *launch_args(args.processes), "-m", "latentdd"]
        if stage == "encode":
            result = run_measured([*launch, "encode", *common, "--out", str(cache),
                                   "--encode-batch-size", str(args.batch_size)])
        elif stage == "distill":
            result = run_measured([*me, "--stage", "distill", "--cache", str(cache), "--stage-out", str(distilled),
                                   "--ipc", str(args.ipc), "--report", str(report)], report)
        elif stage == "render":  # `latentdd render` with the vae decoder, split over the processes too
            result = run_measured([*launch, "render", *common, "--synthetic", str(distilled), "--out",
                                   str(distilled / "rendered"), "--overwrite"])
            result |= {"seconds": json.loads((distilled / "rendered" / "render.json").read_text())["seconds"]}
        else:
            result = run_measured([sys.executable, "-m", "latentdd", "distill", *common, "--latents", str(cache),
                                   "--method", "kmeans", "--ipc", str(args.ipc), "--out", str(work / f"n{n}" / "cli"),
                                   "--overwrite"])
        rows.append({"n": n, "stage": stage, **result, "seconds_per_image": result["wall_seconds"] / n})
        print(f"N={n:>7} {stage:<8} {result['wall_seconds']:8.1f} s  peak RSS {result['peak_rss_mb']:8.0f} MB",
              flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    lines = ["| N | " + " | ".join(f"{s} s | {s} peak RSS MB" for s in stages) + " |",
             "|---:|" + "---:|---:|" * len(stages)]
    for n in sorted({r["n"] for r in rows}):
        cells = []
        for s in stages:
            r = next(r for r in rows if r["n"] == n and r["stage"] == s)
            cells += [f"{r['wall_seconds']:.1f}", f"{r['peak_rss_mb']:.0f}"]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], title: str) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, sec) = plt.subplots(1, 2, figsize=(10, 4))
    for stage in dict.fromkeys(r["stage"] for r in rows):
        points = sorted((r["n"], r["peak_rss_mb"], r["wall_seconds"]) for r in rows if r["stage"] == stage)
        ns = [p[0] for p in points]
        mem.plot(ns, [p[1] for p in points], marker="o", label=stage)
        sec.plot(ns, [p[2] for p in points], marker="o", label=stage)
    mem.set(xlabel="images N", ylabel="peak RSS (MB)", title="memory per stage")
    sec.set(xlabel="images N", ylabel="wall seconds", title="time per stage")
    mem.set_ylim(bottom=0)
    for ax in (mem, sec):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--root", help="a train/ + val/ image folder with at least max(--sizes) / K images per class")
    p.add_argument("--work", help="where the linked folders, caches and outputs go (a folder latentdd may write)")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 60_000])
    p.add_argument("--stages", nargs="+", choices=STAGES, default=["encode", "distill", "render"])
    p.add_argument("--vae", default=f"taesd:{TAEF2}")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256, help="images per encoder call")
    p.add_argument("--processes", type=int, default=1,
                   help="encode and render under accelerate launch --multi_gpu with this many processes")
    p.add_argument("--out", help="JSON report (default WORK/scale.json; the plot beside it as .png)")
    # One stage in this process (what the driver runs in its children).
    p.add_argument("--stage", choices=("distill",), help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--stage-out", help=argparse.SUPPRESS)
    p.add_argument("--report", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))  # pipelines/ and latentdd/ of this checkout

    if args.stage == "distill":
        result = stage_distill(Path(args.cache), Path(args.stage_out), args.ipc, seed=0)
    if args.stage:
        Path(args.report).write_text(json.dumps(result))
        return 0

    from latentdd.io import atomic_write_bytes, atomic_write_json, claim_folder
    from latentdd.record import library_versions

    if not args.root or not args.work:
        p.error("--root and --work are required")
    work = claim_folder(Path(args.work).expanduser(), "bench-scale")
    rows = [row for n in args.sizes for row in measure(n, args, work)]
    out = Path(args.out).expanduser() if args.out else work / "scale.json"
    config = {k: getattr(args, k) for k in ("root", "sizes", "stages", "vae", "image_size", "ipc", "batch_size",
                                            "processes")}
    atomic_write_json(out, {"rows": rows, "config": config, "versions": library_versions(),
                            "rss": "ru_maxrss of the stage's process (os.wait4), MB"})
    title = f"{Path(args.root).name}, {args.vae.split('/')[-1]}, {args.image_size} px, IPC {args.ipc}, " \
            f"{args.processes} encode process(es), {os.cpu_count()} cores"
    atomic_write_bytes(out.with_suffix(".png"), plot(rows, title))
    print(markdown(rows))
    print(f"\nwritten: {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
