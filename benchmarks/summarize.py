"""Turns ``benchmarks/results/*.json`` into ``results/summary.md`` (tables
with ratios) and plots."""
from __future__ import annotations

import json
from pathlib import Path

from common import RESULTS

OURS_SPARSE = "tgnn MultiHeadAttentionConv"


def _load(name):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _ms(row, key="forward_backward"):
    return 1000 * row[key]["median_s"]


def _mib(value):
    return "–" if value is None else f"{value / 2**20:.0f}"


def machine_line(machine):
    extras = ", ".join(f"{k} {machine.get(k) or 'absent'}"
                       for k in ("torch_scatter", "torch_sparse"))
    device = machine.get("cuda_device") or f"{machine['cpus']} CPU cores"
    return (f"{device}, {machine['platform']}, Python {machine['python']}, "
            f"torch {machine['torch']}, PyG {machine['torch_geometric']}, "
            f"{extras}, {machine['torch_threads']} torch threads")


def sparse_section(data, plots):
    lines = ["## Sparse graphs (in 128, 4 heads x 32)", "",
             machine_line(data["machine"]), "",
             "| graph | edges | layer | fwd ms | fwd+bwd ms | peak MiB | "
             "time vs TransformerConv | memory vs TransformerConv |",
             "|---|---|---|---|---|---|---|---|"]
    rows = [r for r in data["rows"] if "layer" in r]
    graphs = sorted({r["graph"] for r in rows}, key=lambda g: (
        g != "cornell5", next(r.get("num_edges", 0) for r in rows
                              if r["graph"] == g)))
    for g in graphs:
        group = {r["layer"]: r for r in rows if r["graph"] == g}
        ref = group.get("PyG TransformerConv")
        for name, r in group.items():
            if "skipped" in r:
                lines.append(f"| {g} | | {name} | skipped: {r['skipped']} "
                             "| | | | |")
                continue
            fb = _ms(r) if "forward_backward" in r else None
            t_ratio = m_ratio = ""
            if ref and "forward_backward" in ref and fb is not None:
                t_ratio = f"{fb / _ms(ref):.2f}x"
            if ref and r.get("peak_memory_bytes") and ref.get(
                    "peak_memory_bytes"):
                ratio = r["peak_memory_bytes"] / ref["peak_memory_bytes"]
                m_ratio = f"{ratio:.3f}x"
            lines.append(
                f"| {g} | {r.get('num_edges', '')} | {name} | "
                f"{_ms(r, 'forward'):.1f} | "
                f"{'' if fb is None else f'{fb:.1f}'} | "
                f"{_mib(r.get('peak_memory_bytes')) if fb else ''} | "
                f"{t_ratio} | {m_ratio} |")
    diffs = [r for r in data["rows"] if "max_abs_diff_vs_TransformerConv" in r]
    if diffs:
        lines += ["", "Same outputs: max |ours - TransformerConv| = " +
                  ", ".join(f"{r['max_abs_diff_vs_TransformerConv']:.1e} "
                            f"({r['graph']})" for r in diffs) + "."]
    if plots:
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for layer in sorted({r["layer"] for r in rows}):
            pts = sorted((r["num_edges"], _ms(r, "forward_backward"
                                                if "forward_backward" in r
                                                else "forward"))
                         for r in rows if r["layer"] == layer
                         and r["graph"].startswith("powerlaw")
                         and "skipped" not in r)
            if pts:
                ax.loglog(*zip(*pts), marker="o", label=layer)
        ax.set(xlabel="edges", ylabel="ms (fwd+bwd; SpMM fwd)",
               title="power-law graphs")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(RESULTS / "sparse.png", dpi=110)
        lines += ["", "![sparse](sparse.png)"]
    return lines


