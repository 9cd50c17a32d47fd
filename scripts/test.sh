#!/usr/bin/env bash
# Sets up .venv (with the scatter extra) and runs the test suite (the
# README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
# The tests cover torch_sparse.SparseTensor inputs: build torch-scatter and
# torch-sparse too (about 13 minutes once; pip's wheel cache keeps them).
TGNN_EXTRAS=${TGNN_EXTRAS:-scatter} bash scripts/setup.sh
if [ -z "${TGNN_DATA_MIRROR:-}" ] && [ -d ../shared/data ]; then
    export TGNN_DATA_MIRROR="$(cd ../shared/data && pwd)"
fi
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit "$status"
