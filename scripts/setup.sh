#!/usr/bin/env bash
# Creates .venv (if missing) and installs the package with its test tools.
# torch is pinned first to the CPU build so nothing pulls a CUDA build.
# Set TGNN_EXTRAS=scatter to also compile torch-scatter / torch-sparse.
# A stamp of what was installed (pyproject.toml, this script, the extras,
# the torch version) skips pip entirely when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TGNN_TORCH_VERSION:-2.13.0}
EXTRAS=${TGNN_EXTRAS:-}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
STAMP=.venv/.tgnn-setup-stamp
wanted=$( { cat pyproject.toml scripts/setup.sh; \
            echo "torch=$TORCH_VERSION extras=$EXTRAS"; \
            .venv/bin/python --version; } | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$wanted" ]; then
    exit 0
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip setuptools wheel
$PIP install -q "torch==$TORCH_VERSION"
$PIP install -q -e ".[dev,plot,ogb,pretrained]"
if [[ ",$EXTRAS," == *",scatter,"* ]]; then
    MAX_JOBS=${MAX_JOBS:-2} $PIP install -q --no-build-isolation \
        torch-scatter torch-sparse
fi
echo "$wanted" > "$STAMP"
