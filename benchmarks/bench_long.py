"""Long sequences: ``window`` and ``global_random`` token graphs up to
L = 16,384 through the sparse kernel, against dense (full) SDPA at the same
L.  Forward + backward time and peak memory against L; the sparse patterns
should grow linearly, dense attention quadratically."""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import (machine, peak_memory, run_probe_if_asked, time_it,
                    write_result)
from tgnn_transformers.functional import edge_attention, sequence_edge_index

D, HEADS = 64, 4
LENGTHS = [1024, 2048, 4096, 8192, 16384]
PATTERNS = {
    "window": dict(window=16),
    "global_random": dict(num_global=2, num_random=16),
}


def workload(pattern: str, length: int, device: str):
    c = D // HEADS
    if pattern == "dense SDPA":
        q, k, v = (torch.randn(1, HEADS, length, c, device=device,
                               requires_grad=True) for _ in range(3))
        return (lambda: F.scaled_dot_product_attention(q, k, v).sum()
                .backward()), length * length
    edge_index = sequence_edge_index(length, pattern,
                                     **PATTERNS[pattern]).to(device)
    q, k, v = (torch.randn(length, HEADS, c, device=device,
                           requires_grad=True) for _ in range(3))
    return (lambda: edge_attention(q, k, v, edge_index,
                                   backend="sparse").out.sum().backward()), \
        edge_index.size(1)


def build_probe(spec):
    fn, _ = workload(spec["pattern"], spec["length"],
                     spec.get("device", "cpu"))
    fn()
    return fn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lengths", type=int, nargs="+", default=LENGTHS)
    args = parser.parse_args(argv)
    rows = []
    for length in args.lengths:
        for pattern in list(PATTERNS) + ["dense SDPA"]:
            fn, num_edges = workload(pattern, length, args.device)
            timing = time_it(fn, args.repeats, device=args.device)
            memory = peak_memory(__file__, {"pattern": pattern,
                                            "length": length,
                                            "device": args.device})
            rows.append({"length": length, "pattern": pattern,
                         "num_edges": num_edges, "forward_backward": timing,
                         "peak_memory_bytes": memory})
            print(f"L={length:6d} {pattern:14s} {num_edges:>11d} edges "
                  f"{1000 * timing['median_s']:9.1f} ms  "
                  f"mem {(memory or 0) / 2**20:.0f} MiB")
    suffix = "" if args.device == "cpu" else "_" + args.device.split(":")[0]
    print("wrote", write_result(f"long{suffix}", {
        "machine": machine(), "d_model": D, "heads": HEADS,
        "patterns": PATTERNS, "rows": rows}))


if __name__ == "__main__":
    run_probe_if_asked(build_probe)
    main()
