#!/usr/bin/env bash
# Sets up .venv and runs the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${TGNN_DATA_MIRROR:-}" ] && [ -d ../shared/data ]; then
    export TGNN_DATA_MIRROR="$(cd ../shared/data && pwd)"
fi
.venv/bin/tgnn train --task node --dataset cora --model mha --seeds 0 \
    --out runs/cora-mha "$@"
