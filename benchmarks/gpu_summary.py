"""Turns the GPU results (``results/*_cuda*.json``, written by
``gpu_suite.sh``) into ``results/gpu.md``: the GPU issue's targets, each
with the measured ratio against its anchor from the same run."""
from __future__ import annotations

import json

from common import RESULTS


def _load(name):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _ms(row):
    return 1000 * row["forward_backward"]["median_s"]


def _sparse_rows(data):
    return {(r["graph"], r["layer"]): r for r in data["rows"]
            if "forward_backward" in r}


TRITON = "tgnn MultiHeadAttentionConv (triton)"
SPARSE = "tgnn MultiHeadAttentionConv"
PYG = "PyG TransformerConv"


def kernel_line(data):
    """The Triton kernel's settings a results file was written with."""
    settings = data["machine"].get("triton_kernel")
    if settings is None:
        return ("Triton kernel settings not recorded in this file (written "
                "before they were; docs/guides/gpu.md says what ran).")
    return "Triton kernel settings: " + ", ".join(
        f"{k} {v}" for k, v in settings.items()) + "."


def sparse_lines(fp32, bf16):
    lines = ["## Sparse graphs (in 128, 4 heads x 32, fwd+bwd)", "",
             "| graph | dtype | Triton kernel ms | sparse path ms | "
             "TransformerConv ms | Triton / TC time | Triton MiB | TC MiB "
             "| Triton / TC memory |", "|---|---|---|---|---|---|---|---|---|"]
    for dtype, data in (("fp32", fp32), ("bf16", bf16)):
        if data is None:
            continue
        rows = _sparse_rows(data)
        for graph in sorted({g for g, _ in rows}):
            ours, sparse, pyg = (rows.get((graph, k)) for k in (TRITON,
                                                                SPARSE, PYG))
            if ours is None or pyg is None or sparse is None:
                continue
            mem = ours["peak_memory_bytes"] / pyg["peak_memory_bytes"]
            lines.append(
                f"| {graph} | {dtype} | {_ms(ours):.1f} | {_ms(sparse):.1f} "
                f"| {_ms(pyg):.1f} | {_ms(ours) / _ms(pyg):.2f}x | "
                f"{ours['peak_memory_bytes'] / 2**20:.0f} | "
                f"{pyg['peak_memory_bytes'] / 2**20:.0f} | {mem:.3f}x |")
    if fp32 and bf16:
        key = ("powerlaw-1e7", TRITON)
        a, b = _sparse_rows(fp32).get(key), _sparse_rows(bf16).get(key)
        if a and b:
            lines += ["", f"bf16 against fp32 on the 10M-edge graph (Triton "
                      f"layer): {_ms(a) / _ms(b):.2f}x faster."]
    if bf16:
        lines += ["", "PyG in bf16 without torch_scatter is slower than in "
                  "fp32, so the bf16 rows' ratios to TransformerConv flatter "
                  "the kernel; compare the fp32 rows."]
    for data in (fp32, bf16):
        if data is not None:
            lines += ["", kernel_line(data)]
    return lines


def long_lines(*datas):
    lines = ["## Window graph (w = 128, 8 heads x 32, fwd+bwd)", "",
             "| L | dtype | backend | ms | MiB | vs raw FlexAttention |",
             "|---|---|---|---|---|---|"]
    for data in datas:
        if data is None:
            continue
        rows = data["rows"]
        for length in sorted({r["length"] for r in rows}):
            group = [r for r in rows if r["length"] == length]
            ref = next((r for r in group if "raw" in r["pattern"]), None)
            for r in group:
                name = r.get("backend") or r["pattern"]
                if "forward_backward" not in r:
                    continue
                ratio = f"{_ms(r) / _ms(ref):.2f}x" if ref else ""
                lines.append(f"| {length} | {r['dtype']} | {name} | "
                             f"{_ms(r):.2f} | "
                             f"{(r['peak_memory_bytes'] or 0) / 2**20:.0f} "
                             f"| {ratio} |")
    return lines


