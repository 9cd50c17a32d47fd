"""Neighbour max / min: this package's ``attention_aggregate`` against PyG's
``MaxAggregation`` / ``MinAggregation`` and plain ``torch.scatter_reduce``
(the package's implementation before 0.x: autograd through
``scatter_reduce``), and PNA-Attention against PyG's ``PNAConv``.

On CUDA, ``ours_composed`` is the package without its one-pass Triton
aggregation (``functional/triton_aggregate.py``), in the same run.

Workloads: a batch of complete token graphs (16 sentences of 120 tokens,
the R8 text task's shape) and a synthetic power-law graph of 1M edges; 4
heads of 32 channels.  Forward + backward time, median of repeats, same
process and thread count for every contender.
"""
from __future__ import annotations

import argparse

import torch
from torch_geometric.nn import PNAConv
from torch_geometric.nn.aggr import MaxAggregation, MinAggregation

from bench_sparse import power_law_graph
from common import machine, time_it, write_result
from tgnn_transformers import PNAAttentionConv
from tgnn_transformers.functional import attention_aggregate
from tgnn_transformers.nn.pna_attention_conv import degree_histogram

HEADS, CH = 4, 32
AGGREGATORS = ["mean", "min", "max", "std"]
SCALERS = ["identity", "amplification", "attenuation"]


def complete_graphs(sentences: int = 16, length: int = 120):
    token = torch.arange(length)
    blocks = [torch.stack([token.repeat(length) + b * length,
                           token.repeat_interleave(length) + b * length])
              for b in range(sentences)]
    return sentences * length, torch.cat(blocks, dim=1)


def extremes_contenders(num_nodes: int, edge_index, device: str):
    edge_index = edge_index.to(device)
    src, dst = edge_index
    value = torch.randn(num_nodes, HEADS, CH, device=device,
                        requires_grad=True)
    alpha = torch.rand(edge_index.size(1), HEADS, device=device) + 0.01
    pyg_max, pyg_min = MaxAggregation(), MinAggregation()
    target = dst.view(-1, 1, 1).expand(-1, HEADS, CH)

    def ours():
        out = attention_aggregate(value, alpha, edge_index, num_nodes,
                                  ["max", "min"])
        out.sum().backward()

    def pyg():
        message = value.index_select(0, src).flatten(1)
        out = (pyg_max(message, dst, dim_size=num_nodes) +
               pyg_min(message, dst, dim_size=num_nodes))
        out.sum().backward()

    def scatter_reduce():
        message = value.index_select(0, src)
        total = 0
        for kind, skip in (("amax", float("-inf")), ("amin", float("inf"))):
            best = message.new_full((num_nodes, HEADS, CH), skip)
            best = best.scatter_reduce(0, target, message, kind)
            total = total + best.masked_fill(torch.isinf(best), 0).sum()
        total.backward()

    contenders = {"ours": ours, "pyg_aggregation": pyg,
                  "torch_scatter_reduce": scatter_reduce}
    return with_composed(contenders, device)


def pna_contenders(num_nodes: int, edge_index, device: str):
    width = HEADS * CH
    deg = degree_histogram([edge_index], [num_nodes])
    edge_index = edge_index.to(device)
    x = torch.randn(num_nodes, width, device=device, requires_grad=True)
    ours = PNAAttentionConv(width, CH, heads=HEADS, aggregators=AGGREGATORS,
                            scalers=SCALERS, deg=deg).to(device)
    pyg = PNAConv(width, width, AGGREGATORS, SCALERS, deg=deg,
                  towers=HEADS, divide_input=True).to(device)

    def run(conv):
        def step():
            conv(x, edge_index).sum().backward()
        return step

    return with_composed({"ours": run(ours), "pyg_pnaconv": run(pyg)},
                         device)


def with_composed(contenders, device: str):
    """On CUDA, also ours without the one-pass Triton aggregation (the
    CSR products and the gathered max / min it replaces), same run."""
    if not device.startswith("cuda"):
        return contenders
    from tgnn_transformers.functional import aggregate

    def composed():
        available = aggregate.triton_aggregate_available
        aggregate.triton_aggregate_available = lambda value: False
        try:
            contenders["ours"]()
        finally:
            aggregate.triton_aggregate_available = available

    return {**contenders, "ours_composed": composed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", default="aggregate",
                        help="results file name under results/")
    parser.add_argument("--note", default="",
                        help="free text stored with the results, e.g. what "
                             "else ran on the machine")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    workloads = {"complete 16x120": complete_graphs(),
                 "power-law 1M": power_law_graph(1_000_000)}
    rows = []
    for name, (num_nodes, edge_index) in workloads.items():
        for group, build in (("max+min", extremes_contenders),
                             ("pna layer", pna_contenders)):
            contenders = build(num_nodes, edge_index, args.device)
            timings = {label: time_it(fn, repeats=args.repeats,
                                      device=args.device)["median_s"]
                       for label, fn in contenders.items()}
            for label, seconds in timings.items():
                row = dict(workload=name, edges=edge_index.size(1),
                           op=group, contender=label, median_s=seconds,
                           ratio_to_ours=seconds / timings["ours"])
                rows.append(row)
                print(f"{name:16s} {group:9s} {label:21s} "
                      f"{seconds * 1e3:8.1f} ms  x{row['ratio_to_ours']:.2f}",
                      flush=True)
    name = args.name if args.device == "cpu" else f"{args.name}_cuda"
    path = write_result(name, {"machine": machine(), "device": args.device,
                               "note": args.note,
                               "repeats": args.repeats, "rows": rows})
    print("wrote", path)


if __name__ == "__main__":
    main()
