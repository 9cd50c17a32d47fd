"""Pictures of attention and training: a sentence's attention per head,
the attention graph around a node, training curves (matplotlib, Agg)."""
from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from .capture import AttentionRecord
from .graphs import _dense, combine_heads

PathLike = Union[str, Path]


def _pyplot():
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise ImportError("plots need matplotlib: pip install "
                          "'tgnn_transformers[plot]'") from exc
    # No matplotlib.use(): headless it is Agg already, and a notebook's
    # inline backend must stay.
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Optional[PathLike]):
    if path is not None:
        path = Path(path)
        tmp = path.with_name(path.stem + ".tmp" + path.suffix)
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        tmp.replace(path)
    return fig


def plot_attention_heatmap(record: AttentionRecord,
                           tokens: Optional[Sequence[str]] = None,
                           path: Optional[PathLike] = None,
                           heads: Optional[Sequence[int]] = None):
    """One panel per head: ``A[i, j]`` (query ``i`` down, key ``j``
    across) of one sentence's record, tokens on the axes."""
    plt = _pyplot()
    heads = list(range(record.heads)) if heads is None else list(heads)
    n = record.num_nodes
    if tokens is not None and len(tokens) != n:
        raise ValueError(f"tokens has {len(tokens)} entries for {n} nodes")
    cols = min(4, len(heads))
    rows = math.ceil(len(heads) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows),
                             squeeze=False)
    for ax in axes.flat[len(heads):]:
        ax.axis("off")
    for ax, h in zip(axes.flat, heads):
        single = AttentionRecord(record.layer, record.edge_index,
                                 record.alpha[:, h], n)
        ax.imshow(_dense(single, "mean").numpy(), cmap="viridis",
                  vmin=0.0)
        ax.set_title(f"{record.layer} head {h}", fontsize=8)
        if tokens is not None:
            ax.set_xticks(range(n), tokens, rotation=90, fontsize=6)
            ax.set_yticks(range(n), tokens, fontsize=6)
        else:
            ax.set_xlabel("key j", fontsize=7)
            ax.set_ylabel("query i", fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_neighbourhood(record: AttentionRecord, node: int,
                       path: Optional[PathLike] = None,
                       reduce: str = "mean",
                       labels: Optional[torch.Tensor] = None):
    """The attention graph around ``node``: its in-neighbours, edge width
    by the head-combined weight of ``j -> node``."""
    plt = _pyplot()
    import networkx as nx
    into = record.edge_index[1] == node
    sources = record.edge_index[0, into].tolist()
    weights = combine_heads(record.alpha[into], reduce).tolist()
    graph = nx.DiGraph()
    graph.add_node(node)
    for j, w in zip(sources, weights):
        graph.add_edge(j, node, weight=w)
    layout = nx.spring_layout(graph, seed=0)
    fig, ax = plt.subplots(figsize=(5, 5))
    colors = {"node_color": "tab:blue"}
    if labels is not None:
        colors = {"node_color": [int(labels[v]) for v in graph.nodes],
                  "cmap": "tab10"}
    nx.draw_networkx_nodes(graph, layout, ax=ax, node_size=220, **colors)
    nx.draw_networkx_labels(graph, layout, ax=ax, font_size=7)
    edge_weights = [graph[j][i]["weight"] for j, i in graph.edges]
    nx.draw_networkx_edges(
        graph, layout, ax=ax, arrows=True, edge_color=edge_weights,
        edge_cmap=plt.cm.viridis, edge_vmin=0.0, edge_vmax=1.0,
        width=[0.5 + 8 * w for w in edge_weights])
    if edge_weights:
        mappable = plt.cm.ScalarMappable(cmap=plt.cm.viridis,
                                         norm=plt.Normalize(0.0, 1.0))
        fig.colorbar(mappable, ax=ax, shrink=0.7, label="attention weight")
    ax.set_title(f"{record.layer}: attention into node {node}")
    ax.axis("off")
    return _save(fig, path)


def read_history(path: PathLike) -> List[Dict[str, Any]]:
    """Rows of a run's ``history.csv`` with numbers parsed."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value) if value != "" else math.nan
                except ValueError:
                    parsed[key] = value
            rows.append(parsed)
    return rows


def plot_training_curves(history: List[Dict[str, Any]],
                         path: Optional[PathLike] = None,
                         metric: str = "accuracy",
                         higher_is_better: bool = True):
    """Loss and train/validation/test metric per epoch (per step, ``iter``,
    when every row has one: the language model's evaluations).  One run:
    its lines and its best epoch marked (best in the metric's direction);
    several (seeds, folds): the mean with a band of ± one standard
    deviation and the mean best epoch."""
    plt = _pyplot()
    runs: Dict[str, List[Dict[str, Any]]] = {}
    for row in history:
        runs.setdefault(str(row["run"]), []).append(row)
    x = "iter" if history and all("iter" in r for r in history) else "epoch"
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    series = (("train_loss", ax_loss, "train loss", "-"),
              ("val_loss", ax_loss, "val loss", "--"),
              ("train", ax_metric, f"train {metric}", "-."),
              ("val", ax_metric, f"val {metric}", "-"),
              ("test", ax_metric, f"test {metric}", ":"))
    sign = 1.0 if higher_is_better else -1.0
    best_epochs = []
    for rows in runs.values():
        best = max(rows, key=lambda r: (sign * r["val"], -r["val_loss"]))
        best_epochs.append(best[x])
    for key, ax, label, style in series:
        by_epoch: Dict[float, List[float]] = {}
        for rows in runs.values():
            for r in rows:
                if not math.isnan(r.get(key, math.nan)):
                    by_epoch.setdefault(r[x], []).append(r[key])
        if not by_epoch:
            continue
        epochs = sorted(by_epoch)
        mean = [statistics.fmean(by_epoch[e]) for e in epochs]
        line, = ax.plot(epochs, mean, ls=style, lw=1.0,
                        label=label + (" (mean)" if len(runs) > 1 else ""))
        if len(runs) > 1:
            std = [statistics.pstdev(by_epoch[e]) for e in epochs]
            ax.fill_between(epochs, [m - s for m, s in zip(mean, std)],
                            [m + s for m, s in zip(mean, std)],
                            color=line.get_color(), alpha=0.2, lw=0)
    best = statistics.fmean(best_epochs)
    for ax in (ax_loss, ax_metric):
        ax.axvline(best, color="grey", lw=0.8, ls="-.",
                   label="best epoch" + (" (mean)" if len(runs) > 1
                                          else ""))
        ax.legend(fontsize=7)
    ax_loss.set(xlabel=x, ylabel="loss", title="loss")
    ax_metric.set(xlabel=x, ylabel=metric,
                  title=f"{metric} ({len(runs)} run"
                        f"{'s' if len(runs) > 1 else ''})")
    fig.tight_layout()
    return _save(fig, path)


__all__ = ["plot_attention_heatmap", "plot_neighbourhood",
           "plot_training_curves", "read_history"]
