#!/usr/bin/env bash
# One command on a fresh Debian machine: install everything, then run the main job on
# Fashion-MNIST at a fraction of the full settings (configs/quickstart.yaml): fit the small VAE, encode the
# train split, distil DM and kmeans latents at IPC 10, render them by VAE decoding, train one
# ConvNet-3 for 50 epochs on each set and on 3 random-real subsets, and print the table with the
# gain over random real, the grids' and the image folders' paths. The full protocol:
#   .venv/bin/latentdd run --config configs/fashion_mnist.yaml
# Every stage is cached: running it again only redoes what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/latentdd run --config configs/quickstart.yaml "$@"
