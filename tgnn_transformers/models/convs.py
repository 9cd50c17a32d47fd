"""Builds one graph convolution by CLI model name: the package's attention
layers and PyG baselines, with one call signature."""
from __future__ import annotations

from typing import Optional

import torch
from torch_geometric.nn import (MLP, GATConv, GCNConv, GINConv, SAGEConv,
                                TransformerConv)

from ..nn import GINAttentionConv, MultiHeadAttentionConv, PNAAttentionConv

ATTENTION_MODELS = ("mha", "gin-attention", "pna-attention",
                    "graph-transformer")
BASELINE_MODELS = ("gcn", "gat", "sage", "gin", "transformerconv")
MODELS = ATTENTION_MODELS + BASELINE_MODELS
# Single-head baselines that take no edge features.
PLAIN_MODELS = ("gcn", "sage", "gin")
# Baselines that aggregate raw input features before projecting them, so
# they cannot take sparse CSR features.
RAW_FEATURE_MODELS = ("sage", "gin")


def build_conv(model: str, in_channels: int, out_channels: int, heads: int,
               concat: bool, *, attn_dropout: float = 0.0,
               delta: Optional[float] = None,
               edge_dim: Optional[int] = None,
               mlp_multiplier: float = 0.5,
               mlp_norm: Optional[str] = "layer",
               normalization: str = "softmax",
               root_weight: bool = True) -> torch.nn.Module:
    """One conv whose output width is ``heads * out_channels`` when
    ``concat`` else ``out_channels`` (heads are averaged)."""
    if model in PLAIN_MODELS:
        width = out_channels * (heads if concat else 1)
        if model == "gin":  # the GIN paper's layer: 2-layer MLP, BN, ReLU
            return GINConv(MLP([in_channels, width, width]), train_eps=True)
        cls = GCNConv if model == "gcn" else SAGEConv
        return cls(in_channels, width)
    if model == "gat":
        return GATConv(in_channels, out_channels, heads=heads,
                       concat=concat, dropout=attn_dropout, edge_dim=edge_dim)
    if model == "transformerconv":
        return TransformerConv(in_channels, out_channels, heads=heads,
                               concat=concat, dropout=attn_dropout,
                               edge_dim=edge_dim, root_weight=root_weight)
    if model in ("mha", "graph-transformer"):
        return MultiHeadAttentionConv(in_channels, out_channels,
                                      heads=heads, concat=concat,
                                      dropout=attn_dropout, edge_dim=edge_dim,
                                      root_weight=root_weight)
    if model == "gin-attention":
        return GINAttentionConv(in_channels, out_channels, heads=heads,
                                concat=concat, dropout=attn_dropout,
                                edge_dim=edge_dim, root_weight=root_weight,
                                out_proj=False,
                                mlp_multiplier=mlp_multiplier,
                                mlp_norm=mlp_norm,
                                normalization=normalization)
    if model == "pna-attention":
        return PNAAttentionConv(in_channels, out_channels, heads=heads,
                                concat=concat, dropout=attn_dropout,
                                edge_dim=edge_dim, root_weight=root_weight,
                                out_proj=False, delta=delta)
    raise ValueError(f"unknown model {model!r}; expected one of "
                     f"{', '.join(MODELS)}")


def call_conv(conv: torch.nn.Module, x, edge_index, edge_attr=None,
              batch=None):
    """Calls a conv the way it accepts: the package's convs take ``batch``
    (for the dense path), PyG's do not, and GCN/SAGE take no edge_attr."""
    if isinstance(conv, (GCNConv, SAGEConv, GINConv)):
        return conv(x, edge_index)
    if isinstance(conv, (MultiHeadAttentionConv, GINAttentionConv,
                         PNAAttentionConv)):
        return conv(x, edge_index, edge_attr, batch=batch)
    if edge_attr is not None:
        return conv(x, edge_index, edge_attr)
    return conv(x, edge_index)