def dense_section(data):
    lines = ["## Sentence batches as complete graphs (d = 256, 8 heads, "
             "fwd+bwd)", "", machine_line(data["machine"]), "",
             "| B x L | ragged | graph API ms | raw SDPA ms | ratio | "
             "conv ms | nn.MultiheadAttention ms | ratio | TransformerConv "
             "ms | conv vs TransformerConv |", "|---|---|---|---|---|---|---"
             "|---|---|---|"]
    keys = sorted({(r["batch"], r["length"], r["ragged"])
                   for r in data["rows"]})
    for b, l, ragged in keys:
        group = {r["name"]: r for r in data["rows"]
                 if (r["batch"], r["length"], r["ragged"]) == (b, l, ragged)}

        def ms(name):
            r = group.get(name)
            return None if r is None or "skipped" in r else _ms(r)

        ga, sd = ms("tgnn edge_attention (graph API)"), ms("raw SDPA (padded)")
        cv, mh = ms("tgnn MultiHeadAttentionConv"), ms("nn.MultiheadAttention")
        tc = ms("PyG TransformerConv")
        fmt = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
        lines.append(
            f"| {b} x {l} | {ragged} | {fmt(ga)} | {fmt(sd)} | "
            f"{ga / sd:.2f}x | {fmt(cv)} | {fmt(mh)} | {cv / mh:.2f}x | "
            f"{fmt(tc)} | {'–' if tc is None else f'{cv / tc:.3f}x'} |")
    return lines


def long_section(data, plots):
    lines = ["## Long sequences (d = 64, 4 heads, fwd+bwd)", "",
             machine_line(data["machine"]), "",
             "| L | pattern | edges | ms | peak MiB |", "|---|---|---|---|---|"]
    for r in data["rows"]:
        lines.append(f"| {r['length']} | {r['pattern']} | {r['num_edges']} |"
                     f" {_ms(r):.1f} | {_mib(r['peak_memory_bytes'])} |")
    if plots:
        import matplotlib.pyplot as plt
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        for pattern in sorted({r["pattern"] for r in data["rows"]}):
            rows = [r for r in data["rows"] if r["pattern"] == pattern]
            a.loglog([r["length"] for r in rows], [_ms(r) for r in rows],
                     marker="o", label=pattern)
            b.loglog([r["length"] for r in rows],
                     [(r["peak_memory_bytes"] or 1) / 2**20 for r in rows],
                     marker="o", label=pattern)
        a.set(xlabel="L", ylabel="ms", title="time")
        b.set(xlabel="L", ylabel="peak MiB", title="memory")
        a.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(RESULTS / "long.png", dpi=110)
        lines += ["", "![long](long.png)"]
    return lines


def e2e_section(data):
    lines = ["## End to end: one training epoch of the node classifier", "",
             machine_line(data["machine"]), "",
             "Both models get the same pipeline, including sparse CSR input "
             "features; the last columns run `mha` with dense features.", "",
             "| data set | MultiHeadAttentionConv ms | TransformerConv ms | "
             "ratio | mha, dense features ms | sparse / dense |",
             "|---|---|---|---|---|---|"]
    for ds in sorted({r["dataset"] for r in data["rows"]}):
        g = {r["model"]: 1000 * r["epoch"]["median_s"]
             for r in data["rows"] if r["dataset"] == ds}
        dense = g.get("mha, dense features")
        extra = (f" {dense:.1f} | {g['mha'] / dense:.2f}x |" if dense
                 else " – | – |")
        lines.append(f"| {ds} | {g['mha']:.1f} | {g['transformerconv']:.1f}"
                     f" | {g['mha'] / g['transformerconv']:.2f}x |" + extra)
    return lines


def main():
    try:
        import matplotlib
        matplotlib.use("Agg")
        plots = True
    except ImportError:
        plots = False
    lines = ["# Benchmark results", "",
             "Written by `python benchmarks/run_all.py` (median of 5 "
             "repeats after warm-up; ratios from the same process run; "
             "peak memory = resident-set increase of a fresh process running "
             "the workload once).", ""]
    for name, fn in (("sparse", lambda d: sparse_section(d, plots)),
                     ("dense", dense_section),
                     ("long", lambda d: long_section(d, plots)),
                     ("e2e", e2e_section)):
        for suffix in ("", "_cuda"):
            data = _load(name + suffix)
            if data is not None:
                lines += fn(data) + [""]
    (RESULTS / "summary.md").write_text("\n".join(lines))
    print("wrote", RESULTS / "summary.md")


if __name__ == "__main__":
    main()