def dense_lines(*datas):
    lines = ["## Complete token batches (d = 256, 8 heads, fwd+bwd)", "",
             "| B x L | ragged | dtype | graph API ms | raw SDPA ms | ratio "
             "| Triton kernel ms |", "|---|---|---|---|---|---|---|"]
    for data in datas:
        if data is None:
            continue
        keyed = {}
        for r in data["rows"]:
            keyed.setdefault((r["batch"], r["length"], r["ragged"]),
                             {})[r["name"]] = r
        for (b, length, ragged), group in keyed.items():
            api = group.get("tgnn edge_attention (graph API)")
            sdpa = group.get("raw SDPA (padded)")
            triton = group.get("tgnn edge_attention (triton)")
            if api is None or sdpa is None:
                continue
            lines.append(
                f"| {b} x {length} | {ragged} | {api.get('dtype', 'fp32')} "
                f"| {_ms(api):.2f} | {_ms(sdpa):.2f} | "
                f"{_ms(api) / _ms(sdpa):.2f}x | "
                f"{'' if triton is None else f'{_ms(triton):.2f}'} |")
    return lines


def aggregate_lines(data):
    if data is None:
        return []
    lines = ["## PNA-Attention's max/min aggregation (fwd+bwd)", "",
             "| workload | op | contender | ms | vs ours |",
             "|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['workload']} | {r['op']} | {r['contender']} | "
                     f"{1000 * r['median_s']:.1f} | "
                     f"{r['ratio_to_ours']:.2f}x |")
    return lines


def tuning_lines(data, note=""):
    if data is None:
        return []
    lines = [f"## Triton launch settings ({data.get('graph', 'powerlaw')}, "
             f"{data['num_edges']} edges, kernel only{note})", "",
             kernel_line(data) + " \"default\": the kernel's own warp "
             "rule at the time.", ""]
    lines += ["| backward | BLOCK_E | warps | fwd ms | fwd+bwd ms |",
              "|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r.get('backward', r['backend'])} | "
                     f"{r.get('block_e', '')} | {r.get('num_warps', '')} | "
                     f"{1000 * r['forward']['median_s']:.2f} | {_ms(r):.2f} |")
    return lines


def main():
    sparse = _load("sparse_cuda")
    device = (sparse or {}).get("machine", {})
    lines = ["# GPU results", "",
             f"{device.get('cuda_device', 'GPU')}, torch "
             f"{device.get('torch')}, CUDA {device.get('cuda')}, PyG "
             f"{device.get('torch_geometric')} (torch_scatter / torch_sparse "
             "absent). Written by `python benchmarks/gpu_summary.py` from the "
             "JSON files of `benchmarks/gpu_suite.sh` (median of 5 after a "
             "warm-up; peak memory = the rise of "
             "`torch.cuda.max_memory_allocated` over one fwd+bwd; every "
             "ratio from one process run).", ""]
    lines += sparse_lines(sparse, _load("sparse_cuda_bf16")) + [""]
    lines += long_lines(_load("long_cuda_w128"),
                        _load("long_cuda_bf16_w128")) + [""]
    lines += dense_lines(_load("dense_cuda"), _load("dense_cuda_bf16")) + [""]
    lines += aggregate_lines(_load("aggregate_cuda")) + [""]
    lines += tuning_lines(_load("triton_tuning_cuda_powerlaw_fp32")) + [""]
    lines += tuning_lines(_load("triton_tuning_cuda_window_fp32")) + [""]
    lines += tuning_lines(_load("triton_tuning_cuda_powerlaw_fp32_atomic"),
                          "; the first sweep, atomic backward only")
    (RESULTS / "gpu.md").write_text("\n".join(lines) + "\n")
    print("wrote", RESULTS / "gpu.md")


if __name__ == "__main__":
    main()
