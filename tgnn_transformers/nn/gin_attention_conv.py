from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn.dense.linear import Linear

from ._attention_conv import (AttentionConvBase, ChannelSpec, ConvOutput,
                              NodeFeatures)
from .headwise import HeadwiseMLP


class GINAttentionConv(AttentionConvBase):
    r"""GIN-Attention (Buehler, 2025): attention weights as a weighted
    adjacency, followed by a GIN update per head.

    .. math::
        \alpha_{ij}^h = \mathrm{norm}_{j \in \mathcal{N}(i)} \left(
        \sigma \, \frac{(\mathbf{W}_Q^h \mathbf{x}_i)^{\top}
        (\mathbf{W}_K^h \mathbf{x}_j + \mathbf{W}_E^h \mathbf{e}_{ij})}
        {\sqrt{C}} \right)

    .. math::
        \mathbf{h}_i^h = \mathrm{MLP}_h \Big( (1 + \epsilon_h)\,
        \mathbf{v}_i^h + \sum_{j \in \mathcal{N}(i)} \alpha_{ij}^h
        (\mathbf{v}_j^h + \mathbf{W}_E^h \mathbf{e}_{ij}) \Big),
        \qquad \mathbf{v}^h = \mathbf{W}_V^h \mathbf{x}

    .. math::
        \mathbf{x}'_i = \mathbf{O} \, \big\Vert_{h} \mathbf{h}_i^h
        \; (+ \mathbf{W}_{\mathrm{skip}} \mathbf{x}_i)

    :math:`\epsilon_h` is trainable per head (initial value ``eps``),
    :math:`\sigma` an optional trainable sharpening scalar (``sharpen=True``,
    initialised at 1), :math:`\mathrm{norm}` the softmax over the incoming
    edges or a non-normalised ReLU (``normalization="relu"``), and
    :math:`\mathrm{MLP}_h` is ``Linear(C, γC) -> LayerNorm -> SiLU ->
    Linear(γC, C)`` for every head, computed batched over heads.  With
    ``threshold`` or ``top_k`` the weights are sparsified on the edges before
    aggregation (weights below the threshold, or outside the ``top_k``
    largest of each target, are dropped; no renormalisation), and
    ``return_attention_weights=True`` returns the kept subgraph.

    The paper's best setting is ``mlp_multiplier=0.5`` with ``sharpen=True``.

    Args:
        in_channels: input size, a ``(source, target)`` tuple, or ``-1``.
        out_channels: channels per head :math:`C`.
        heads: number of heads.
        eps: initial :math:`\epsilon`.
        train_eps: make :math:`\epsilon` trainable.
        mlp_multiplier: :math:`\gamma`, the hidden width of each head's MLP
            relative to :math:`C`.
        mlp_norm: ``"layer"`` or ``None``, the norm inside the MLP.
        sharpen: learn a scalar multiplying the logits before the
            normalisation.
        normalization: ``"softmax"`` or ``"relu"``.
        threshold: drop weights below this value before aggregation.
        top_k: keep only the ``top_k`` largest weights per target and head.
        concat, beta, dropout, edge_dim, bias, root_weight, out_proj,
        backend: as in :class:`MultiHeadAttentionConv` (here ``out_proj``
            defaults to ``True`` and ``root_weight`` to ``False``, the
            transformer form).
    """

    def __init__(
        self,
        in_channels: ChannelSpec,
        out_channels: int,
        heads: int = 1,
        *,
        eps: float = 0.0,
        train_eps: bool = True,
        mlp_multiplier: float = 0.5,
        mlp_norm: Optional[str] = "layer",
        sharpen: bool = True,
        normalization: str = "softmax",
        threshold: Optional[float] = None,
        top_k: Optional[int] = None,
        concat: bool = True,
        beta: bool = False,
        dropout: float = 0.0,
        edge_dim: Optional[int] = None,
        bias: bool = True,
        root_weight: bool = False,
        out_proj: bool = True,
        backend: str = "auto",
        **kwargs,
    ):
        super().__init__(in_channels, out_channels, heads=heads,
                         concat=concat, beta=beta, dropout=dropout,
                         edge_dim=edge_dim, bias=bias,
                         root_weight=root_weight, out_proj=out_proj,
                         backend=backend, **kwargs)
        if mlp_multiplier <= 0:
            raise ValueError(f"mlp_multiplier must be > 0, got "
                             f"{mlp_multiplier}")
        if normalization not in ("softmax", "relu"):
            raise ValueError(f"unknown normalization {normalization!r}; "
                             "expected 'softmax' or 'relu'")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.initial_eps = eps
        self.mlp_multiplier = mlp_multiplier
        self.normalization = normalization
        self.threshold = threshold
        self.top_k = top_k
        if train_eps:
            self.eps = Parameter(torch.empty(heads))
        else:
            self.register_buffer("eps", torch.empty(heads))
        if sharpen:
            self.sharpen = Parameter(torch.empty(()))
        else:
            self.register_parameter("sharpen", None)
        # The target's own value v_i needs a projection of the target
        # features; it is W_V unless source and target sizes differ.
        if isinstance(in_channels, (tuple, list)) and \
                in_channels[0] != in_channels[1]:
            self.lin_self = Linear(in_channels[1], heads * out_channels,
                                   bias=bias)
        else:
            self.register_parameter("lin_self", None)
        hidden = max(1, round(mlp_multiplier * out_channels))
        self.mlp = HeadwiseMLP(heads, out_channels, hidden, out_channels,
                               norm=mlp_norm)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.eps.data.fill_(self.initial_eps)
        if self.sharpen is not None:
            self.sharpen.data.fill_(1.0)
        if self.lin_self is not None:
            self.lin_self.reset_parameters()
        self.mlp.reset_parameters()

    def forward(
        self,
        x: NodeFeatures,
        edge_index: Tensor,
        edge_attr: Optional[Tensor] = None,
        return_attention_weights: Optional[bool] = None,
        *,
        batch: Optional[Tensor] = None,
    ) -> ConvOutput:
        """Same call as :meth:`MultiHeadAttentionConv.forward`."""
        scale = self.out_channels**-0.5
        if self.sharpen is not None:
            scale = self.sharpen * scale
        attended = self._attend(x, edge_index, edge_attr,
                                return_attention_weights, batch, scale=scale,
                                normalization=self.normalization,
                                threshold=self.threshold, top_k=self.top_k)
        if attended.bipartite:
            lin = self.lin_self if self.lin_self is not None else \
                self.lin_value
            self_value = lin(attended.x_dst).view(-1, self.heads,
                                                  self.out_channels)
        else:
            self_value = attended.value
        h = (1 + self.eps).view(1, -1, 1) * self_value + attended.attention.out
        return self._finish(self.mlp(h), attended)

    def _extra_repr_args(self) -> str:
        args = [f"mlp_multiplier={self.mlp_multiplier}"]
        if self.sharpen is not None:
            args.append("sharpen=True")
        if self.normalization != "softmax":
            args.append(f"normalization={self.normalization!r}")
        if self.threshold is not None:
            args.append(f"threshold={self.threshold}")
        if self.top_k is not None:
            args.append(f"top_k={self.top_k}")
        return ", ".join(args)
