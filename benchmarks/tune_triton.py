"""Launch settings of the Triton attention kernel on a GPU: edges per block
(``BLOCK_E``), warps per program (0: the kernel's own choice) and the way
the backward finds key and value gradients, timed forward and forward +
backward on a power-law graph or a long window graph (the sparse path in
the same run as the reference).

    python tune_triton.py --graph powerlaw --size 1e7 --dtype fp32
    python tune_triton.py --graph window --size 65536 --heads 8
"""
from __future__ import annotations

import argparse
import itertools

import torch

from bench_sparse import DTYPES, power_law_graph
from common import machine, time_it, write_result
from tgnn_transformers.functional import edge_attention, sequence_edge_index
from tgnn_transformers.functional import triton_attention as kernel

CH = 32


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", choices=["powerlaw", "window"],
                        default="powerlaw")
    parser.add_argument("--size", type=float, default=1e7,
                        help="edges of the power-law graph, tokens of the "
                        "window graph (window 128)")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--backward", nargs="+", default=list(
        kernel.BACKWARDS), choices=kernel.BACKWARDS)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--block-e", type=int, nargs="+",
                        default=[16, 32, 64])
    parser.add_argument("--num-warps", type=int, nargs="+",
                        default=[0, 1, 2, 4],
                        help="0: the kernel's default for the tile size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda",
                        help="cuda; cpu runs Triton's interpreter (with "
                        "TRITON_INTERPRET=1: a smoke test, not a timing)")
    args = parser.parse_args(argv)
    device = args.device
    if args.graph == "powerlaw":
        n, edge_index = power_law_graph(int(args.size))
    else:
        n = int(args.size)
        edge_index = sequence_edge_index(n, "window", window=128)
    edge_index = edge_index.to(device)
    q, k, v = (torch.randn(n, args.heads, CH, device=device,
                           dtype=DTYPES[args.dtype], requires_grad=True)
               for _ in range(3))

    def timings(backend):
        def forward():
            with torch.no_grad():
                edge_attention(q, k, v, edge_index, backend=backend)

        def forward_backward():
            edge_attention(q, k, v, edge_index,
                           backend=backend).out.float().sum().backward()
        return {"forward": time_it(forward, args.repeats, device=device),
                "forward_backward": time_it(forward_backward, args.repeats,
                                            device=device)}

    rows = [{"backend": "sparse", **timings("sparse")}]
    for backward, block_e, warps in itertools.product(
            args.backward, args.block_e, args.num_warps):
        kernel.BLOCK_E, kernel.NUM_WARPS = block_e, warps or None
        kernel.BACKWARD = backward
        row = {"backend": "triton", "backward": backward, "block_e": block_e,
               "num_warps": warps or "default", **timings("triton")}
        rows.append(row)
        print(f"{backward:9s} BLOCK_E={block_e:3d} num_warps={warps}: fwd "
              f"{1e3 * row['forward']['median_s']:.2f} ms, fwd+bwd "
              f"{1e3 * row['forward_backward']['median_s']:.2f} ms",
              flush=True)
    kernel.BLOCK_E = kernel.NUM_WARPS = None
    kernel.BACKWARD = kernel.BACKWARDS[0]
    print(f"sparse: fwd {1e3 * rows[0]['forward']['median_s']:.2f} ms, "
          f"fwd+bwd {1e3 * rows[0]['forward_backward']['median_s']:.2f} ms")
    name = f"triton_tuning_cuda_{args.graph}_{args.dtype}"
    print("wrote", write_result(name, {
        "machine": machine(), "graph": args.graph, "num_nodes": n,
        "num_edges": edge_index.size(1), "heads": args.heads,
        "channels": CH,
        "rows": rows}))


if __name__ == "__main__":
    main()
