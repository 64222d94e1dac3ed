#!/usr/bin/env bash
# Issue 36's GPU suite (benchmarks/gpu_suite.py) on a machine with a GPU, in under 8 minutes:
#   bash benchmarks/gpu_suite.sh OUT [options of benchmarks/gpu_suite.py]
# It installs the Python packages the machine lacks first: from the wheel folder $LATENTDD_WHEELS (default
# ./wheelhouse) when there is one, for a machine without internet, made beforehand where there is, e.g.
#   pip download --only-binary :all: --python-version 3.11 -d wheelhouse diffusers pydantic faiss-cpu
# else from the package index. faiss: $LATENTDD_FAISS (default faiss-cpu; faiss-gpu-cu12 for the GPU row).
set -euo pipefail
out=${1:?usage: bash benchmarks/gpu_suite.sh OUT [options of benchmarks/gpu_suite.py]}
shift
py=${PYTHON:-python3}
wheels=${LATENTDD_WHEELS:-wheelhouse}
need=()
for module_package in diffusers:diffusers pydantic:pydantic "faiss:${LATENTDD_FAISS:-faiss-cpu}" \
    safetensors:safetensors accelerate:accelerate sklearn:scikit-learn; do
  "$py" -c "import ${module_package%%:*}" 2>/dev/null || need+=("${module_package#*:}")
done
if ((${#need[@]})); then
  echo "installing ${need[*]}"
  if [ -d "$wheels" ]; then
    "$py" -m pip install -q --no-index --find-links "$wheels" "${need[@]}"
  else
    "$py" -m pip install -q "${need[@]}"
  fi
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$py" benchmarks/gpu_suite.py --out "$out" "$@"
