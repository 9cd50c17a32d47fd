#!/usr/bin/env bash
# Creates .venv (if missing) and installs the package with its test tools.
# torch is pinned first to the CPU build so nothing pulls a CUDA build.
# Set TGNN_EXTRAS=scatter to also compile torch-scatter / torch-sparse.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip setuptools wheel
$PIP install -q "torch==${TGNN_TORCH_VERSION:-2.13.0}"
$PIP install -q -e ".[dev,plot,ogb]"
if [[ ",${TGNN_EXTRAS:-}," == *",scatter,"* ]]; then
    MAX_JOBS=${MAX_JOBS:-2} $PIP install -q --no-build-isolation \
        torch-scatter torch-sparse
fi
