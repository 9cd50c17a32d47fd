#!/usr/bin/env bash
# Sets up .venv and runs the main job.  Run again, it replaces the earlier
# result in runs/cora-mha (--overwrite), unless --resume is given, which
# continues an interrupted one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${TGNN_DATA_MIRROR:-}" ] && [ -d ../shared/data ]; then
    export TGNN_DATA_MIRROR="$(cd ../shared/data && pwd)"
fi
again=--overwrite
for arg in "$@"; do
    if [ "$arg" = --resume ]; then again=; fi
done
.venv/bin/tgnn train --task node --dataset cora --model mha --seeds 0 \
    --out runs/cora-mha $again "$@"
