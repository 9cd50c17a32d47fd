from __future__ import annotations

import warnings
from typing import Any, Dict, Optional

import torch
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn.dense.linear import Linear

from ._attention_conv import AttentionConvBase, Attended
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
    ``return_attention_weights=True`` returns the kept subgraph.  A node
    whose edges are all dropped (or that has none) keeps only its
    :math:`(1 + \epsilon_h) \mathbf{v}_i^h` term.  With ``mlp_norm="layer"``
    the MLP's hidden width :math:`\gamma C` must be at least 2 (a LayerNorm
    over one channel is constant; the constructor warns).

    The paper's best setting is ``mlp_multiplier=0.5`` with ``sharpen=True``.

    Args:
        {shared_args}
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

    The options from ``eps`` on are keyword-only.  The shared arguments are
    those of :class:`MultiHeadAttentionConv`, with its defaults
    (``root_weight=True, out_proj=False``, ``TransformerConv``'s); the
    paper's transformer form is ``root_weight=False, out_proj=True``.
    """

    def __init__(
        self,
        *args,
        eps: float = 0.0,
        train_eps: bool = True,
        mlp_multiplier: float = 0.5,
        mlp_norm: Optional[str] = "layer",
        sharpen: bool = True,
        normalization: str = "softmax",
        threshold: Optional[float] = None,
        top_k: Optional[int] = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        heads, out_channels = self.heads, self.out_channels
        in_channels = self.in_channels
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
                                   bias=self.lin_value.bias is not None)
        else:
            self.register_parameter("lin_self", None)
        hidden = max(1, round(mlp_multiplier * out_channels))
        if hidden == 1 and mlp_norm == "layer":
            warnings.warn(
                f"GINAttentionConv: mlp_multiplier={mlp_multiplier} with "
                f"out_channels={out_channels} gives each head's MLP a hidden "
                "width of 1, and a LayerNorm over 1 channel outputs a "
                "constant: the layer's output would not depend on its input "
                "(every weight before the norm gets a zero gradient).  Use "
                f"mlp_multiplier >= {1.5 / out_channels:.3g} or "
                "mlp_norm=None", UserWarning, stacklevel=2)
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

    def _kernel_options(self) -> Dict[str, Any]:
        scale = self.out_channels**-0.5
        if self.sharpen is not None:
            scale = self.sharpen * scale
        return dict(scale=scale, normalization=self.normalization,
                    threshold=self.threshold, top_k=self.top_k)

    def _update_heads(self, attended: Attended) -> Tensor:
        if attended.bipartite:
            lin = self.lin_self if self.lin_self is not None else \
                self.lin_value
            self_value = lin(attended.x_dst).view(-1, self.heads,
                                                  self.out_channels)
        else:
            self_value = attended.value
        h = (1 + self.eps).view(1, -1, 1) * self_value + attended.attention.out
        return self.mlp(h)

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
