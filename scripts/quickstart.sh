#!/usr/bin/env bash
# One command on a fresh Debian machine: install everything, then run the main job on
# Fashion-MNIST (configs/fashion_mnist.yaml): fit the small VAE, encode the train split,
# distil DM and kmeans latents at IPC 10, render them by VAE decoding, evaluate them next
# to 5 random-real subsets under the DSA protocol, and print the table.
# Every stage is cached: running it again only redoes what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/latentdd run --config configs/fashion_mnist.yaml "$@"
