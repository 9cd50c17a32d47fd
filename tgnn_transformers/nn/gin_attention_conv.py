from __future__ import annotations

import warnings
from typing import List, Optional

import torch
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn.dense.linear import Linear

from ..functional import ScoreOptions
from ..functional._checks import check_choice
from ._attention_conv import AttentionConvBase, Attended, check_value_proj
from .headwise import HeadwiseMLP, mlp_hidden_width

#: The GIN update of the target's own value: ``(1 + eps) v_i`` (GIN's, the
#: default) or ``eps v_i`` (the published GIN-Attention code's).
GIN_FORMS = ("one-plus-eps", "eps")


class GINAttentionConv(AttentionConvBase):
    r"""GIN-Attention (Buehler, 2025): attention weights as a weighted
    adjacency, followed by a GIN update per head.

    .. math::
        \alpha_{ij}^h = \mathrm{sparsify}\Big( \mathrm{norm}_{j \in
        \mathcal{N}(i)} \left( \sigma \, \frac{(\mathbf{W}_Q^h
        \mathbf{x}_i)^{\top} (\mathbf{W}_K^h \mathbf{x}_j + \mathbf{W}_E^h
        \mathbf{e}_{ij})} {\sqrt{C}} \right) \Big)

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
    edges, a non-normalised ReLU (``normalization="relu"``) or the raw
    scores (``"raw"``), and :math:`\mathrm{MLP}_h` is ``Linear(C, γC) ->
    [Dropout] -> norm -> SiLU -> Linear(γC, C)`` for every head, computed
    batched over heads (``mlp_norm`` LayerNorm, RMSNorm or none;
    ``mlp_dropout``; :math:`\gamma C` rounded to the nearest integer, or
    down with ``mlp_rounding="floor"``).  With ``threshold`` or ``top_k``
    the weights are sparsified on the edges before aggregation (weights
    below the threshold, or outside the ``top_k`` largest of each target,
    are dropped; no renormalisation); ``threshold_mode`` selects the
    published code's modes instead, applied after the attention dropout:
    :math:`\mathrm{relu}(\alpha - t)` (``"shifted-relu"``),
    :math:`\mathbb{1}[\alpha > t]` (``"binary"``) or 1 on the
    :math:`\max(1, \lfloor f d_i \rfloor)` largest weights of each target
    of in-degree :math:`d_i` (``"top-k-fraction"``, :math:`f` =
    ``top_k_fraction``); see
    :func:`~tgnn_transformers.functional.sparsify_attention`.
    ``return_attention_weights=True`` returns the kept subgraph.  A node
    whose edges are all dropped (or that has none) keeps only its
    :math:`(1 + \epsilon_h) \mathbf{v}_i^h` term.  With ``mlp_norm="layer"``
    the MLP's hidden width :math:`\gamma C` must be at least 2 (a LayerNorm
    over one channel is constant; the constructor warns).

    **The published code's form.**  ``gin_form="eps"`` drops the ``1 +``:
    :math:`\epsilon_h \mathbf{v}_i^h + \sum_j \alpha_{ij}^h
    \mathbf{v}_j^h`; ``value_proj=False`` drops :math:`\mathbf{W}_V`, so
    :math:`\mathbf{v}^h` is the :math:`h`-th slice of :math:`C` channels
    of :math:`\mathbf{x}` itself (``in_channels`` must equal ``heads *
    out_channels``).  ``tgnn train --preset paper`` selects that form (see
    the registry's ``presets``).

    The paper's best setting is ``mlp_multiplier=0.5`` with ``sharpen=True``.

    Args:
        {shared_args}
        eps: initial :math:`\epsilon`.
        train_eps: make :math:`\epsilon` trainable.
        mlp_multiplier: :math:`\gamma`, the hidden width of each head's MLP
            relative to :math:`C`.
        mlp_norm: ``"layer"``, ``"rms"`` or ``None``, the norm inside the
            MLP.
        sharpen: learn a scalar multiplying the logits before the
            normalisation.
        normalization: ``"softmax"``, ``"relu"`` or ``"raw"``.
        threshold: with ``threshold_mode="drop"``, drop weights below this
            value before aggregation; the threshold :math:`t` of the
            ``"shifted-relu"`` and ``"binary"`` modes.
        top_k: keep only the ``top_k`` largest weights per target and head
            (``threshold_mode="drop"``).
        gin_form: ``"one-plus-eps"`` (:math:`(1 + \epsilon) \mathbf{v}_i`,
            GIN's form) or ``"eps"`` (:math:`\epsilon \mathbf{v}_i`, the
            published code's).
        mlp_dropout: dropout probability inside each head's MLP, after its
            first linear map.
        mlp_rounding: ``"round"`` or ``"floor"`` (the published code's
            ``int(γC)``), how :math:`\gamma C` becomes a width.
        value_proj: project the values with :math:`\mathbf{W}_V`
            (``False``: the messages are the features themselves, one slice
            per head).
        threshold_mode: ``"drop"``, ``"shifted-relu"``, ``"binary"`` or
            ``"top-k-fraction"``.
        top_k_fraction: :math:`f \in (0, 1]` of ``"top-k-fraction"``.

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
        gin_form: str = "one-plus-eps",
        mlp_dropout: float = 0.0,
        mlp_rounding: str = "round",
        value_proj: bool = True,
        threshold_mode: str = "drop",
        top_k_fraction: Optional[float] = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        heads, out_channels = self.heads, self.out_channels
        in_channels = self.in_channels
        if mlp_multiplier <= 0:
            raise ValueError(f"mlp_multiplier must be > 0, got "
                             f"{mlp_multiplier}")
        check_choice("gin_form", gin_form, GIN_FORMS)
        check_value_proj(value_proj)
        self.scores = ScoreOptions(normalization, threshold, top_k,
                                   threshold_mode, top_k_fraction)
        self.initial_eps = eps
        self.mlp_multiplier = mlp_multiplier
        self.gin_form = gin_form
        self.mlp_rounding = mlp_rounding
        if not value_proj:
            self._drop_value_projection()
        if train_eps:
            self.eps = Parameter(torch.empty(heads))
        else:
            self.register_buffer("eps", torch.empty(heads))
        if sharpen:
            self.sharpen = Parameter(torch.empty(()))
        else:
            self.register_parameter("sharpen", None)
        # The target's own value v_i needs a projection of the target
        # features; it is W_V unless source and target sizes differ.  With
        # lazy sizes ((-1, -1), as PyG's to_hetero builds them) that is
        # known at the first call: lin_self is kept only if they differ,
        # so the layer ends up as the one built with explicit sizes.
        pair = isinstance(in_channels, (tuple, list))
        lazy = pair and any(size is None or size <= 0
                            for size in in_channels)
        self._self_undecided = bool(value_proj and lazy)
        if value_proj and pair and (lazy or in_channels[0] !=
                                    in_channels[1]):
            self.lin_self = Linear(in_channels[1], heads * out_channels,
                                   bias=self.lin_value.bias is not None)
        else:
            self.register_parameter("lin_self", None)
        hidden = mlp_hidden_width(mlp_multiplier, out_channels, mlp_rounding)
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
                               norm=mlp_norm, dropout=mlp_dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.eps.data.fill_(self.initial_eps)
        if self.sharpen is not None:
            self.sharpen.data.fill_(1.0)
        if self.lin_self is not None:
            self.lin_self.reset_parameters()
        self.mlp.reset_parameters()

    def score_scale(self):
        scale = super().score_scale()
        return scale if self.sharpen is None else self.sharpen * scale

    def _decide_self_projection(self, needed: bool) -> None:
        """Lazy sizes: keep ``lin_self`` only when the target's features
        cannot go through ``W_V`` (their width differs from the
        sources')."""
        if not needed:
            self.lin_self = None
        self._self_undecided = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self._self_undecided:
            self._decide_self_projection(any(
                name.startswith(prefix + "lin_self.") for name in state_dict))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _update_heads(self, attended: Attended) -> Tensor:
        if self._self_undecided:
            self._decide_self_projection(
                attended.self_value is None and attended.x_dst.size(-1) !=
                self.lin_value.in_channels)
        self_value = attended.self_value
        if self_value is None and self.lin_self is not None:
            self_value = self.lin_self(attended.x_dst).view(
                -1, self.heads, self.out_channels)
        elif self_value is None:
            self_value = self._values(attended.x_dst,
                                      "x[1] (target features)")
        # (1 + eps) v_i (GIN's form) or eps v_i (the published code's)
        factor = 1 + self.eps if self.gin_form == "one-plus-eps" else \
            self.eps
        h = factor.view(1, -1, 1) * self_value + attended.attention.out
        return self.mlp(h)

    def _extra_repr_args(self) -> List[str]:
        args = [f"mlp_multiplier={self.mlp_multiplier}"]
        if self.sharpen is not None:
            args.append("sharpen=True")
        if self.gin_form != "one-plus-eps":
            args.append(f"gin_form={self.gin_form!r}")
        if not self.value_proj:
            args.append("value_proj=False")
        if self.mlp_rounding != "round":
            args.append(f"mlp_rounding={self.mlp_rounding!r}")
        return args
