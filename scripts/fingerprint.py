"""Behaviour fingerprint: the bytes a fixed set of small commands produce, to show a refactor changed nothing.

On `digits` with a 30-step fitted VAE: the VAE's weights, the latents of kmeans, DM, BACON and IDM at IPC 1
(20 iterations each), and the accuracies of one full `dsa` evaluation (2 trainings, 300 epochs) of a random real
IPC-1 set (real pixels: the 30-step VAE's decodings train to chance, which would say little about the evaluator).
Prints one JSON object {name: sha256 or accuracies}; with --compare FILE, the names whose value differs.

    taskset -c 0 python scripts/fingerprint.py --work /tmp/fp > results/internals/fingerprint_before.json
    taskset -c 0 python scripts/fingerprint.py --work /tmp/fp2 --compare results/internals/fingerprint_before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

LATENTDD = [sys.executable, "-m", "latentdd"]
BASE = "dataset: {name: digits}\nlatent: {vae: fit, fit: {max_steps: 30}}\n"
METHODS = {"kmeans": [], "dm": ["--param", "iterations=20"], "bacon": ["--param", "iterations=20"],
           "idm": ["--param", "iterations=20"]}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    (work / "base.yaml").write_text(BASE)
    common = ["--config", str(work / "base.yaml"), "--cache-dir", str(work / "cache"), "--quiet"]
    out: dict = {}
    for method, params in METHODS.items():
        folder = work / method
        if not (folder / "latents.safetensors").is_file():
            subprocess.run([*LATENTDD, "distill", *common, "--method", method, "--ipc", "1", *params,
                            "--out", str(folder)], check=True, stdout=subprocess.DEVNULL)
        out[f"{method} latents.safetensors"] = sha256(folder / "latents.safetensors")
    (weights,) = (work / "cache" / "vae").glob("*/diffusion_pytorch_model.safetensors")
    out["fitted VAE weights"] = sha256(weights)
    report = work / "random_dsa.json"
    if not report.is_file():
        if not (work / "random").is_dir():
            subprocess.run([*LATENTDD, "baseline", "--dataset", "digits", "--ipc", "1", "--out", str(work / "random"),
                            "--quiet"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*LATENTDD, "evaluate", "--images", str(work / "random"), "--dataset", "digits",
                        "--protocol", "dsa", "--num-eval", "2", "--json", str(report), "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
    out["random-real IPC 1 dsa accuracies"] = json.loads(report.read_text())["accuracies"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (re-running reuses its outputs)")
    parser.add_argument("--compare", type=Path, help="an earlier fingerprint: print what differs, exit 1 if any")
    args = parser.parse_args()
    now = fingerprint(args.work)
    print(json.dumps(now, indent=1))
    if args.compare:
        before = json.loads(args.compare.read_text())
        differ = [k for k in before.keys() | now.keys() if before.get(k) != now.get(k)]
        print(f"differ: {sorted(differ) or 'nothing'}", file=sys.stderr)
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
