"""Task models built from the package's layers (and PyG baselines)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import global_add_pool, global_mean_pool

from ..functional import feature_dropout
from ..nn import GraphTransformer
from .convs import build_conv, call_conv


class ConvStack(torch.nn.Module):
    """``num_layers`` convs with ELU and dropout between them.

    Hidden layers concatenate ``heads`` heads of ``hidden // heads``
    channels; the last layer maps to ``out_channels`` (averaging
    ``out_heads`` heads), as in the GAT paper's Cora model.
    """

    def __init__(self, model: str, in_channels: int, hidden: int,
                 out_channels: int, *, heads: int = 8, out_heads: int = 1,
                 num_layers: int = 2, dropout: float = 0.6,
                 attn_dropout: float = 0.6, delta: Optional[float] = None,
                 edge_dim: Optional[int] = None, root_weight: bool = True,
                 mlp_multiplier: float = 0.5,
                 mlp_norm: Optional[str] = "layer",
                 normalization: str = "softmax"):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"heads={heads} must divide hidden={hidden}")
        self.dropout = dropout
        self.convs = torch.nn.ModuleList()
        width = in_channels
        for layer in range(num_layers):
            last = layer == num_layers - 1
            conv = build_conv(model, width, out_channels if last else
                              hidden // heads, out_heads if last else heads,
                              concat=not last, attn_dropout=attn_dropout,
                              delta=delta, edge_dim=edge_dim,
                              root_weight=root_weight,
                              mlp_multiplier=mlp_multiplier,
                              mlp_norm=mlp_norm,
                              normalization=normalization)
            self.convs.append(conv)
            width = hidden
        self.out_channels = out_channels

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_attr: Optional[Tensor] = None,
                batch: Optional[Tensor] = None,
                return_layers: bool = False):
        """The last layer's output, or with ``return_layers`` the input
        and every layer's output, in order."""
        layers = [x]
        for i, conv in enumerate(self.convs):
            # feature_dropout: the input features may be a sparse tensor.
            x = feature_dropout(x, self.dropout, self.training)
            x = call_conv(conv, x, edge_index, edge_attr, batch)
            if i < len(self.convs) - 1:
                x = F.elu(x)
            layers.append(x)
        return layers if return_layers else x


