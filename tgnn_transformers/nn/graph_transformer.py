"""The transformer block around any of the package's attention convs."""
from __future__ import annotations

import copy
import functools
import warnings
from typing import Dict, Optional, Sequence, Type, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.norm import BatchNorm

from ..functional._checks import check_choice
from ._attention_conv import AttentionConvBase
from .gin_attention_conv import GINAttentionConv
from .kv_cache import KeyValueCache
from .multi_head_attention_conv import MultiHeadAttentionConv
from .pna_attention_conv import PNAAttentionConv

#: The package-wide names of the attention convs (name -> class), the names
#: :class:`GraphTransformerLayer` and the model registry accept.
ATTENTION_CONVS: Dict[str, Type[AttentionConvBase]] = {
    "mha": MultiHeadAttentionConv,
    "gin-attention": GINAttentionConv,
    "pna-attention": PNAAttentionConv,
}
# Earlier short names, still accepted by GraphTransformerLayer (with a
# DeprecationWarning) while callers move to the names above.
_OLD_ATTENTION_NAMES = {"gin": "gin-attention", "pna": "pna-attention"}
#: The feed-forward activations: ``"gelu"`` is the exact (erf) GELU,
#: ``"gelu_tanh"`` its tanh approximation
#: :math:`\tfrac{x}{2}(1 + \tanh(\sqrt{2/\pi}(x + 0.044715x^3)))`
#: (GPT-2's, Hugging Face's ``gelu_new`` / ``gelu_pytorch_tanh``).
ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu,
               "gelu_tanh": functools.partial(F.gelu, approximate="tanh"),
               "silu": F.silu}
#: The norms :func:`make_norm` builds (``None``: no norm), and their types.
NORMS = ("layer", "rms", "batch", None)
NORM_MODULES = (torch.nn.LayerNorm, torch.nn.RMSNorm, BatchNorm)


def make_norm(kind: Optional[str], channels: int, eps: float = 1e-5,
              bias: bool = True) -> Optional[torch.nn.Module]:
    """``"layer"`` (LayerNorm), ``"rms"`` (RMSNorm), ``"batch"`` (PyG's
    BatchNorm over nodes) or ``None``."""
    check_choice("norm", kind, NORMS)
    if kind is None:
        return None
    if kind == "layer":
        return torch.nn.LayerNorm(channels, eps=eps, bias=bias)
    if kind == "rms":
        return torch.nn.RMSNorm(channels, eps=eps)
    return BatchNorm(channels, eps=eps)


class FeedForward(torch.nn.Module):
    """Position-wise feed-forward network ``Linear -> act -> dropout ->
    Linear``, ``act`` one of :data:`ACTIVATIONS`."""

    def __init__(self, channels: int, hidden_channels: int,
                 activation: str = "gelu", dropout: float = 0.0,
                 bias: bool = True):
        super().__init__()
        check_choice("activation", activation, ACTIVATIONS)
        self.activation = activation
        self.lin1 = torch.nn.Linear(channels, hidden_channels, bias=bias)
        self.lin2 = torch.nn.Linear(hidden_channels, channels, bias=bias)
        self.dropout = torch.nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(self.dropout(ACTIVATIONS[self.activation](
            self.lin1(x))))


def torch_activation_name(activation) -> str:
    """The name in :data:`ACTIVATIONS` of a function or module that equals
    it: ``F.relu`` / ``nn.ReLU`` -> ``"relu"``, ``F.gelu`` / ``nn.GELU()``
    -> ``"gelu"``, ``nn.GELU(approximate="tanh")`` /
    ``functools.partial(F.gelu, approximate="tanh")`` -> ``"gelu_tanh"``,
    ``F.silu`` / ``nn.SiLU`` -> ``"silu"``; anything else a ValueError."""
    if activation in (F.relu, torch.relu) or isinstance(activation,
                                                        torch.nn.ReLU):
        return "relu"
    if activation is F.silu or isinstance(activation, torch.nn.SiLU):
        return "silu"
    approximate = None
    if activation is F.gelu:
        approximate = "none"
    elif isinstance(activation, torch.nn.GELU):
        approximate = activation.approximate
    elif (isinstance(activation, functools.partial)
          and activation.func is F.gelu and not activation.args
          and set(activation.keywords) <= {"approximate"}):
        approximate = activation.keywords.get("approximate", "none")
    name = {"none": "gelu", "tanh": "gelu_tanh"}.get(approximate)
    if name is None:
        raise ValueError(
            "from_torch supports the activations relu (F.relu, nn.ReLU), "
            "gelu (F.gelu, nn.GELU()), gelu_tanh (nn.GELU(approximate="
            "'tanh'), functools.partial(F.gelu, approximate='tanh')) and "
            f"silu (F.silu, nn.SiLU); got {activation!r}")
    return name


