"""Sparse graphs: this package's attention against PyG's TransformerConv and
GATConv, and a single CSR SpMM of the same pattern and width (the floor).

Workloads: the Cornell5 graph (from the data mirror) and synthetic
power-law graphs with 1e4 .. 1e7 edges.  Forward and forward + backward
time (median of repeats), peak memory increase of forward + backward.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import tempfile

import torch
from torch_geometric.nn import GATConv, TransformerConv

from common import (machine, peak_memory, run_probe_if_asked, time_it,
                    write_result)
from tgnn_transformers import MultiHeadAttentionConv
from tgnn_transformers.functional.sparse_ops import graph_index

IN, HEADS, CH = 128, 4, 32


def power_law_graph(num_edges: int, seed: int = 0):
    """Directed graph with a power-law (Zipf-like) in-degree distribution,
    ~num_edges / 16 nodes."""
    gen = torch.Generator().manual_seed(seed)
    n = max(64, num_edges // 16)
    weights = 1.0 / torch.arange(1, n + 1, dtype=torch.float) ** 0.8
    dst = torch.multinomial(weights, num_edges, replacement=True,
                            generator=gen)
    src = torch.randint(0, n, (num_edges, ), generator=gen)
    return n, torch.stack([src, dst])


def cornell5():
    from tgnn_transformers.data import load_dataset
    root = os.environ.get("TGNN_DATA_ROOT") or tempfile.mkdtemp()
    data = load_dataset("cornell5", root=root)[0]
    return data.num_nodes, data.edge_index


#: ``--backends``: the package's kernels to time ("triton" needs CUDA).
BACKENDS = ("sparse", "triton")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def layers(backends=("sparse", )):
    ours = {f"tgnn MultiHeadAttentionConv ({b})" if b != "sparse" else
            "tgnn MultiHeadAttentionConv":
            (lambda b=b: MultiHeadAttentionConv(IN, CH, heads=HEADS,
                                                backend=b))
            for b in backends}
    return {
        **ours,
        "PyG TransformerConv": lambda: TransformerConv(IN, CH, heads=HEADS),
        "PyG GATConv": lambda: GATConv(IN, CH, heads=HEADS,
                                       add_self_loops=False),
    }


def estimated_pyg_bytes(num_edges: int) -> int:
    # TransformerConv keeps ~6 [E, H, C] float tensors alive in backward.
    return 6 * num_edges * HEADS * CH * 4


def bench_graph(name, n, edge_index, repeats, device, max_pyg_gb,
                backends=("sparse", ), dtype="fp32"):
    x = torch.randn(n, IN, device=device, dtype=DTYPES[dtype])
    edge_index = edge_index.to(device)
    rows = []
    for label, make in layers(backends).items():
        if not label.startswith("tgnn") and \
                estimated_pyg_bytes(edge_index.size(1)) > max_pyg_gb * 2**30:
            rows.append({"graph": name, "layer": label, "skipped":
                         f"would need > {max_pyg_gb} GB"})
            print(f"  {label:30s} skipped (memory)")
            continue
        torch.manual_seed(0)
        conv = make().to(device, DTYPES[dtype])
        xg = x.clone().requires_grad_()

        def forward():
            with torch.no_grad():
                conv(x, edge_index)

        def forward_backward():
            conv(xg, edge_index).sum().backward()

        row = {"graph": name, "layer": label, "dtype": dtype, "num_nodes": n,
               "num_edges": edge_index.size(1),
               "forward": time_it(forward, repeats, device=device),
               "forward_backward": time_it(forward_backward, repeats,
                                           device=device)}

        row["peak_memory_bytes"] = peak_memory(__file__, {
            "graph": name, "layer": label, "device": device,
            "backends": list(backends), "dtype": dtype})
        rows.append(row)
        print(f"  {label:30s} fwd {row['forward']['median_s']:.3f}s  "
              f"fwd+bwd {row['forward_backward']['median_s']:.3f}s  "
              f"mem {(row['peak_memory_bytes'] or 0) / 2**20:.0f} MiB")
    # the floor: one CSR SpMM of the same pattern and width
    index = graph_index(edge_index, n, n)
    matrix = index.csr(torch.rand(index.num_edges, device=device))
    dense = torch.randn(n, HEADS * CH, device=device)
    spmm = time_it(lambda: torch.mm(matrix, dense), repeats, device=device)
    rows.append({"graph": name, "layer": "one CSR SpMM (floor)",
                 "num_edges": edge_index.size(1), "forward": spmm})
    print(f"  {'one CSR SpMM (floor)':30s} {spmm['median_s']:.3f}s")
    # same outputs
    torch.manual_seed(0)
    ref = TransformerConv(IN, CH, heads=HEADS).to(device)
    ours = MultiHeadAttentionConv(IN, CH, heads=HEADS).to(device)
    ours.load_state_dict(ref.state_dict())
    if estimated_pyg_bytes(edge_index.size(1)) <= max_pyg_gb * 2**30:
        with torch.no_grad():
            xf = x.float()
            err = (ours(xf, edge_index) - ref(xf, edge_index)).abs().max()
        rows.append({"graph": name, "max_abs_diff_vs_TransformerConv":
                     float(err)})
        print(f"  max |ours - TransformerConv| = {float(err):.2e}")
    return rows


@functools.lru_cache(maxsize=2)  # the memory readings rebuild the graph
def load_graph(name: str):
    if name == "cornell5":
        return cornell5()
    return power_law_graph(int(10**int(name.split("1e")[1])))


def build_probe(spec):
    """The fwd+bwd workload of one (graph, layer) for the memory probe."""
    n, edge_index = load_graph(spec["graph"])
    device = spec.get("device", "cpu")
    dtype = DTYPES[spec.get("dtype", "fp32")]
    torch.manual_seed(0)
    conv = layers(spec.get("backends", ["sparse"]))[spec["layer"]]().to(
        device, dtype)
    x = torch.randn(n, IN, device=device, dtype=dtype, requires_grad=True)
    edge_index = edge_index.to(device)
    with torch.no_grad():  # caches (CSR index) are built outside the peak
        conv(x, edge_index)
    return lambda: conv(x, edge_index).sum().backward()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=float, nargs="+",
                        default=[1e4, 1e5, 1e6, 1e7])
    parser.add_argument("--max-pyg-gb", type=float, default=12.0,
                        help="skip PyG layers whose estimated memory exceeds "
                        "this")
    parser.add_argument("--no-cornell5", action="store_true")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS,
                        default=["sparse"],
                        help="the package's kernels to time (triton: CUDA)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                        help="inputs and weights of every layer")
    parser.add_argument("--name", default="sparse",
                        help="results file name under results/ (device and "
                        "dtype suffixes are added)")
    args = parser.parse_args(argv)
    extra = dict(backends=args.backends, dtype=args.dtype)
    rows = []
    if not args.no_cornell5:
        n, ei = cornell5()
        print(f"Cornell5: {n} nodes, {ei.size(1)} edges")
        rows += bench_graph("cornell5", n, ei, args.repeats, args.device,
                            args.max_pyg_gb, **extra)
    for size in args.sizes:
        n, ei = power_law_graph(int(size))
        print(f"power-law: {n} nodes, {ei.size(1)} edges")
        rows += bench_graph(f"powerlaw-1e{int(math.log10(size))}", n, ei,
                            args.repeats, args.device, args.max_pyg_gb,
                            **extra)
    suffix = "" if args.device == "cpu" else "_" + args.device.split(":")[0]
    suffix += "" if args.dtype == "fp32" else "_" + args.dtype
    path = write_result(f"{args.name}{suffix}", {"machine": machine(),
                                            "in_channels": IN,
                                            "heads": HEADS, "channels": CH,
                                            "rows": rows})
    print("wrote", path)


if __name__ == "__main__":
    run_probe_if_asked(build_probe)
    main()
