"""Encode speedup from several processes: `latentdd encode` of one image folder with P processes x T
threads, for each --configs entry "PxT", and whether every configuration wrote the same cache.

P = 1 runs `python -m latentdd encode`; P > 1 runs it under `accelerate launch --multi_gpu
--num_processes P` (on a machine without GPUs the processes join a gloo group on the CPU;
without --multi_gpu accelerate would start one process). OMP_NUM_THREADS = T in every
process. The encode seconds are the slowest rank's own count ("encode (rank r): done ... in
X s", after loading the VAE; the start-up is in the wall seconds beside it), so the speedup
is that of the encoding itself; images/s = N / those seconds. Every configuration's shards
are compared byte for byte with the first's: multi-process must equal single-process.

    python benchmarks/bench_encode_processes.py --root ~/scale/fmnist64 --images 5000 --work /tmp/encode_procs \\
        --vae taesd:../shared/weights/taef2 --configs 1x1 1x2 2x1 --interrupt 2      # on 2 cores

--interrupt K: a last run of the last configuration is killed with SIGKILL (the launcher and
every rank: torch's launcher puts each rank in a session of its own, so killing the launcher
or its process group alone leaves the ranks running) once K shards are written, then run
again to the end; its shards must equal the first configuration's byte for byte, and
nothing may be left over.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from latentdd.parallel import launch_args  # noqa: E402

DONE = re.compile(r"encode \(rank (\d+)\): done (\d+)/\d+ img in ([0-9.]+) s")


def shard_digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("shard-*.safetensors"))}


def encode_command(processes: int, threads: int, args, out: Path) -> tuple[list[str], dict]:
    encode = ["-m", "latentdd", "encode", "--dataset", "imagefolder", "--root", str(args.root), "--image-size",
              str(args.image_size), "--channels", "3", "--resize", "resize", "--vae", args.vae,
              "--encode-batch-size", str(args.batch_size), "--shard-size", str(args.shard_size),
              "--cache-dir", str(args.work / "cache"), "--out", str(out)]
    threads_env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return [sys.executable, *launch_args(processes), *encode], {**os.environ, **threads_env}


def run_config(processes: int, threads: int, args, out: Path, fresh: bool = True) -> dict:
    """One encode into `out` (removed first if `fresh`) -> {"config", "encode_seconds", "wall_seconds", "images", ...}."""
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    command, env = encode_command(processes, threads, args, out)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"bench_encode_processes: {processes}x{threads} failed:\n{done.stderr[-3000:]}")
    ranks = {int(r): (int(n), float(s)) for r, n, s in DONE.findall(done.stderr)}
    if len(ranks) != processes and fresh:
        raise SystemExit(f"bench_encode_processes: {processes}x{threads} ran {len(ranks)} encoding process(es), "
                         f"not {processes}:\n{done.stderr[-3000:]}")
    images = sum(n for n, _ in ranks.values())
    seconds = max(s for _, s in ranks.values())
    return {"config": f"{processes}x{threads}", "processes": processes, "threads": threads, "images": images,
            "encode_seconds": seconds, "wall_seconds": wall, "images_per_s": images / seconds if seconds else None,
            "per_rank": {r: {"images": n, "seconds": s} for r, (n, s) in sorted(ranks.items())}}


def kill_tree(pid: int) -> int:
    """SIGKILL process `pid` and every descendant -> how many processes were killed.

    Not the process group: torch's elastic launcher (under accelerate launch) starts each rank in
    a session of its own, so a kill -9 of the launcher or of its group leaves the ranks running.
    """
    import psutil

    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for proc in tree:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=30)
    return len(tree)


def interrupted(processes: int, threads: int, args, out: Path, after_shards: int) -> dict:
    """Start a P-process encode into `out`, SIGKILL the launcher and every rank once `after_shards` shards
    are on disk, run it again to the end -> {"shards_before_kill", "stale_files_after", ...}."""
    shutil.rmtree(out, ignore_errors=True)
    command, env = encode_command(processes, threads, args, out)
    child = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(shard_digests(out) if out.is_dir() else {}) < after_shards and child.poll() is None:
        time.sleep(0.05)
    killed = kill_tree(child.pid)
    child.wait()
    before = len(shard_digests(out))
    again = run_config(processes, threads, args, out, fresh=False)
    stale = sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".latentdd.json")
    return {"config": f"{processes}x{threads}", "killed_processes": killed, "shards_before_kill": before,
            "shards": len(shard_digests(out)), "encode_seconds_again": again["encode_seconds"],
            "images_encoded_again": again["images"], "stale_files_after": stale}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--root", type=Path, required=True, help="an image folder with train/ and val/ "
                                                             "(scripts/make_scale_fixture.py)")
    p.add_argument("--work", type=Path, required=True, help="scratch folder for the caches (replaced each run)")
    p.add_argument("--vae", required=True, help="e.g. taesd:../shared/weights/taef2")
    p.add_argument("--configs", nargs="+", default=["1x1", "1x2", "2x1"], help="PROCESSESxTHREADS entries")
    p.add_argument("--images", type=int, help="encode a balanced subset of this many train images (linked under "
                                              "WORK, as bench_scale.py does; default: all of --root)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--shard-size", type=int, default=1024, help="images per shard: the unit split over processes")
    p.add_argument("--interrupt", type=int, metavar="SHARDS",
                   help="then kill -9 the last configuration's encode (launcher and ranks) once SHARDS shards are "
                        "written, run it again, and compare its shards with the first configuration's")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from latentdd.io import atomic_write_json, claim_folder
    from latentdd.record import library_versions

    args.work = claim_folder(args.work.expanduser(), "bench-encode-processes")
    if args.images:
        from bench_scale import link_subset  # benchmarks/ is on sys.path when this file runs as a script

        args.root = link_subset(args.root.expanduser(), args.images, args.work / f"data-{args.images}")
    rows, reference = [], None
    for config in args.configs:
        processes, threads = (int(v) for v in config.lower().split("x"))
        out = args.work / f"cache-{config}"
        row = run_config(processes, threads, args, out)
        digests = shard_digests(out)
        reference = reference or digests
        row["same_shards_as_first"] = digests == reference
        rows.append(row)
        print(f"{config:>5}: {row['images']} images, encode {row['encode_seconds']:.1f} s "
              f"({row['images_per_s']:.1f} img/s; wall {row['wall_seconds']:.1f} s), "
              f"shards identical to {args.configs[0]}: {row['same_shards_as_first']}", flush=True)
    print(f"\n| config | images/s | speedup vs {args.configs[0]} | same shards |\n|---|---:|---:|---|")
    for row in rows:
        print(f"| {row['config']} | {row['images_per_s']:.1f} | {row['images_per_s'] / rows[0]['images_per_s']:.2f}x "
              f"| {row['same_shards_as_first']} |")
    resumed = None
    if args.interrupt:
        processes, threads = (int(v) for v in args.configs[-1].lower().split("x"))
        resumed = interrupted(processes, threads, args, args.work / "cache-interrupted", args.interrupt)
        resumed["same_shards_as_first"] = shard_digests(args.work / "cache-interrupted") == reference
        print(f"\nkill -9 of {resumed['killed_processes']} processes with {resumed['shards_before_kill']} of "
              f"{resumed['shards']} shards written, run again: {resumed['images_encoded_again']} images encoded again in "
              f"{resumed['encode_seconds_again']:.1f} s; shards identical to {args.configs[0]}: "
              f"{resumed['same_shards_as_first']}; files left over: {resumed['stale_files_after'] or 'none'}")
    if args.json:
        atomic_write_json(args.json, {"rows": rows, "interrupted": resumed, "vae": args.vae, "root": str(args.root),
                                      "batch_size": args.batch_size, "shard_size": args.shard_size,
                                      "cpu_count": os.cpu_count(), "versions": library_versions()})
    same = all(r["same_shards_as_first"] for r in rows) and (resumed is None or resumed["same_shards_as_first"])
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