class GraphTransformerLayer(torch.nn.Module):
    r"""A transformer encoder layer whose attention is a graph convolution.

    Post-norm (``norm_first=False``, the original transformer):

    .. math::
        \mathbf{h} = \mathrm{Norm}_1(\mathbf{x} + \mathrm{Drop}(
        \mathrm{Attn}(\mathbf{x}, \mathcal{E}))), \qquad
        \mathbf{x}' = \mathrm{Norm}_2(\mathbf{h} + \mathrm{Drop}(
        \mathrm{FFN}(\mathbf{h})))

    Pre-norm (``norm_first=True``):

    .. math::
        \mathbf{h} = \mathbf{x} + \mathrm{Drop}(\mathrm{Attn}(
        \mathrm{Norm}_1(\mathbf{x}), \mathcal{E})), \qquad
        \mathbf{x}' = \mathbf{h} + \mathrm{Drop}(\mathrm{FFN}(
        \mathrm{Norm}_2(\mathbf{h})))

    with :math:`\mathrm{FFN}(\mathbf{x}) = W_2\, \mathrm{Drop}(\mathrm{act}(
    W_1 \mathbf{x}))` of width ``ffn_multiplier * channels``.  On the complete
    token graph this is :class:`torch.nn.TransformerEncoderLayer` (see
    :meth:`from_torch`).

    Args:
        channels: model width :math:`d`.
        heads: attention heads; must divide ``channels``.
        attention: a name of :data:`ATTENTION_CONVS` (``"mha"``,
            ``"gin-attention"``, ``"pna-attention"``) or a ready attention
            conv mapping ``channels`` to ``channels``.  A named conv is
            built in the transformer form (``root_weight=False,
            out_proj=True``) unless ``attention_kwargs`` say otherwise.
        attention_kwargs: extra arguments for the attention conv (e.g.
            ``deg`` for PNA, ``mlp_multiplier`` for GIN).
        ffn_multiplier: hidden width of the feed-forward network relative
            to ``channels``; 0 leaves the feed-forward block out.
        activation: ``"relu"``, ``"gelu"``, ``"gelu_tanh"`` or ``"silu"``
            (:data:`ACTIVATIONS`).
        norm: ``"layer"``, ``"rms"``, ``"batch"`` or ``None``.
        norm_first: pre-norm instead of post-norm.
        dropout: dropout on both residual branches and inside the FFN.
        attention_dropout: dropout on the attention weights.
        edge_dim: edge feature size, passed to the attention conv.
    """

    def __init__(
        self,
        channels: int,
        heads: int = 1,
        attention: Union[str, torch.nn.Module] = "mha",
        *,
        attention_kwargs: Optional[dict] = None,
        ffn_multiplier: float = 4.0,
        activation: str = "gelu",
        norm: Optional[str] = "layer",
        norm_first: bool = True,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        edge_dim: Optional[int] = None,
        norm_eps: float = 1e-5,
        bias: bool = True,
    ):
        super().__init__()
        if channels % heads != 0:
            raise ValueError(f"heads={heads} must divide channels={channels}")
        self.channels, self.heads = channels, heads
        self.norm_first = norm_first
        if isinstance(attention, str):
            if attention in _OLD_ATTENTION_NAMES:
                new_name = _OLD_ATTENTION_NAMES[attention]
                warnings.warn(f"attention={attention!r} is deprecated; use "
                              f"{new_name!r}", DeprecationWarning,
                              stacklevel=2)
                attention = new_name
            check_choice("attention", attention, ATTENTION_CONVS,
                         hint="or an attention conv module")
            kwargs = dict(heads=heads, dropout=attention_dropout,
                          edge_dim=edge_dim, bias=bias, root_weight=False,
                          out_proj=True)
            kwargs.update(attention_kwargs or {})
            attention = ATTENTION_CONVS[attention](channels,
                                                   channels // heads,
                                                   **kwargs)
        self.attention = attention
        if ffn_multiplier < 0:
            raise ValueError(f"ffn_multiplier must be >= 0, got "
                             f"{ffn_multiplier}")
        self.ffn = None
        if ffn_multiplier > 0:
            self.ffn = FeedForward(channels, max(1, round(ffn_multiplier *
                                                          channels)),
                                   activation, dropout, bias)
        self.norm1 = make_norm(norm, channels, norm_eps, bias)
        self.norm2 = make_norm(norm, channels, norm_eps, bias) \
            if self.ffn is not None else None
        self.dropout = torch.nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        for module in (self.attention, self.ffn, self.norm1, self.norm2):
            if module is not None and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def _norm(self, norm, x: Tensor) -> Tensor:
        return x if norm is None else norm(x)

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_attr: Optional[Tensor] = None,
                batch: Optional[Tensor] = None, *,
                pos: Optional[Tensor] = None,
                attn_bias: Optional[Tensor] = None,
                return_attention_weights: Optional[bool] = None,
                cache: Optional[KeyValueCache] = None):
        """``pos`` (for a conv built with ``rope``), ``attn_bias``
        (``[E, H]``) and ``cache`` (decoding: ``x`` holds only new nodes;
        see :class:`~tgnn_transformers.nn.KeyValueCache`) go to the
        attention conv.  With ``return_attention_weights=True`` the result
        is ``(x, weights)``, ``weights`` as the attention conv returns them
        (``(edge_index, alpha)`` for an ``edge_index``)."""
        extra = {}
        if pos is not None:
            extra["pos"] = pos
        if attn_bias is not None:
            extra["attn_bias"] = attn_bias
        if cache is not None:
            extra["cache"] = cache
        if return_attention_weights:
            extra["return_attention_weights"] = True
        h = self._norm(self.norm1, x) if self.norm_first else x
        attended = self.attention(h, edge_index, edge_attr, batch=batch,
                                  **extra)
        if return_attention_weights:
            attended, weights = attended
        if self.norm_first:
            x = x + self.dropout(attended)
            if self.ffn is not None:
                x = x + self.dropout(self.ffn(self._norm(self.norm2, x)))
        else:
            x = self._norm(self.norm1, x + self.dropout(attended))
            if self.ffn is not None:
                x = self._norm(self.norm2, x + self.dropout(self.ffn(x)))
        return (x, weights) if return_attention_weights else x

    @classmethod
    def from_torch(cls, layer: torch.nn.TransformerEncoderLayer,
                   backend: str = "auto") -> "GraphTransformerLayer":
        """Builds the layer that computes ``layer`` on complete token graphs
        (``norm_first`` either way), as its ``forward`` defines it.

        The activation must have an equal in :data:`ACTIVATIONS` (see
        :func:`torch_activation_name`); any other is refused, never
        replaced by a near one.  (PyTorch's fused inference path computes
        the exact GELU for every ``nn.GELU``, ``approximate="tanh"``
        included; the converted layer follows the module's ``forward``.)
        """
        if not isinstance(layer, torch.nn.TransformerEncoderLayer):
            raise TypeError(f"expected torch.nn.TransformerEncoderLayer, got "
                            f"{type(layer).__name__}")
        activation = torch_activation_name(layer.activation)
        attention = MultiHeadAttentionConv.from_torch(layer.self_attn,
                                                      backend=backend)
        channels = layer.linear1.in_features
        if not (layer.dropout.p == layer.dropout1.p == layer.dropout2.p):
            raise ValueError("from_torch needs one dropout probability for "
                             "the FFN and both residual branches")
        has_bias = layer.linear1.bias is not None
        out = cls(channels, layer.self_attn.num_heads, attention,
                  ffn_multiplier=layer.linear1.out_features / channels,
                  activation=activation, norm="layer",
                  norm_first=layer.norm_first, dropout=layer.dropout.p,
                  norm_eps=layer.norm1.eps, bias=has_bias)
        out.to(device=layer.linear1.weight.device,
               dtype=layer.linear1.weight.dtype)
        out.ffn.lin1.load_state_dict(layer.linear1.state_dict())
        out.ffn.lin2.load_state_dict(layer.linear2.state_dict())
        out.norm1.load_state_dict(layer.norm1.state_dict())
        out.norm2.load_state_dict(layer.norm2.state_dict())
        out.norm2.eps = layer.norm2.eps
        out.train(layer.training)
        return out

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, heads="
                f"{self.heads}, attention={self.attention}, norm_first="
                f"{self.norm_first})")


