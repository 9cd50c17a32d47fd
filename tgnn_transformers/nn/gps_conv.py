"""The GPS layer (GraphGPS) with any attention conv of the package."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..functional import complete_edge_index
from ..functional._checks import check_choice
from .graph_transformer import (ACTIVATIONS, ATTENTION_CONVS, FeedForward,
                                make_norm)

#: What the attention of a :class:`GPSConv` attends over.
ATTENTION_GRAPHS = ("complete", "local")


class GPSConv(torch.nn.Module):
    r"""The general, powerful, scalable graph transformer layer of
    `Rampášek et al. (NeurIPS 2022) <https://arxiv.org/abs/2205.12454>`_,
    with any attention conv of this package as its attention.

    A local message-passing conv and an attention conv run in parallel on
    the same input, each inside a residual connection and a norm; their sum
    goes through a feed-forward block:

    .. math::
        \mathbf{h}^{L} &= \mathrm{Norm}_1\big(\mathbf{x} + \mathrm{Drop}(
            \mathrm{MPNN}(\mathbf{x}, \mathcal{E}))\big) \\
        \mathbf{h}^{A} &= \mathrm{Norm}_2\big(\mathbf{x} + \mathrm{Drop}(
            \mathrm{Attn}(\mathbf{x}, \mathcal{E}_A))\big) \\
        \mathbf{h} &= \mathbf{h}^{L} + \mathbf{h}^{A}, \qquad
        \mathbf{x}' = \mathrm{Norm}_3\big(\mathbf{h} + \mathrm{Drop}(
            \mathbf{W}_2\, \mathrm{Drop}(\mathrm{act}(\mathbf{W}_1
            \mathbf{h})))\big)

    The attention graph :math:`\mathcal{E}_A` is the complete graph of each
    graph of the batch, self-loops included (``attention_graph=
    "complete"``, global attention, built from ``batch``), the input edges
    :math:`\mathcal{E}` (``"local"``, sparse attention), or any edge set
    given to :meth:`forward` as ``attention_edge_index`` (a token pattern of
    :mod:`tgnn_transformers.functional.patterns`, say).  On complete graphs
    the package's dense backend runs the attention as
    ``scaled_dot_product_attention`` per graph.

    PyG's :class:`~torch_geometric.nn.conv.GPSConv` is this layer with
    ``attention`` a :class:`torch.nn.MultiheadAttention` over the complete
    graphs: given the same parts (its ``attn`` as
    :meth:`MultiHeadAttentionConv.from_torch
    <tgnn_transformers.nn.MultiHeadAttentionConv.from_torch>`, its ``conv``,
    norms and MLP) the outputs are equal (``tests/test_gps_conv.py``).

    Args:
        channels: width :math:`d` of the input and output.
        conv: the local message-passing layer (``channels`` to
            ``channels``; a PyG conv or one of this package's), or ``None``
            for attention only.
        heads: attention heads of a named ``attention``.
        dropout: dropout of both branches and inside the feed-forward block.
        act: the feed-forward activation, a name of
            :data:`~tgnn_transformers.nn.graph_transformer.ACTIVATIONS`.
        norm: ``"batch"`` (PyG's BatchNorm over nodes, the GPS default),
            ``"layer"``, ``"rms"`` or ``None``.
        attention: a name of
            :data:`~tgnn_transformers.nn.ATTENTION_CONVS` (``"mha"``,
            ``"gin-attention"``, ``"pna-attention"``), built in the
            transformer form (output projection, no root weight), or a
            ready attention conv mapping ``channels`` to ``channels``.
        attention_kwargs: further arguments of a named attention conv.
        attention_graph: ``"complete"`` or ``"local"``, see above.
        attention_dropout: dropout on the attention weights of a named
            attention conv.
        ffn_multiplier: width of the feed-forward block relative to
            ``channels`` (2 in GPS); 0 leaves it out.
    """

    def __init__(self, channels: int, conv: Optional[torch.nn.Module],
                 heads: int = 1, dropout: float = 0.0, act: str = "relu",
                 norm: Optional[str] = "batch", *,
                 attention: Union[str, torch.nn.Module] = "mha",
                 attention_kwargs: Optional[dict] = None,
                 attention_graph: str = "complete",
                 attention_dropout: float = 0.0,
                 ffn_multiplier: float = 2.0):
        super().__init__()
        if channels % heads:
            raise ValueError(f"heads={heads} must divide channels="
                             f"{channels}")
        check_choice("act", act, ACTIVATIONS)
        check_choice("attention_graph", attention_graph, ATTENTION_GRAPHS)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if ffn_multiplier < 0:
            raise ValueError(f"ffn_multiplier must be >= 0, got "
                             f"{ffn_multiplier}")
        self.channels, self.heads, self.dropout = channels, heads, dropout
        self.attention_graph = attention_graph
        self.conv = conv
        if isinstance(attention, str):
            check_choice("attention", attention, ATTENTION_CONVS,
                         hint="or an attention conv module")
            kwargs = dict(heads=heads, dropout=attention_dropout,
                          root_weight=False, out_proj=True)
            kwargs.update(attention_kwargs or {})
            attention = ATTENTION_CONVS[attention](channels,
                                                   channels // heads,
                                                   **kwargs)
        elif attention_kwargs:
            raise ValueError("attention_kwargs apply to a named attention "
                             "conv, not to a given module")
        self.attention = attention
        self.ffn = None
        if ffn_multiplier > 0:
            self.ffn = FeedForward(channels,
                                   max(1, round(ffn_multiplier * channels)),
                                   act, dropout)
        self.norm1 = make_norm(norm, channels) if conv is not None else None
        self.norm2 = make_norm(norm, channels)
        self.norm3 = make_norm(norm, channels)
        # The complete attention graph of the last batch seen (node tasks
        # see one graph every epoch): (batch, its version, nodes, device,
        # edges).
        self._complete = None

    def reset_parameters(self) -> None:
        for module in (self.conv, self.attention, self.ffn, self.norm1,
                       self.norm2, self.norm3):
            if module is not None and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def complete_graph(self, num_nodes: int, batch: Optional[Tensor],
                       device: torch.device) -> Tensor:
        """The complete graph (self-loops included) of each graph of the
        batch: ``[2, sum(n_b^2)]`` edges; the last one built is kept while
        the same ``batch`` (or, without one, the same node count) comes."""
        cached = self._complete
        if cached is not None and cached[0] is batch and cached[2] == \
                num_nodes and cached[3] == device and (
                    batch is None or cached[1] == batch._version):
            return cached[4]
        if batch is None:
            lengths = torch.tensor([num_nodes], device=device)
        else:
            if batch.numel() != num_nodes:
                raise ValueError(f"batch must have one entry per node "
                                 f"({num_nodes}), got {batch.numel()}")
            if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
                raise ValueError("batch must be sorted (the nodes of each "
                                 "graph contiguous, as PyG batches them) to"
                                 " build the complete attention graphs")
            lengths = torch.bincount(batch)
        edges = complete_edge_index(lengths.to(device))
        self._complete = (batch, None if batch is None else batch._version,
                          num_nodes, device, edges)
        return edges

    @staticmethod
    def _norm(norm, x: Tensor) -> Tensor:
        return x if norm is None else norm(x)

    def forward(self, x: Tensor, edge_index: Tensor,
                batch: Optional[Tensor] = None, *,
                attention_edge_index: Optional[Tensor] = None,
                **kwargs) -> Tensor:
        """``kwargs`` (e.g. ``edge_attr``) go to the local conv, as in
        PyG's ``GPSConv``; ``attention_edge_index`` replaces the attention
        graph of ``attention_graph``."""
        branches = []
        if self.conv is not None:
            h = self.conv(x, edge_index, **kwargs)
            h = F.dropout(h, self.dropout, self.training)
            branches.append(self._norm(self.norm1, h + x))
        if attention_edge_index is None:
            attention_edge_index = edge_index \
                if self.attention_graph == "local" else \
                self.complete_graph(x.size(0), batch, x.device)
        h = self.attention(x, attention_edge_index, batch=batch)
        h = F.dropout(h, self.dropout, self.training)
        branches.append(self._norm(self.norm2, h + x))
        out = sum(branches)
        if self.ffn is not None:
            out = out + F.dropout(self.ffn(out), self.dropout,
                                  self.training)
        return self._norm(self.norm3, out)

    @classmethod
    def from_pyg(cls, layer: torch.nn.Module,
                 backend: str = "auto") -> "GPSConv":
        """The layer that computes PyG's ``GPSConv`` ``layer`` (multi-head
        attention, batch norm or none, any activation with an equal in
        :data:`ACTIVATIONS`): its local conv (a copy), its
        ``torch.nn.MultiheadAttention`` as
        :meth:`MultiHeadAttentionConv.from_torch
        <tgnn_transformers.nn.MultiHeadAttentionConv.from_torch>` over the
        complete graphs, its norms and MLP.  Other settings raise a
        ``ValueError`` naming them."""
        import copy

        from torch_geometric.nn import GPSConv as PyGGPSConv
        from torch_geometric.nn.norm import BatchNorm

        from .graph_transformer import torch_activation_name
        from .multi_head_attention_conv import MultiHeadAttentionConv
        if not isinstance(layer, PyGGPSConv):
            raise TypeError(f"expected torch_geometric.nn.GPSConv, got "
                            f"{type(layer).__name__}")
        if not isinstance(layer.attn, torch.nn.MultiheadAttention):
            raise ValueError(f"from_pyg converts attn_type='multihead', got "
                             f"{layer.attn_type!r}")
        norms = (layer.norm1, layer.norm2, layer.norm3)
        if all(n is None for n in norms):
            norm = None
        elif all(type(n) is BatchNorm for n in norms):
            norm = "batch"
        else:
            raise ValueError("from_pyg converts norm='batch_norm' or None, "
                             f"got {type(layer.norm2).__name__}")
        first, act, _, second, _ = layer.mlp
        out = cls(layer.channels, copy.deepcopy(layer.conv), layer.heads,
                  layer.dropout, torch_activation_name(act), norm,
                  attention=MultiHeadAttentionConv.from_torch(
                      layer.attn, backend=backend),
                  ffn_multiplier=first.out_features / layer.channels)
        out.to(device=first.weight.device, dtype=first.weight.dtype)
        out.ffn.lin1.load_state_dict(first.state_dict())
        out.ffn.lin2.load_state_dict(second.state_dict())
        for ours, theirs in zip((out.norm1, out.norm2, out.norm3), norms):
            if ours is not None and theirs is not None:
                ours.load_state_dict(theirs.state_dict())
        out.train(layer.training)
        return out

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, conv="
                f"{self.conv}, heads={self.heads}, attention="
                f"{self.attention.__class__.__name__}, attention_graph="
                f"{self.attention_graph!r})")
