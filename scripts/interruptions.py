"""Kill -9 each long-running command midway, re-run it, and compare its outputs with an uninterrupted run's.

Eight cases on the `digits` dataset (issue 32): fit-vae, encode, distill (kmeans, dm, bacon), render,
evaluate and run. For each, arm A runs the command once; arm B starts the same command (into its own
folders), SIGKILLs its process group when the case's trigger fires (a checkpoint, shard or partial report
on disk, else a share of arm A's wall time), then runs the same command again to the end. The outputs of
both arms are compared file by file, by sha256. JSON records that hold wall-clock timings (distill.json,
reports, the VAE's fit record) are compared without their timing fields (keys named *seconds*,
*per_second*, *_at, "created") and those that say where a piece came from ("resumed_from",
*_cached: arm A trains the network bank that arm B then finds in the shared cache):
they differ between any two runs, interrupted or not; so do a report's "content_sha256" (a digest over those
timings), the arm's own folder in the paths a record names, and the "wall time" line of a results table.
Every artifact (weights, latents, shards, images, manifests) is compared byte for byte.

    taskset -c 0 python scripts/interruptions.py --work /tmp/interruptions --out results/reliability

Resumable: a case already in OUT/interruptions.json is skipped (--redo to run it again).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

LATENTDD = [sys.executable, "-m", "latentdd"]
BASE = """dataset: {name: digits}
latent: {vae: fit, fit: {max_steps: 30}}
"""
_TIMING = re.compile(r"seconds|per_second|_at$|^created$|^resumed_from$|_cached$|^content_sha256$")


def case_table(shared: Path) -> dict[str, dict]:
    """name -> argv (ARM = this arm's folder), outputs (globs under ARM), trigger (glob under ARM or None)."""
    cfg = ["--config", str(shared / "base.yaml")]
    cache = ["--cache-dir", str(shared / "cache")]
    distill = ["distill", *cfg, *cache, "--ipc", "10", "--out", "ARM/o"]
    return {
        "fit-vae": {"argv": ["fit-vae", *cfg, "--cache-dir", "ARM/cache", "--set", "max_steps=200",
                             "--set", "checkpoint_every=25"],
                    "outputs": ["cache/vae/**/*"], "trigger": "cache/vae/.partial-*/checkpoint*"},
        "encode": {"argv": ["encode", *cfg, *cache, "--shard-size", "64", "--out", "ARM/latents"],
                   "outputs": ["latents/**/*"], "trigger": "latents/**/shard-00003*.safetensors"},
        "distill-kmeans": {"argv": [*distill, "--method", "kmeans"], "outputs": ["o/**/*"], "trigger": None},
        "distill-dm": {"argv": [*distill, "--method", "dm", "--param", "iterations=60",
                                "--param", "checkpoint_every=10"],
                       "outputs": ["o/**/*"], "trigger": "o.checkpoint/*"},
        "distill-bacon": {"argv": [*distill, "--method", "bacon", "--param", "iterations=60",
                                   "--param", "checkpoint_every=10"],
                          "outputs": ["o/**/*"], "trigger": "o.checkpoint/*"},
        "render": {"argv": ["render", *cfg, *cache, "--synthetic", str(shared / "dm10"), "--out", "ARM/r"],
                   "outputs": ["r/**/*"], "trigger": "r.tmp-*/images/*/*.png"},  # killed while it writes
        "evaluate": {"argv": ["evaluate", "--images", str(shared / "dm10" / "images"), "--dataset", "digits",
                              "--num-eval", "2", "--epochs", "60", "--json", "ARM/report.json"],
                     "outputs": ["report.json"], "trigger": "report.json.trainings.json"},
        "run": {"argv": ["run", *cfg, *cache, "--methods", "kmeans", "--ipc", "1", "--num-eval", "2",
                         "--epochs", "60", "--out", "ARM/run"],
                "outputs": ["run/**/*"], "trigger": "run/reports/partial/*.json"},
    }


def prepare(shared: Path) -> None:
    """The shared inputs: a fitted VAE in shared/cache and a DM IPC-10 set in shared/dm10."""
    shared.mkdir(parents=True, exist_ok=True)
    (shared / "base.yaml").write_text(BASE)
    if not (shared / "dm10" / "latents.safetensors").is_file():
        subprocess.run([*LATENTDD, "distill", "--config", str(shared / "base.yaml"), "--cache-dir",
                        str(shared / "cache"), "--method", "dm", "--ipc", "10", "--param", "iterations=20",
                        "--out", str(shared / "dm10"), "--quiet"], check=True)


def _argv(case: dict, arm: Path) -> list[str]:
    return [*LATENTDD, *(a.replace("ARM", str(arm)) for a in case["argv"]), "--quiet"]


def _run(argv: list[str], log: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    with log.open("a") as f:
        rc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - t0


def _kill_midway(argv: list[str], arm: Path, trigger: str | None, after: float, log: Path) -> str:
    """Start `argv`, SIGKILL its process group when `trigger` matches a file under `arm` (or after `after`
    seconds without one); what fired."""
    with log.open("a") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.perf_counter()
    while proc.poll() is None:
        waited = time.perf_counter() - t0
        hit = trigger and next(iter(sorted(arm.glob(trigger))), None)
        if hit or (not trigger and waited >= after) or waited >= 4 * after:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            what = f"{hit.relative_to(arm)} on disk" if hit else "no trigger file"
            return f"killed after {waited:.1f} s ({what})"
        time.sleep(0.05)
    return f"finished before the kill (rc {proc.returncode}, {time.perf_counter() - t0:.1f} s)"


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not _TIMING.search(k)}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def digests(arm: Path, globs: list[str]) -> dict[str, str]:
    """relative path -> sha256 of every output file (JSON without its timing fields, see the module doc)."""
    out = {}
    for pattern in globs:
        for path in sorted(arm.glob(pattern)):
            if not path.is_file() or ".partial-" in str(path):
                continue
            data = path.read_bytes()
            if path.suffix == ".json":  # the arm's folder in a path is not a difference
                data = json.dumps(_strip(json.loads(data.replace(str(arm).encode(), b"<arm>"))), sort_keys=True).encode()
            elif path.suffix == ".md":  # a results table ends with the invocation's wall time
                data = b"\n".join(line for line in data.splitlines() if not line.startswith(b"wall time"))
            out[str(path.relative_to(arm))] = hashlib.sha256(data).hexdigest()
    return out


def run_case(name: str, case: dict, work: Path) -> dict:
    a, b = work / name / "uninterrupted", work / name / "interrupted"
    for arm in (a, b):
        if arm.exists():
            shutil.rmtree(arm)  # this script's own scratch folders
        arm.mkdir(parents=True)
    rc_a, wall_a = _run(_argv(case, a), a / "log.txt")
    if rc_a != 0:
        raise SystemExit(f"{name}: the uninterrupted run failed (rc {rc_a}); see {a / 'log.txt'}")
    killed = _kill_midway(_argv(case, b), b, case["trigger"], wall_a / 2, b / "log.txt")
    rc_b, wall_b = _run(_argv(case, b), b / "log.txt")
    da, db = digests(a, case["outputs"]), digests(b, case["outputs"])
    differ = sorted(k for k in da.keys() | db.keys() if da.get(k) != db.get(k))
    return {"case": name, "command": "latentdd " + " ".join(case["argv"]), "kill": killed,
            "uninterrupted_seconds": round(wall_a, 1), "resume_seconds": round(wall_b, 1), "resume_rc": rc_b,
            "files": len(da), "differ": differ, "equal": rc_b == 0 and not differ and bool(da)}


def table(records: list[dict]) -> str:
    lines = ["| case | interruption | re-run | files compared | equal by sha256 |", "|---|---|---|---|---|"]
    for r in records:
        verdict = "yes" if r["equal"] else f"**no**: {', '.join(r['differ']) or 'rc ' + str(r['resume_rc'])}"
        lines.append(f"| {r['case']} | {r['kill']} | {r['resume_seconds']} s (whole run {r['uninterrupted_seconds']} s) "
                     f"| {r['files']} | {verdict} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/latentdd-interruptions"), help="scratch folder")
    parser.add_argument("--out", type=Path, default=Path("results/reliability"), help="where the record goes")
    parser.add_argument("--cases", help="comma-separated subset of the cases")
    parser.add_argument("--redo", action="store_true", help="run cases already recorded again")
    args = parser.parse_args()
    shared = args.work / "shared"
    prepare(shared)
    cases = case_table(shared)
    chosen = args.cases.split(",") if args.cases else list(cases)
    record_path = args.out / "interruptions.json"
    done = {r["case"]: r for r in json.loads(record_path.read_text())} if record_path.is_file() else {}
    for name in chosen:
        if name in done and not args.redo:
            continue
        print(f"{name} ...", flush=True)
        done[name] = run_case(name, cases[name], args.work)
        print(f"  {done[name]['kill']}; equal: {done[name]['equal']}", flush=True)
        records = [done[n] for n in cases if n in done]
        args.out.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(records, indent=1) + "\n")
        (args.out / "interruptions.md").write_text(table(records))
    print(table([done[n] for n in cases if n in done]))
    return 0 if all(r["equal"] for r in done.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
