#!/usr/bin/env bash
# Sets up .venv and runs the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${TGNN_DATA_MIRROR:-}" ] && [ -d ../shared/data ]; then
    export TGNN_DATA_MIRROR="$(cd ../shared/data && pwd)"
fi
.venv/bin/python -m tgnn_transformers.demo "$@"
