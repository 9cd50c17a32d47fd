"""Attention weights as graphs: the strongest edges, heads and layers
combined, attention rollout, and export to networkx, PyG and CSV."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch
from torch import Tensor
from torch_geometric.data import Data

from ..functional import sparsify_attention
from ..functional._checks import check_choice
from .capture import AttentionRecord

HEAD_REDUCTIONS = ("mean", "max", "sum")


def combine_heads(alpha: Tensor, reduce: str = "mean") -> Tensor:
    """``[E, H]`` -> ``[E]`` by ``"mean"``, ``"max"`` or ``"sum"``."""
    check_choice("reduce", reduce, HEAD_REDUCTIONS)
    if alpha.dim() == 1:
        return alpha
    if reduce == "max":
        return alpha.max(dim=1).values
    return alpha.mean(dim=1) if reduce == "mean" else alpha.sum(dim=1)


def top_edges(record: AttentionRecord, k: int) -> AttentionRecord:
    """Per head, the ``k`` strongest incoming edges of every node (others
    set to 0; edges left with no weight in any head removed), by
    :func:`~tgnn_transformers.functional.sparsify_attention`, the function
    the Sparse GIN adapter sparsifies with."""
    alpha, edge_index, _ = sparsify_attention(record.alpha,
                                              record.edge_index, top_k=k)
    return AttentionRecord(record.layer, edge_index, alpha,
                           record.num_nodes)


def strongest_edges(record: AttentionRecord, k: int,
                    reduce: str = "mean") -> List[tuple]:
    """The ``k`` strongest edges of the layer with heads combined by
    ``reduce``, as ``(source, target, weight)``, strongest first."""
    weight = combine_heads(record.alpha, reduce)
    k = min(k, weight.numel())
    values, order = weight.topk(k)
    edges = record.edge_index[:, order]
    return [(int(j), int(i), float(w))
            for j, i, w in zip(edges[0], edges[1], values)]


def _dense(record: AttentionRecord, reduce: str) -> Tensor:
    """``[N, N]`` matrix ``A[i, j]`` = head-combined weight of ``j -> i``."""
    n = record.num_nodes
    matrix = torch.zeros(n, n, dtype=record.alpha.dtype)
    matrix.index_put_((record.edge_index[1], record.edge_index[0]),
                      combine_heads(record.alpha, reduce), accumulate=True)
    return matrix


def attention_rollout(records: Sequence[AttentionRecord],
                      reduce: str = "mean",
                      residual: float = 0.5) -> Tensor:
    r"""Attention rollout (Abnar & Zuidema, 2020) over the layers:

    .. math::
        \tilde A_l = \mathrm{rownorm}\big(r I + (1 - r) A_l\big), \qquad
        R = \tilde A_L \cdots \tilde A_1

    with :math:`A_l[i, j]` the head-combined weight of :math:`j \to i` in
    layer :math:`l` and :math:`r` the ``residual`` share.  ``R[i, j]`` is
    how much of node ``j``'s input reaches node ``i``'s output.  Dense
    ``[N, N]``: for sentences and small graphs.
    """
    if not records:
        raise ValueError("records is empty: capture a forward pass first")
    n = records[0].num_nodes
    if any(r.num_nodes != n for r in records):
        raise ValueError("all records must have the same number of nodes")
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual must be in [0, 1], got {residual}")
    rollout = torch.eye(n, dtype=records[0].alpha.dtype)
    for record in records:
        layer = residual * torch.eye(n) + (1 - residual) * _dense(record,
                                                                  reduce)
        layer = layer / layer.sum(dim=1, keepdim=True).clamp_min(1e-12)
        rollout = layer @ rollout
    return rollout


def to_data(record: AttentionRecord) -> Data:
    """A PyG ``Data`` with the attention edges and ``edge_attr = alpha``."""
    return Data(edge_index=record.edge_index, edge_attr=record.alpha,
                num_nodes=record.num_nodes)


def to_networkx(record: AttentionRecord, reduce: Optional[str] = "mean"):
    """A ``networkx.DiGraph`` with edges ``j -> i`` carrying ``weight``
    (heads combined by ``reduce``) and ``head_<h>`` attributes."""
    import networkx as nx
    graph = nx.DiGraph(layer=record.layer)
    graph.add_nodes_from(range(record.num_nodes))
    weight = combine_heads(record.alpha, reduce or "mean")
    for e, (j, i) in enumerate(record.edge_index.t().tolist()):
        heads = {f"head_{h}": float(record.alpha[e, h])
                 for h in range(record.heads)}
        graph.add_edge(j, i, weight=float(weight[e]), **heads)
    return graph


def to_csv(records: Union[AttentionRecord, Sequence[AttentionRecord]],
           path: Union[str, Path]) -> Path:
    """One row per layer, edge and head: ``layer, call, source, target,
    head, weight``."""
    if isinstance(records, AttentionRecord):
        records = [records]
    path = Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["layer", "call", "source", "target", "head",
                         "weight"])
        for call, record in enumerate(records):
            edges = record.edge_index.t().tolist()
            for e, (j, i) in enumerate(edges):
                for h in range(record.heads):
                    writer.writerow([record.layer, call, j, i, h,
                                     float(record.alpha[e, h])])
    return path


__all__ = ["combine_heads", "top_edges", "strongest_edges",
           "attention_rollout", "to_data", "to_networkx", "to_csv"]