class GraphTransformer(torch.nn.Module):
    """A stack of :class:`GraphTransformerLayer` with an optional final
    norm (usual for pre-norm stacks).

    Args:
        channels, heads, attention: as in :class:`GraphTransformerLayer`.
        num_layers: number of layers.
        final_norm: ``"layer"``, ``"rms"``, ``"batch"`` or ``None``
            (default: the layers' norm if they are pre-norm, else ``None``).
        **layer_kwargs: further arguments of :class:`GraphTransformerLayer`.
    """

    def __init__(self, channels: int, heads: int = 1, num_layers: int = 2,
                 attention: Union[str, torch.nn.Module] = "mha", *,
                 final_norm: Union[str, None, bool] = True, **layer_kwargs):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.layers = torch.nn.ModuleList([
            GraphTransformerLayer(
                channels, heads,
                copy.deepcopy(attention) if isinstance(
                    attention, torch.nn.Module) else attention,
                **layer_kwargs) for _ in range(num_layers)
        ])
        if final_norm is True:
            norm_first = layer_kwargs.get("norm_first", True)
            final_norm = layer_kwargs.get("norm", "layer") if norm_first \
                else None
        self.final_norm = make_norm(final_norm or None, channels,
                                    layer_kwargs.get("norm_eps", 1e-5),
                                    layer_kwargs.get("bias", True))
        if isinstance(attention, torch.nn.Module):
            for layer in self.layers:
                layer.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()
        if self.final_norm is not None:
            self.final_norm.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_attr: Optional[Tensor] = None,
                batch: Optional[Tensor] = None, *,
                pos: Optional[Tensor] = None,
                attn_bias: Optional[Tensor] = None,
                cache: Optional[Sequence[KeyValueCache]] = None) -> Tensor:
        """``pos`` and ``attn_bias`` go to every layer's attention conv
        (one relative-position bias shared by all layers, as in T5);
        ``cache`` is one :class:`~tgnn_transformers.nn.KeyValueCache` per
        layer (decoding: ``x`` holds only the new nodes)."""
        if cache is not None and len(cache) != len(self.layers):
            raise ValueError(f"cache needs one KeyValueCache per layer "
                             f"({len(self.layers)}), got {len(cache)}")
        for i, layer in enumerate(self.layers):
            x = layer(x, edge_index, edge_attr, batch, pos=pos,
                      attn_bias=attn_bias,
                      cache=None if cache is None else cache[i])
        return x if self.final_norm is None else self.final_norm(x)

    @classmethod
    def from_torch(cls, encoder: torch.nn.TransformerEncoder,
                   backend: str = "auto") -> "GraphTransformer":
        """Builds the stack that computes ``encoder`` on complete token
        graphs."""
        layers = [GraphTransformerLayer.from_torch(layer, backend)
                  for layer in encoder.layers]
        out = cls(layers[0].channels, layers[0].heads, len(layers),
                  final_norm=None)
        out.layers = torch.nn.ModuleList(layers)
        out.final_norm = copy.deepcopy(encoder.norm)
        out.train(encoder.training)
        return out

    @classmethod
    def from_huggingface(cls, model, backend: str = "auto"
                         ) -> "GraphTransformer":
        """Builds the stack that computes a Hugging Face encoder on sentence
        graphs: on complete graphs, the rows of ``last_hidden_state`` for
        the real (non-padding) tokens (other patterns are the same weights
        on another attention graph).

        Supported ``config.model_type`` values: ``bert``, ``roberta``,
        ``xlm-roberta``, ``camembert`` (BERT's encoder layer), ``electra``
        (with or without ``embeddings_project``), ``distilbert``,
        ``albert`` (shared layers, any groups), ``roformer`` (rotary
        queries and keys, ``rotary_value=False``) and ``mpnet`` (relative
        position bias); MiniLM checkpoints are ``bert``.  A task model
        (``...ForSequenceClassification``) gives its base model's encoder.
        Anything else raises a ``ValueError`` naming what is not reproduced:
        other model types (e.g. ``nystromformer``, ``reformer``, ``yoso``,
        ``deberta``, pre-norm variants), ``is_decoder`` /
        ``add_cross_attention``, ``position_embedding_type`` other than
        ``"absolute"``, activations without an equal in
        :data:`ACTIVATIONS` (``hidden_act`` ``gelu_new``, ``gelu_fast``,
        ``gelu_pytorch_tanh``, ... map to ``"gelu_tanh"``), and modules that
        are not the ``transformers`` library's own for the model type.

        The input is :func:`tgnn_transformers.adapters.encode_as_graphs`'s
        output ``g``: ``x`` the first layer's input (the embeddings, then
        ELECTRA's / RoFormer's ``embeddings_project`` or ALBERT's
        ``embedding_hidden_mapping_in``), so that
        ``encoder(g.x, g.edge_index, batch=g.batch, pos=g.pos,
        attn_bias=g.attn_bias)`` gives the model's hidden states; ``pos``
        is set for RoFormer (the convs rotate by position), ``attn_bias``
        for MPNet (its bias on each edge), both ``None`` otherwise.

        The outputs are reproduced in eval mode.  In training mode the
        dropouts are :class:`GraphTransformerLayer`'s (both residual
        branches), where DistilBERT drops out only the feed-forward branch
        and ALBERT only the attention branch.
        """
        from .huggingface import graph_transformer_from_huggingface
        return graph_transformer_from_huggingface(cls, model, backend)
