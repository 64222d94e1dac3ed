#!/usr/bin/env bash
# One command on a fresh Debian machine: install everything, then run the main job on
# Fashion-MNIST: a random real IPC-10 set, exported as an image folder and evaluated
# under the DSA protocol (ConvNet-3, 1000 epochs, 3 runs; about 12 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
OUT="${OUT:-runs/quickstart}"
[ -f "$OUT/random_ipc10/manifest.json" ] || \
    .venv/bin/latentdd baseline --dataset fashion_mnist --method random --ipc 10 --seed 0 --out "$OUT/random_ipc10"
.venv/bin/latentdd evaluate --images "$OUT/random_ipc10" --dataset fashion_mnist --protocol dsa --num-eval 3 \
    --json "$OUT/random_ipc10_eval.json"
