#!/usr/bin/env bash
# One call on a lent GPU: the CUDA tests, then the GPU benchmarks of the
# GPU issue (fp32 and bf16; sparse and Triton kernels, FlexAttention, SDPA
# and PyG), most important first.  Every step has a time budget and the
# whole run a deadline, so a short lease still brings back what finished.
#
#   OUT=/some/dir bash benchmarks/gpu_suite.sh
#   DEADLINE=300 ONLY="tests sparse" bash benchmarks/gpu_suite.sh
#
# The steps' budgets add up to ~23 minutes, more than one device call (at
# most 10): a call runs, in order, what fits before DEADLINE (default
# 540 s), and ONLY picks the rest for a second call.  On an H200 the tests
# took ~50 s, each sparse run ~60 s, each window run ~25-45 s.
#
# Logs and the JSON files this run wrote go to $OUT/gpu_results.tar.gz (the
# JSON files also to benchmarks/results/, where gpu_summary.py reads them);
# $OUT/summary.txt holds every log.
# Needs a CUDA build of torch with Triton, PyG, pytest and hypothesis (the
# lent machines' python3 has them; the CPU-only venv cannot run this), and
# the data mirror's linkx/ and planetoid/ (Cornell5, Cora): on the lent
# machine, copy them into a git-ignored folder of the checkout, carry it,
# and set TGNN_DATA_MIRROR to it (the device tool sends no ../shared).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
OUT="${OUT:-gpu_results}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOGS="$(mktemp -d)"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
MIRROR="${TGNN_DATA_MIRROR:-../shared/data}"
export TGNN_DATA_MIRROR="$(cd "$MIRROR" 2>/dev/null && pwd || echo "$MIRROR")"
export TGNN_DATA_ROOT="${TGNN_DATA_ROOT:-$(mktemp -d)}"
export HF_HUB_OFFLINE=1
START=$SECONDS
MARK="$(mktemp)"  # results newer than this are this run's
DEADLINE="${DEADLINE:-540}"
ONLY="${ONLY:-tests tune sparse long dense aggregate lm}"
status=0

# step NAME BUDGET_S COMMAND...: runs when ONLY names NAME's group (the part
# before the first '-') and at least 20 s are left, never past DEADLINE;
# returns the command's exit status (0 when skipped).
step() {
    local name=$1 budget=$2
    shift 2
    case " $ONLY " in *" ${name%%-*} "*) ;; *) return 0 ;; esac
    local left=$((DEADLINE - (SECONDS - START)))
    if [ "$left" -lt 20 ]; then
        echo "== $name skipped: ${left}s left" | tee -a "$LOGS/skipped.txt"
        return 0
    fi
    [ "$budget" -gt "$left" ] && budget=$left
    echo "== $name (budget ${budget}s, $((SECONDS - START))s elapsed)"
    timeout "$budget" "$@" 2>&1 | tee "$LOGS/$name.txt"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -ne 0 ] && echo "== $name: exit $rc"
    return "$rc"
}

"$PY" - <<'PY' | tee "$LOGS/device.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name())
for name in ("triton", "torch_geometric", "torch_scatter", "torch_sparse"):
    try:
        print(name, __import__(name).__version__)
    except ImportError:
        print(name, "missing")
PY

# 1. correctness on the device: every CUDA test, the mixed-precision and
#    FlexAttention suites (their CPU cases too)
TESTS="${TESTS:-tests/test_cuda.py tests/test_mixed_precision.py
tests/test_flex_attention.py}"
step tests 150 "$PY" -m pytest -q -p no:cacheprovider --timeout 120 \
    $TESTS || status=1

# 2. sparse graphs: Cornell5 and power-law 1M / 10M edges against
#    TransformerConv and GATConv (PyG needs ~30 GB at 10M edges)
SIZES="${SIZES:-1e6 1e7}"
for dtype in fp32 bf16; do
    step "sparse-$dtype" 100 "$PY" benchmarks/bench_sparse.py \
        --device cuda --backends sparse triton --dtype "$dtype" \
        --sizes $SIZES --max-pyg-gb 48 --repeats 5 || status=1
done

# 3. the window target: w = 128, L = 64k, 8 heads x 32, against raw
#    FlexAttention (each length compiles FlexAttention once per dtype)
LENGTHS="${LENGTHS:-65536}"
for dtype in fp32 bf16; do
    (cd benchmarks && step "long-$dtype" 90 "$PY" bench_long.py \
        --device cuda --patterns window --window 128 --heads 8 \
        --channels 32 --lengths $LENGTHS --backends auto sparse triton flex \
        --flex-baseline --dtype "$dtype" --dense-max-length 0) || status=1
done

# 4. complete token batches (32 x 128, d = 256) against SDPA
for dtype in bf16 fp32; do
    (cd benchmarks && step "dense-$dtype" 60 "$PY" bench_dense.py \
        --device cuda --shapes 32x128 --dtype "$dtype" \
        --backends auto triton) || status=1
done

# 5. launch settings on the window graph (degree 257)
(cd benchmarks && step tune-window 60 "$PY" tune_triton.py --graph window \
    --size 65536 --heads 8 --block-e 64 128 --num-warps 0 4) || status=1

# 6. the Triton kernel's launch settings and backward on the 10M-edge graph
(cd benchmarks && step tune-powerlaw 90 "$PY" tune_triton.py --size 1e7 \
    --block-e 16 32 --num-warps 0 1 2 4) || status=1

# 7. PNA-Attention's max/min aggregation against PyG's
(cd benchmarks && step aggregate 60 "$PY" bench_aggregate.py \
    --device cuda) || status=1

# 8. the language model: its CUDA tests (cached generation equals
#    recomputing, bf16 training and generation from the CLI), then
#    nanoGPT's Shakespeare-char GPU run, reference GPT then ours (6 x 384,
#    block 256, batch 64, 5,000 steps each, bf16, not compiled); its
#    results: benchmarks/results/lm/gpu/*_cuda.json
step lm-tests 90 "$PY" -m pytest -q -p no:cacheprovider --timeout 80 \
    -k cuda tests/test_language_model.py tests/test_lm_task.py || status=1
step lm-gpu 420 "$PY" benchmarks/lm.py train --experiment gpu --seeds 0 \
    --suffix _cuda || status=1

echo "elapsed $((SECONDS - START))s, status $status" | tee "$LOGS/end.txt"
find benchmarks/results -name '*cuda*.json' -newer "$MARK" \
    -exec cp {} "$LOGS/" \;
tar -czf "$OUT/gpu_results.tar.gz" -C "$LOGS" .
cat "$LOGS"/*.txt > "$OUT/summary.txt"
echo "results in $OUT"
exit $status
