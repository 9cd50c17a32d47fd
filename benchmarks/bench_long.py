"""Long sequences: ``window`` and ``global_random`` token graphs up to
L = 16,384 (CPU defaults) through this package's kernels, against dense
(full) SDPA and, on a GPU, FlexAttention with the same window mask.
Forward + backward time and peak memory against L; the sparse patterns
should grow linearly, dense attention quadratically.

The GPU run of the issue's target (window w = 128, 8 heads x 32, 16k-256k
tokens, fp32 and bf16)::

    python bench_long.py --device cuda --patterns window --window 128 \\
        --heads 8 --channels 32 --lengths 16384 65536 262144 \\
        --backends sparse triton flex --flex-baseline --dtype bf16
"""
from __future__ import annotations

import argparse
import functools

import torch
import torch.nn.functional as F

from common import (machine, peak_memory, run_probe_if_asked, time_it,
                    write_result)
from tgnn_transformers.functional import edge_attention, sequence_edge_index

LENGTHS = [1024, 2048, 4096, 8192, 16384]
PATTERNS = ("window", "global_random")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DENSE = "dense SDPA"
FLEX = "FlexAttention (raw, compiled)"


def pattern_arguments(pattern: str, window: int) -> dict:
    if pattern == "window":
        return dict(window=window)
    return dict(num_global=2, num_random=16)


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


def _flex_workload(length, heads, channels, window, device, dtype):
    """FlexAttention on ``[1, H, L, C]`` with the window ``|q - kv| <=
    window``: the mask ``sequence_edge_index(L, "window")`` builds."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q, kv):
        return (q - kv).abs() <= window

    mask = create_block_mask(mask_mod, 1, None, length, length,
                             device=device)
    q, k, v = (torch.randn(1, heads, length, channels, device=device,
                           dtype=dtype, requires_grad=True)
               for _ in range(3))
    flex = _compiled_flex()
    return (lambda: flex(q, k, v, block_mask=mask).float().sum()
            .backward()), length * (2 * window + 1)


def workload(spec):
    """``(fn, num_edges)``: one forward + backward of ``spec``."""
    length, heads, channels = spec["length"], spec["heads"], spec["channels"]
    device, dtype = spec.get("device", "cpu"), DTYPES[spec.get("dtype",
                                                                 "fp32")]
    if spec["pattern"] == DENSE:
        q, k, v = (torch.randn(1, heads, length, channels, device=device,
                               dtype=dtype, requires_grad=True)
                   for _ in range(3))
        return (lambda: F.scaled_dot_product_attention(q, k, v).float().sum()
                .backward()), length * length
    if spec["pattern"] == FLEX:
        return _flex_workload(length, heads, channels, spec["window"], device,
                              dtype)
    edge_index = sequence_edge_index(
        length, spec["pattern"], **pattern_arguments(
            spec["pattern"], spec["window"])).to(device)
    q, k, v = (torch.randn(length, heads, channels, device=device,
                           dtype=dtype, requires_grad=True)
               for _ in range(3))
    backend = spec.get("backend", "sparse")
    return (lambda: edge_attention(q, k, v, edge_index, backend=backend)
            .out.float().sum().backward()), edge_index.size(1)


def build_probe(spec):
    fn, _ = workload(spec)
    fn()  # caches (CSR index, block mask, compiled kernels) outside the peak
    return fn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lengths", type=int, nargs="+", default=LENGTHS)
    parser.add_argument("--patterns", nargs="+", choices=PATTERNS,
                        default=list(PATTERNS))
    parser.add_argument("--window", type=int, default=16,
                        help="half width of the window pattern")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--channels", type=int, default=16,
                        help="channels per head")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--backends", nargs="+", default=["sparse"],
                        choices=["auto", "sparse", "triton", "flex"],
                        help="edge_attention backends to time (flex: only "
                        "the window pattern; triton and flex need CUDA; "
                        "auto: what edge_attention picks)")
    parser.add_argument("--flex-baseline", action="store_true",
                        help="also time raw compiled FlexAttention with the "
                        "same window mask (CUDA)")
    parser.add_argument("--dense-max-length", type=int, default=16384,
                        help="time dense SDPA up to this length")
    args = parser.parse_args(argv)
    base = dict(heads=args.heads, channels=args.channels,
                window=args.window, device=args.device, dtype=args.dtype)
    rows = []
    for length in args.lengths:
        runs = [dict(pattern=p, backend=b) for p in args.patterns
                for b in args.backends if b != "flex" or p == "window"]
        if args.flex_baseline:
            runs.append(dict(pattern=FLEX))
        if length <= args.dense_max_length:
            runs.append(dict(pattern=DENSE))
        for run in runs:
            spec = dict(base, length=length, **run)
            fn, num_edges = workload(spec)
            timing = time_it(fn, args.repeats, device=args.device)
            del fn
            memory = peak_memory(__file__, spec)
            rows.append({"length": length, **run, "dtype": args.dtype,
                         "num_edges": num_edges, "forward_backward": timing,
                         "peak_memory_bytes": memory})
            label = run["pattern"] + (f" ({run['backend']})"
                                      if "backend" in run else "")
            print(f"L={length:6d} {label:30s} {num_edges:>11d} edges "
                  f"{1000 * timing['median_s']:9.2f} ms  "
                  f"mem {(memory or 0) / 2**20:.0f} MiB", flush=True)
    suffix = "" if args.device == "cpu" else "_" + args.device.split(":")[0]
    suffix += "" if args.dtype == "fp32" else "_" + args.dtype
    suffix += "" if args.window == 16 else f"_w{args.window}"
    print("wrote", write_result(f"long{suffix}", {
        "machine": machine(), "heads": args.heads,
        "channels": args.channels, "window": args.window,
        "patterns": {p: pattern_arguments(p, args.window)
                     for p in args.patterns}, "rows": rows}))


if __name__ == "__main__":
    run_probe_if_asked(build_probe)
    main()
