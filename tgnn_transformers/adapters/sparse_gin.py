r"""Sparse GIN-Attention fine-tuning (Buehler, 2025): a frozen pretrained
transformer gets, per layer, a small GIN that runs over the layer's hidden
states on the graph its own attention draws, added back with a trainable
scale that starts at zero.

For layer :math:`l` with attention :math:`A^{l,h}_{ij}` (query :math:`i`,
key :math:`j`) and output :math:`\mathbf{h}^l`:

.. math::
    W_{ij} = \min\Big(1, \sum_h A^{l,h}_{ij}\Big), \qquad
    \tilde W = \mathrm{sparsify}(W)\ \text{(threshold or top-}k
    \text{ per row; optionally } j \le i\text{)}

.. math::
    \mathbf{h}^{l}_i \leftarrow \mathbf{h}^l_i + \lambda_l\,
    \mathrm{MLP}_l\Big((1 + \epsilon_l)\,\mathbf{h}^l_i +
    \sum_j \tilde W_{ij}\, \mathbf{h}^l_j\Big)

The graph has an edge :math:`j \to i` (``edge_index[:, e] = (j, i)``, PyG's
convention) wherever query :math:`i` attends to key :math:`j`, so messages
travel from the attended tokens to the attending one.  (The published code
builds the graph the other way round from its GIN, which leaves only
self-loops.)  Wrapping works like ``peft``: :func:`add_sparse_gin_adapters`
replaces each encoder layer by a wrapper around it, freezes the base weights
and leaves the layers' own code untouched.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter

from torch_geometric.utils import is_sparse

from ..functional import (adjacency_to_edge_index, attention_aggregate,
                          sparsify_attention)
from ..nn import GraphTransformer, GraphTransformerLayer
from ..nn.graph_transformer import NORM_MODULES


def attention_graph(attention: Tensor, edge_index: Optional[Tensor] = None,
                    *, threshold: Optional[float] = None,
                    top_k: Optional[int] = None, causal: bool = False):
    """The sparse graph of attention weights, dense or on edges.

    Args:
        attention: without ``edge_index``, ``[B, H, L, L]`` (or
            ``[B, L, L]``) attention probabilities of a padded batch,
            ``attention[b, h, i, j]`` = how much query ``i`` attends to key
            ``j`` (a Hugging Face model's attentions); with ``edge_index``,
            ``[E, H]`` (or ``[E]``) weights of those edges (a conv's
            ``return_attention_weights``).
        edge_index: ``[2, E]`` edges ``j -> i`` of ``attention``.
        threshold: keep combined weights ``>= threshold``.
        top_k: keep the ``top_k`` strongest keys of every query.
        causal: keep only ``j <= i`` (decoders; on edges, by node index).

    Returns:
        ``(edge_index, weight)``: ``edge_index[0]`` the key ``j``,
        ``edge_index[1]`` the query ``i`` (over the ``B * L`` flattened
        positions for dense input), ``weight`` the combined (head-summed,
        clamped at 1) weight, without zero weights, after
        :func:`~tgnn_transformers.functional.sparsify_attention`.
    """
    if edge_index is None:
        if attention.dim() == 4:
            attention = attention.sum(dim=1)
        if attention.dim() != 3 or attention.size(-1) != attention.size(-2):
            raise ValueError(f"attention must have shape [B, H, L, L] or "
                             f"[B, L, L], got {list(attention.shape)}")
        b, i, j = attention.nonzero(as_tuple=True)
        offset = b * attention.size(-1)
        weight, edge_index = attention[b, i, j], torch.stack([offset + j,
                                                              offset + i])
    else:
        if attention.dim() not in (1, 2) or \
                attention.size(0) != edge_index.size(1):
            raise ValueError(f"attention on edges must have shape [E, H] or "
                             f"[E] with E = edge_index.size(1) = "
                             f"{edge_index.size(1)}, got "
                             f"{list(attention.shape)}")
        weight = attention.sum(dim=-1) if attention.dim() == 2 else attention
    weight = weight.clamp(max=1.0)
    keep = weight > 0
    if causal:
        keep &= edge_index[0] <= edge_index[1]
    weight, edge_index = weight[keep], edge_index[:, keep]
    if threshold is not None or top_k is not None:
        weight, edge_index, _ = sparsify_attention(
            weight.unsqueeze(-1), edge_index, threshold=threshold,
            top_k=top_k)
        weight = weight.squeeze(-1)
    return edge_index, weight


class SparseGINAdapter(torch.nn.Module):
    r"""One layer's adapter: a GIN over the hidden states on the attention
    graph, scaled by :math:`\lambda` (initially ``scale_init``, 0 by
    default, so the wrapped model starts out unchanged).

    Args:
        channels: hidden size of the transformer.
        hidden_channels: width of the GIN's MLP (the adapter's budget).
        threshold, top_k, causal: the sparsification of
            :func:`attention_graph`.
        eps: initial :math:`\epsilon` (trainable with ``train_eps``).
        dropout: dropout inside the MLP.
        scale_init: initial :math:`\lambda`.
    """

    def __init__(self, channels: int, hidden_channels: int = 32, *,
                 threshold: Optional[float] = None,
                 top_k: Optional[int] = 8, causal: bool = False,
                 eps: float = 0.0, train_eps: bool = True,
                 dropout: float = 0.0, scale_init: float = 0.0):
        super().__init__()
        if channels < 1 or hidden_channels < 1:
            raise ValueError(f"channels and hidden_channels must be >= 1, "
                             f"got {channels} and {hidden_channels}")
        if threshold is None and top_k is None:
            raise ValueError("give threshold= or top_k= (a dense attention "
                             "graph is not sparse)")
        self.channels, self.hidden_channels = channels, hidden_channels
        self.threshold, self.top_k, self.causal = threshold, top_k, causal
        self.initial_eps, self.scale_init = eps, scale_init
        if train_eps:
            self.eps = Parameter(torch.empty(1))
        else:
            self.register_buffer("eps", torch.empty(1))
        self.lin1 = torch.nn.Linear(channels, hidden_channels)
        self.lin2 = torch.nn.Linear(hidden_channels, channels)
        self.dropout = torch.nn.Dropout(dropout)
        self.scale = Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.eps.data.fill_(self.initial_eps)
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()
        self.scale.data.fill_(self.scale_init)

    def gin(self, x: Tensor, edge_index: Tensor, weight: Tensor) -> Tensor:
        """``MLP((1 + eps) x_i + sum_j w_ij x_j)`` for ``[N, C]`` nodes."""
        neighbours = attention_aggregate(x.unsqueeze(1), weight.unsqueeze(1),
                                         edge_index, x.size(0)).squeeze(1)
        h = (1 + self.eps) * x + neighbours
        return self.lin2(self.dropout(F.gelu(self.lin1(h))))

    def forward(self, hidden: Tensor, attention: Tensor,
                edge_index: Optional[Tensor] = None) -> Tensor:
        """``hidden`` plus the scaled GIN update on the graph of
        ``attention``: ``[B, L, C]`` hidden states with ``[B, H, L, L]``
        attention (a Hugging Face layer), or ``[N, C]`` node states with
        ``[E, H]`` weights of ``edge_index`` (a graph layer).  No gradient
        flows into the attention: it only draws the graph."""
        edge_index, weight = attention_graph(
            attention.detach(), edge_index, threshold=self.threshold,
            top_k=self.top_k, causal=self.causal)
        flat = hidden.reshape(-1, hidden.size(-1))
        update = self.gin(flat, edge_index, weight.to(flat.dtype))
        return hidden + self.scale * update.view_as(hidden)

    def __repr__(self) -> str:
        sparsity = (f"top_k={self.top_k}" if self.top_k is not None else
                    f"threshold={self.threshold}")
        return (f"{self.__class__.__name__}({self.channels}, "
                f"{self.hidden_channels}, {sparsity})")


class SparseGINLayer(torch.nn.Module):
    """A Hugging Face encoder layer with a :class:`SparseGINAdapter` after
    it; the layer's self-attention probabilities are read by a forward hook
    on its ``attention.self`` module (eager attention)."""

    def __init__(self, layer: torch.nn.Module, adapter: SparseGINAdapter):
        super().__init__()
        self.layer, self.adapter = layer, adapter
        self._attention: Optional[Tensor] = None
        self._hook = layer.attention.self.register_forward_hook(self._read)

    def _read(self, module, inputs, output) -> None:
        weights = output[1] if isinstance(output, tuple) and \
            len(output) > 1 else None
        self._attention = weights

    def forward(self, hidden_states: Tensor, *args, **kwargs):
        self._attention = None
        out = self.layer(hidden_states, *args, **kwargs)
        hidden = out[0] if isinstance(out, tuple) else out
        if self._attention is None:
            raise RuntimeError(
                "the Sparse GIN adapter needs the attention probabilities: "
                "load the model with attn_implementation='eager'")
        hidden = self.adapter(hidden, self._attention)
        self._attention = None
        return (hidden, ) + tuple(out[1:]) if isinstance(out, tuple) \
            else hidden


class SparseGINGraphLayer(torch.nn.Module):
    """A :class:`~tgnn_transformers.nn.GraphTransformerLayer` with a
    :class:`SparseGINAdapter` after it, on the graph of the layer's own
    attention weights (``return_attention_weights``); same ``forward`` as
    the layer."""

    def __init__(self, layer: GraphTransformerLayer,
                 adapter: SparseGINAdapter):
        super().__init__()
        self.layer, self.adapter = layer, adapter

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_attr: Optional[Tensor] = None,
                batch: Optional[Tensor] = None, **kwargs) -> Tensor:
        if kwargs.get("return_attention_weights"):
            raise ValueError("return_attention_weights: the adapted layer "
                             "returns node states only")
        if is_sparse(edge_index):
            # The adapter's GIN needs the edges; a conversion is cached on
            # the adjacency, and the attention is the same on either form.
            edge_index = adjacency_to_edge_index(edge_index)
        x, (attended, weights) = self.layer(
            x, edge_index, edge_attr, batch, return_attention_weights=True,
            **kwargs)
        return self.adapter(x, weights, attended)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.layer}, {self.adapter})"


def _encoder_layers(model) -> torch.nn.ModuleList:
    if isinstance(model, GraphTransformer):
        return model.layers
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise TypeError(f"expected a GraphTransformer or a Hugging Face "
                        f"BERT-family model with .encoder.layer, got "
                        f"{type(model).__name__}")
    return layers


def add_sparse_gin_adapters(model, *, hidden_channels: int = 32,
                            train_norms: bool = True, **adapter_options):
    """Puts a :class:`SparseGINAdapter` after every layer of ``model`` (in
    place) and freezes the base weights: afterwards only the adapters (their
    MLP, ``eps`` and scale :math:`\\lambda`) and, with ``train_norms``, the
    norm layers train.

    ``model`` is a Hugging Face BERT-family model, which must use eager
    attention (``attn_implementation="eager"``), or a
    :class:`~tgnn_transformers.nn.GraphTransformer` (e.g. the same
    model through :meth:`~tgnn_transformers.nn.GraphTransformer.from_huggingface`,
    whose adapters then read the convs' attention weights on any sentence
    graph).  Returns ``model``; at initialisation its outputs are unchanged.
    """
    graph = isinstance(model, GraphTransformer)
    if not graph and getattr(model.config, "_attn_implementation",
                             "eager") != "eager":
        raise ValueError("the Sparse GIN adapter reads the attention "
                         "probabilities: load the model with "
                         "attn_implementation='eager' (got "
                         f"{model.config._attn_implementation!r})")
    layers = _encoder_layers(model)
    model.requires_grad_(False)
    if train_norms:
        for module in model.modules():
            if isinstance(module, NORM_MODULES):
                module.requires_grad_(True)
    channels = layers[0].channels if graph else model.config.hidden_size
    reference = next(model.parameters())
    for index, layer in enumerate(layers):
        if isinstance(layer, (SparseGINLayer, SparseGINGraphLayer)):
            raise ValueError(f"layer {index} already has an adapter")
        adapter = SparseGINAdapter(channels, hidden_channels,
                                   **adapter_options)
        adapter.to(device=reference.device, dtype=reference.dtype)
        layers[index] = (SparseGINGraphLayer if graph else SparseGINLayer)(
            layer, adapter)
    return model


def count_trainable(model: torch.nn.Module) -> int:
    """Number of parameters that receive gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
