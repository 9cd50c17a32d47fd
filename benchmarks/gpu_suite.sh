#!/usr/bin/env bash
# One call on a lent GPU: the CUDA tests, the Triton kernel's tests on the
# device, and the GPU benchmarks (fp32 and bf16; sparse vs Triton kernels vs
# PyG), results copied under $OUT (default: ./gpu_results).
#
#   OUT=/some/dir bash benchmarks/gpu_suite.sh            # ~10 min on an H100
#   QUICK=1 bash benchmarks/gpu_suite.sh                   # smaller graphs
#
# Needs a CUDA build of torch and triton (pip install -e ".[dev]" on a GPU
# machine; the CPU-only venv cannot run this).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_results}"
mkdir -p "$OUT"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
MIRROR="${TGNN_DATA_MIRROR:-../shared/data}"
export TGNN_DATA_MIRROR="$(cd "$MIRROR" 2>/dev/null && pwd || echo "$MIRROR")"
OUT="$(cd "$OUT" && pwd)"
status=0

"$PY" - <<'PY' | tee "$OUT/device.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name())
try:
    import triton
    print("triton", triton.__version__)
except ImportError:
    print("triton missing")
PY

# 1. correctness on the device (CUDA tests skip nothing here)
timeout 300 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    tests/test_mixed_precision.py 2>&1 | tee "$OUT/tests.txt" || status=1

# 2. benchmarks: sparse graphs, fp32 and bf16, sparse and Triton kernels
SIZES="1e5 1e6 1e7"
[ -n "${QUICK:-}" ] && SIZES="1e5 1e6"
for dtype in fp32 bf16; do
    timeout 600 "$PY" benchmarks/bench_sparse.py --device cuda \
        --backends sparse triton --dtype "$dtype" --sizes $SIZES \
        --repeats 5 2>&1 | tee "$OUT/bench_sparse_$dtype.txt" || status=1
done
# 3. token batches against SDPA and long window graphs
(cd benchmarks && timeout 300 "$PY" bench_dense.py --device cuda 2>&1 |
    tee "$OUT/bench_dense.txt") || status=1
(cd benchmarks && timeout 300 "$PY" bench_long.py --device cuda 2>&1 |
    tee "$OUT/bench_long.txt") || status=1
# 4. PNA-Attention's max/min aggregation against PyG's
(cd benchmarks && timeout 300 "$PY" bench_aggregate.py --device cuda 2>&1 |
    tee "$OUT/bench_aggregate.txt") || status=1

cp benchmarks/results/*cuda*.json "$OUT/" 2>/dev/null
echo "results in $OUT (status $status)"
exit $status
