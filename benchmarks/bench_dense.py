"""Sentence batches as complete token graphs: the graph API against
``nn.MultiheadAttention``, raw ``scaled_dot_product_attention`` and PyG's
``TransformerConv`` (forward + backward).

Two comparisons per batch shape (B x L, d = 256, 8 heads):

* kernel: ``edge_attention`` on ``[N, H, C]`` q/k/v and the batch's
  ``edge_index`` against raw SDPA on the same tensors already padded;
* layer: ``MultiHeadAttentionConv.from_torch(mha)`` against ``mha`` itself
  (padded input with key padding mask) and against ``TransformerConv``.

Both run twice: on one graph (its recognition and layout cached, as the
layers of one model share them) and on a new ``edge_index`` tensor every
call with the same values (a data loader's next batch: the graph is
recognised again, the layout is found by its lengths).  The contenders of
a shape run in alternating rounds in one process (``--threads``, default
1); the results keep wall-clock and CPU-time medians and the load average.
TransformerConv, ~100x slower, is timed apart with ``--pyg-repeats``.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch_geometric.nn import TransformerConv

from common import (load_average, machine, peak_memory, run_probe_if_asked,
                    time_interleaved, time_it, write_result)
from tgnn_transformers import MultiHeadAttentionConv
from tgnn_transformers.functional import complete_edge_index, edge_attention

D, HEADS = 256, 8
SHAPES = [(8, 64), (32, 128), (64, 256), (64, 512)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
GRAPH_API = "tgnn edge_attention (graph API)"
NEW_GRAPH = " (new graph each call)"
PYG = "PyG TransformerConv"


def lengths_for(batch: int, length: int, ragged: bool) -> torch.Tensor:
    if not ragged:
        return torch.full((batch, ), length)
    gen = torch.Generator().manual_seed(0)
    return torch.randint(length // 2, length + 1, (batch, ), generator=gen)


def workloads(batch: int, length: int, ragged: bool, device: str,
              dtype: str = "fp32", backends=("auto", )):
    dtype = DTYPES[dtype]
    lengths = lengths_for(batch, length, ragged).to(device)
    n = int(lengths.sum())
    graph_batch = torch.repeat_interleave(
        torch.arange(batch, device=device), lengths)
    edge_index = complete_edge_index(lengths)
    c = D // HEADS
    q, k, v = (torch.randn(n, HEADS, c, device=device, dtype=dtype,
                           requires_grad=True) for _ in range(3))
    max_len = int(lengths.max())
    pad = torch.arange(max_len, device=device)[None] >= lengths[:, None]
    qp, kp, vp = (torch.randn(batch, HEADS, max_len, c, device=device,
                              dtype=dtype, requires_grad=True)
                  for _ in range(3))
    mask = ~pad[:, None, None, :] if ragged else None
    x = torch.randn(n, D, device=device, dtype=dtype, requires_grad=True)
    xp = torch.randn(batch, max_len, D, device=device, dtype=dtype,
                     requires_grad=True)
    mha = torch.nn.MultiheadAttention(D, HEADS, batch_first=True).to(
        device, dtype)
    conv = MultiHeadAttentionConv.from_torch(mha)
    pyg = TransformerConv(D, c, heads=HEADS, root_weight=False).to(
        device, dtype)

    def graph_kernel(backend, graph=None):
        return lambda: edge_attention(
            q, k, v, edge_index if graph is None else graph,
            batch=graph_batch, backend=backend).out.float().sum().backward()

    def new_graph():
        # equal values, a new tensor: nothing cached on it
        return edge_index.clone()

    def raw_sdpa():
        F.scaled_dot_product_attention(qp, kp, vp,
                                       attn_mask=mask).sum().backward()

    def graph_layer(graph=None):
        conv(x, edge_index if graph is None else graph,
             batch=graph_batch).sum().backward()

    def torch_mha():
        mha(xp, xp, xp, key_padding_mask=pad if ragged else None,
            need_weights=False)[0].sum().backward()

    def pyg_transformer():
        pyg(x, edge_index).sum().backward()

    kernels = {GRAPH_API if b == "auto" else f"tgnn edge_attention ({b})":
               graph_kernel(b) for b in backends}
    return {**kernels,
            GRAPH_API + NEW_GRAPH: (new_graph, lambda g: graph_kernel(
                "auto", g)()),
            "raw SDPA (padded)": raw_sdpa,
            "tgnn MultiHeadAttentionConv": graph_layer,
            "tgnn MultiHeadAttentionConv" + NEW_GRAPH: (new_graph,
                                                        graph_layer),
            "nn.MultiheadAttention": torch_mha,
            PYG: pyg_transformer}, edge_index.size(1)


def build_probe(spec):
    fns, _ = workloads(spec["batch"], spec["length"], spec["ragged"],
                       spec.get("device", "cpu"), spec.get("dtype", "fp32"),
                       spec.get("backends", ["auto"]))
    fn = fns[spec["name"]]
    if isinstance(fn, tuple):
        setup, run = fn
        fn = lambda: run(setup())  # noqa: E731
    fn()  # warm-up: caches outside the measured peak
    return fn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pyg-repeats", type=int, default=3,
                        help="repeats of TransformerConv (timed apart)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on the CPU")
    parser.add_argument("--max-pyg-edges", type=int, default=3_000_000,
                        help="skip TransformerConv above this many edges")
    parser.add_argument("--shapes", nargs="+", default=None,
                        help="batch shapes as BxL (default: "
                        + " ".join(f"{b}x{l}" for b, l in SHAPES) + ")")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                        help="inputs and weights of every layer")
    parser.add_argument("--backends", nargs="+", default=["auto"],
                        choices=["auto", "sparse", "dense", "triton", "flex"],
                        help="edge_attention backends of the kernel rows")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory probes")
    parser.add_argument("--name", default="dense",
                        help="results file name under results/ (a device "
                        "and dtype suffix is added)")
    parser.add_argument("--note", default="",
                        help="free text stored with the results")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    shapes = SHAPES if args.shapes is None else [
        tuple(int(v) for v in s.lower().split("x")) for s in args.shapes]
    extra = dict(dtype=args.dtype, backends=args.backends)
    rows = []
    loads = [load_average()]
    for batch, length in shapes:
        for ragged in (False, True):
            fns, num_edges = workloads(batch, length, ragged, args.device,
                                       **extra)
            print(f"B={batch} L={length} ragged={ragged}: {num_edges} edges",
                  flush=True)
            pyg = fns.pop(PYG)
            timings = time_interleaved(fns, args.repeats, device=args.device)
            if num_edges > args.max_pyg_edges:
                timings[PYG] = None
            else:
                timings[PYG] = time_it(pyg, args.pyg_repeats,
                                       device=args.device)
            for name, timing in timings.items():
                row = {"batch": batch, "length": length, "ragged": ragged,
                       "name": name}
                if timing is None:
                    rows.append({**row, "skipped": "too many edges"})
                    continue
                memory = None if args.no_memory else peak_memory(__file__, {
                    "batch": batch, "length": length, "ragged": ragged,
                    "name": name, "device": args.device, **extra})
                rows.append({**row, "dtype": args.dtype,
                             "num_edges": num_edges,
                             "forward_backward": timing,
                             "peak_memory_bytes": memory})
                cpu = timing.get("cpu_median_s")
                print(f"  {name:56s} {1000 * timing['median_s']:8.2f} ms"
                      + ("" if cpu is None else f"  cpu {1000 * cpu:8.2f} ms")
                      + f"  mem {(memory or 0) / 2**20:.0f} MiB", flush=True)
            loads.append(load_average())
    suffix = "" if args.device == "cpu" else "_" + args.device.split(":")[0]
    suffix += "" if args.dtype == "fp32" else "_" + args.dtype
    print("wrote", write_result(f"{args.name}{suffix}", {
        "machine": machine(), "d_model": D, "heads": HEADS,
        "repeats": args.repeats, "note": args.note,
        "timing": "contenders of a shape in alternating rounds; "
                  "median_s wall clock, cpu_median_s process CPU time",
        "load_average": loads, "rows": rows}))


if __name__ == "__main__":
    run_probe_if_asked(build_probe)
    main()
