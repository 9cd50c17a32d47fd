"""Recording every attention layer's weights on a forward pass.

:func:`capture_attention` registers PyG's own message-passing hooks (the
ones its explain tools use) on every attention conv of a model: a
``propagate`` pre-hook reads the edges, a ``message`` hook the per-edge,
per-head weights.  While hooked, a conv runs its attention through
``propagate``, which gives the same outputs as the fused kernel; the model's
code is not changed and the hooks are removed on exit.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, List

import torch
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing


@dataclass
class AttentionRecord:
    """One attention layer's weights on one forward pass."""
    layer: str
    """the conv's name in the model (``named_modules``)"""
    edge_index: Tensor
    """``[2, E]`` the edges ``j -> i`` the weights are on"""
    alpha: Tensor
    """``[E, H]`` weights (for GIN sparsification: dropped edges are 0)"""
    num_nodes: int
    """number of target nodes"""

    @property
    def heads(self) -> int:
        return self.alpha.size(1)

    def per_graph(self, batch: Tensor) -> List["AttentionRecord"]:
        """The record split by the graphs of a PyG batch vector ``batch``
        (``[N]``, sorted): node and edge indices local to each graph."""
        if batch.dim() != 1 or batch.numel() != self.num_nodes:
            raise ValueError(f"batch must have shape [{self.num_nodes}], "
                             f"got {list(batch.shape)}")
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        counts = torch.bincount(batch, minlength=num_graphs)
        ptr = torch.zeros(num_graphs + 1, dtype=torch.long)
        ptr[1:] = counts.cumsum(0)
        graph_of_edge = batch[self.edge_index[1]]
        records = []
        for g in range(num_graphs):
            keep = graph_of_edge == g
            records.append(AttentionRecord(
                self.layer, self.edge_index[:, keep] - ptr[g],
                self.alpha[keep], int(counts[g])))
        return records


def attention_layers(model: torch.nn.Module):
    """``(name, conv)`` of every attention conv of the package in
    ``model`` (the three convs, also inside ``GraphTransformer``)."""
    from ..nn import ATTENTION_CONVS
    classes = tuple(ATTENTION_CONVS.values())
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, classes)]


@contextlib.contextmanager
def capture_attention(model: torch.nn.Module,
                      detach: bool = True) -> Iterator[List[AttentionRecord]]:
    """Records each attention layer's ``(edge_index, alpha)`` while the
    ``with`` block runs forward passes; yields the list the records are
    appended to, in call order (one per layer call).

    Example::

        with capture_attention(model) as records:
            model(x, edge_index)
        records[0].alpha          # [E, H] of the first layer
    """
    layers = attention_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no attention conv of "
                         "this package to capture")
    records: List[AttentionRecord] = []
    handles = []
    for name, conv in layers:
        pending: dict = {}

        def before(module: MessagePassing, inputs, pending=pending):
            edge_index, size, _ = inputs
            pending["edge_index"] = edge_index
            pending["num_nodes"] = (size[1] if size is not None and
                                    size[1] is not None else
                                    int(edge_index.max()) + 1)

        def after(module: MessagePassing, inputs, alpha: Tensor, name=name,
                  pending=pending):
            records.append(AttentionRecord(
                name, pending.pop("edge_index"),
                alpha.detach() if detach else alpha,
                int(pending.pop("num_nodes"))))

        handles.append(conv.register_propagate_forward_pre_hook(before))
        handles.append(conv.register_message_forward_hook(after))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


__all__ = ["AttentionRecord", "capture_attention", "attention_layers"]