class TransformerStack(torch.nn.Module):
    """Input projection -> :class:`GraphTransformer` -> linear head."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, *,
                 heads: int = 4, num_layers: int = 2, dropout: float = 0.5,
                 attn_dropout: float = 0.1, attention: str = "mha",
                 attention_kwargs: Optional[dict] = None,
                 edge_dim: Optional[int] = None, ffn_multiplier: float = 2.0,
                 norm: str = "layer"):
        super().__init__()
        self.dropout = dropout
        self.input = torch.nn.Linear(in_channels, hidden)
        self.encoder = GraphTransformer(
            hidden, heads, num_layers, attention=attention,
            attention_kwargs=attention_kwargs, dropout=dropout,
            attention_dropout=attn_dropout, edge_dim=edge_dim,
            ffn_multiplier=ffn_multiplier, norm=norm, norm_first=True)
        self.head = torch.nn.Linear(hidden, out_channels)
        self.out_channels = out_channels

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_attr: Optional[Tensor] = None,
                batch: Optional[Tensor] = None) -> Tensor:
        x = self.input(feature_dropout(x, self.dropout, self.training))
        x = self.encoder(x, edge_index, edge_attr, batch)
        return self.head(F.dropout(x, self.dropout, self.training))


def build_encoder(model: str, in_channels: int, out_channels: int,
                  **kwargs) -> torch.nn.Module:
    """A node encoder by CLI model name (``graph-transformer`` is the full
    transformer block stack, the others a :class:`ConvStack`)."""
    hidden = kwargs.pop("hidden")
    if model == "graph-transformer":
        for key in ("out_heads", "root_weight", "mlp_multiplier",
                    "mlp_norm", "normalization"):
            kwargs.pop(key, None)
        delta = kwargs.pop("delta", None)
        attention = kwargs.pop("attention", "mha")
        attention_kwargs = {"delta": delta} if attention == "pna" else None
        return TransformerStack(in_channels, hidden, out_channels,
                                attention=attention,
                                attention_kwargs=attention_kwargs, **kwargs)
    kwargs.pop("attention", None)
    kwargs.pop("ffn_multiplier", None)
    return ConvStack(model, in_channels, hidden, out_channels, **kwargs)


class NodeClassifier(torch.nn.Module):
    """Node classification: encoder straight to class logits."""

    def __init__(self, model: str, in_channels: int, num_classes: int,
                 **kwargs):
        super().__init__()
        self.encoder = build_encoder(model, in_channels, num_classes,
                                     **kwargs)

    def forward(self, x, edge_index, edge_attr=None):
        return self.encoder(x, edge_index, edge_attr)


class GraphClassifier(torch.nn.Module):
    """Graph classification: node encoder, global pooling, and either an
    MLP head on the pooled last layer (``readout="last"``) or, as in the GIN
    paper, one linear head per layer on that layer's pooled features
    (input included), summed (``readout="layers"``): shallow layers keep
    the counts of small substructures that deep ones smooth away."""

    def __init__(self, model: str, in_channels: int, num_classes: int, *,
                 hidden: int = 64, pool: str = "add", dropout: float = 0.5,
                 readout: str = "last", **kwargs):
        super().__init__()
        if pool not in ("add", "mean"):
            raise ValueError(f"unknown pool {pool!r}; expected add or mean")
        if readout not in ("last", "layers"):
            raise ValueError(f"unknown readout {readout!r}; expected last "
                             "or layers")
        self.pool = global_add_pool if pool == "add" else global_mean_pool
        self.readout, self.dropout = readout, dropout
        self.encoder = build_encoder(model, in_channels, hidden,
                                     hidden=hidden, dropout=dropout, **kwargs)
        if readout == "layers":
            if not isinstance(self.encoder, ConvStack):
                raise ValueError(f"readout='layers' needs a conv stack; "
                                 f"{model!r} is a transformer block stack")
            widths = [in_channels] + [hidden] * len(self.encoder.convs)
            self.head = torch.nn.ModuleList(
                torch.nn.Linear(w, num_classes) for w in widths)
        else:
            self.head = torch.nn.Sequential(
                torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                torch.nn.Dropout(dropout),
                torch.nn.Linear(hidden, num_classes))

    def forward(self, x, edge_index, batch, edge_attr=None):
        if self.readout == "last":
            h = F.elu(self.encoder(x, edge_index, edge_attr, batch))
            return self.head(self.pool(h, batch))
        layers = self.encoder(x, edge_index, edge_attr, batch,
                              return_layers=True)
        layers[-1] = F.elu(layers[-1])
        return sum(head(F.dropout(self.pool(h, batch), self.dropout,
                                  self.training))
                   for head, h in zip(self.head, layers))


class LinkPredictor(torch.nn.Module):
    """Link prediction: node encoder and a dot-product or MLP decoder."""

    def __init__(self, model: str, in_channels: int, *, hidden: int = 64,
                 decoder: str = "dot", **kwargs):
        super().__init__()
        if decoder not in ("dot", "mlp"):
            raise ValueError(f"unknown decoder {decoder!r}; expected dot or "
                             "mlp")
        self.encoder = build_encoder(model, in_channels, hidden,
                                     hidden=hidden, **kwargs)
        self.decoder = decoder
        if decoder == "mlp":
            self.mlp = torch.nn.Sequential(torch.nn.Linear(hidden, hidden),
                                           torch.nn.ReLU(),
                                           torch.nn.Linear(hidden, 1))

    def encode(self, x, edge_index):
        return self.encoder(x, edge_index)

    def decode(self, z: Tensor, pairs: Tensor) -> Tensor:
        h = z[pairs[0]] * z[pairs[1]]
        return h.sum(-1) if self.decoder == "dot" else self.mlp(h).squeeze(-1)
