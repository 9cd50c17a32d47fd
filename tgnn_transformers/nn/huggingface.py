r"""Hugging Face encoders as graph transformer layers.

A BERT layer is a post-norm transformer block: multi-head attention over the
sentence, an output projection, residual and LayerNorm, then a feed-forward
network, residual and LayerNorm.  On the complete graph of a sentence's
tokens that is :class:`GraphTransformerLayer` with ``norm_first=False``
around a :class:`MultiHeadAttentionConv` in the transformer form
(``out_proj=True, root_weight=False``).  This module copies the weights
across, one small table entry per model family (:data:`FAMILIES`: where each
family keeps its weights, which settings change its attention); it reads
modules by name and does not import ``transformers``.

Supported ``config.model_type`` values (:data:`SUPPORTED_MODEL_TYPES`):

* ``bert``, ``roberta``, ``xlm-roberta``, ``camembert``: BERT's encoder
  layer exactly (their embeddings differ; they stay the model's);
* ``electra``: BERT's layers, after ``embeddings_project`` when
  ``embedding_size != hidden_size``;
* ``distilbert``: its own module names, no token types;
* ``albert``: one set of layer weights shared by all layers (any
  ``num_hidden_groups`` / ``inner_group_num``: the same module objects
  repeat in the stack), after ``encoder.embedding_hidden_mapping_in``;
* ``roformer``: rotary position embedding of the queries and keys, by this
  package's :class:`~tgnn_transformers.nn.RotaryEmbedding` (see
  :func:`interleaved_to_rotate_half`), after ``embeddings_project`` when
  there is one;
* ``mpnet``: a T5-bucketed relative-position bias, one table shared by all
  layers, passed to the convs as ``attn_bias``
  (:class:`~tgnn_transformers.nn.RelativePositionBias` over the model's own
  table).

The embedding projections and the relative-position bias are computed with
the embeddings, by :func:`tgnn_transformers.adapters.encode_as_graphs`: they
act on each token (or each edge) alone, and keeping them there leaves the
graph encoder a plain stack of width ``hidden_size``.

Anything else is refused with a :class:`ValueError` that names what is not
reproduced: other model types (Nyström, LSH, disentangled or pre-norm
attention, ...), decoders and cross-attention, relative-key position
embeddings, activations without an equal in :class:`FeedForward`, and models
whose modules are not the ``transformers`` library's own for their type
(replaced attention, adapters, remote code).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import (TYPE_CHECKING, Callable, Dict, List, Optional, Tuple)

import torch
from torch import Tensor

from .multi_head_attention_conv import MultiHeadAttentionConv
from .positional import RelativePositionBias, RotaryEmbedding

if TYPE_CHECKING:  # pragma: no cover
    from .graph_transformer import GraphTransformer, GraphTransformerLayer

#: Hugging Face ``hidden_act`` values with an equal activation of
#: :class:`FeedForward` (equal up to float rounding: the same formula), and
#: the class ``transformers.activations.ACT2FN`` builds for each, which the
#: layers must hold.  ``gelu_10`` (clipped), ``quick_gelu`` (a sigmoid
#: approximation), ``mish`` etc. have none and are refused.
HF_ACTIVATIONS: Dict[str, Tuple[str, str]] = {
    "gelu": ("gelu", "GELUActivation"),
    "gelu_python": ("gelu", "GELUActivation"),
    "gelu_new": ("gelu_tanh", "NewGELUActivation"),
    "gelu_pytorch_tanh": ("gelu_tanh", "GELUTanh"),
    "gelu_python_tanh": ("gelu_tanh", "GELUTanh"),
    "gelu_accurate": ("gelu_tanh", "AccurateGELUActivation"),
    "gelu_fast": ("gelu_tanh", "FastGELUActivation"),
    "relu": ("relu", "ReLU"),
    "silu": ("silu", "SiLUActivation"),
    "swish": ("silu", "SiLU"),
}

# MPNetEncoder.compute_position_bias buckets with these constants whatever
# config.relative_attention_num_buckets says.
_MPNET_BUCKETS, _MPNET_MAX_DISTANCE = 32, 128

#: Why some BERT-shaped model types are refused (the error says so).
_REFUSAL_REASONS = {
    "nystromformer": "Nyström approximation of the softmax attention",
    "yoso": "LSH-sampled (YOSO) attention",
    "reformer": "LSH / chunked attention and reversible layers",
    "deberta": "disentangled content/position attention",
    "deberta-v2": "disentangled content/position attention",
    "roberta-prelayernorm": "pre-norm layers",
    "xlm-roberta-xl": "pre-norm layers",
    "megatron-bert": "pre-norm layers",
    "convbert": "span-based dynamic convolution heads",
}


@dataclass(frozen=True)
class LayerWeights:
    """Where one family's encoder layer keeps each part (attribute paths
    from the layer)."""
    query: str
    key: str
    value: str
    attention_output: str
    attention_norm: str
    ffn_in: str
    ffn_out: str
    ffn_norm: str
    activation: str
    attention_dropout: str
    dropout: str


_BERT_LAYER = LayerWeights(
    query="attention.self.query", key="attention.self.key",
    value="attention.self.value", attention_output="attention.output.dense",
    attention_norm="attention.output.LayerNorm", ffn_in="intermediate.dense",
    ffn_out="output.dense", ffn_norm="output.LayerNorm",
    activation="intermediate.intermediate_act_fn",
    attention_dropout="attention.self.dropout", dropout="output.dropout")
_DISTILBERT_LAYER = LayerWeights(
    query="attention.q_lin", key="attention.k_lin", value="attention.v_lin",
    attention_output="attention.out_lin", attention_norm="sa_layer_norm",
    ffn_in="ffn.lin1", ffn_out="ffn.lin2", ffn_norm="output_layer_norm",
    activation="ffn.activation", attention_dropout="attention.dropout",
    dropout="ffn.dropout")
_ALBERT_LAYER = LayerWeights(
    query="attention.query", key="attention.key", value="attention.value",
    attention_output="attention.dense", attention_norm="attention.LayerNorm",
    ffn_in="ffn", ffn_out="ffn_output", ffn_norm="full_layer_layer_norm",
    activation="activation", attention_dropout="attention.attention_dropout",
    dropout="attention.output_dropout")
_MPNET_LAYER = LayerWeights(
    query="attention.attn.q", key="attention.attn.k", value="attention.attn.v",
    attention_output="attention.attn.o", attention_norm="attention.LayerNorm",
    ffn_in="intermediate.dense", ffn_out="output.dense",
    ffn_norm="output.LayerNorm",
    activation="intermediate.intermediate_act_fn",
    attention_dropout="attention.attn.dropout", dropout="output.dropout")


# ----------------------------------------------------------------------
# per-family pieces: the layers in running order, the input projection,
# the settings that change the attention
# ----------------------------------------------------------------------
def _encoder_layers(model) -> List[torch.nn.Module]:
    return list(model.encoder.layer)


def _distilbert_layers(model) -> List[torch.nn.Module]:
    return list(model.transformer.layer)


def _albert_layers(model) -> List[torch.nn.Module]:
    """``AlbertTransformer.forward``: step ``i`` of ``num_hidden_layers``
    runs group ``int(i / (num_hidden_layers / num_hidden_groups))``, whose
    ``inner_group_num`` layers run in turn; shared modules repeat."""
    config = model.config
    groups = model.encoder.albert_layer_groups
    steps_per_group = config.num_hidden_layers / config.num_hidden_groups
    return [inner for step in range(config.num_hidden_layers)
            for inner in groups[int(step / steps_per_group)].albert_layers]


def _no_projection(model) -> Optional[torch.nn.Module]:
    return None


def _embeddings_project(model) -> Optional[torch.nn.Module]:
    # ElectraModel / RoFormerModel have it only when embedding_size differs
    # from hidden_size, and then apply it right after the embeddings.
    return getattr(model, "embeddings_project", None)


def _albert_mapping_in(model) -> torch.nn.Module:
    # AlbertTransformer applies it first, whatever the sizes.
    return model.encoder.embedding_hidden_mapping_in


def _refuse_decoders(model) -> None:
    config = model.config
    found = [f"{setting}=True ({what})" for setting, what in (
        ("is_decoder", "causal self-attention"),
        ("add_cross_attention", "cross-attention"))
        if getattr(config, setting, False)]
    if found:
        raise ValueError(
            f"from_huggingface converts encoders (is_decoder=False, "
            f"add_cross_attention=False); this {config.model_type} model has "
            f"{' and '.join(found)}")


def _refuse_relative_key(model) -> None:
    # transformers 5 no longer implements BERT's relative_key(_query)
    # attention, but a checkpoint configured with it was trained with it.
    kind = getattr(model.config, "position_embedding_type", None)
    if kind not in (None, "absolute"):
        raise ValueError(
            f"from_huggingface supports position_embedding_type='absolute' "
            f"(positions added by the embeddings module), got "
            f"position_embedding_type={kind!r}: relative position scores "
            f"inside the attention are not reproduced")


def _refuse_rotary_value(model) -> None:
    if getattr(model.config, "rotary_value", False):
        raise ValueError(
            "from_huggingface supports RoFormer with rotary_value=False; got "
            "rotary_value=True (the values are rotated too, the graph convs "
            "rotate queries and keys only)")


def _rotary_table(length: int, head_dim: int) -> Tensor:
    r"""RoFormer's sinusoid table ``[length, head_dim]``:
    :math:`\sin(p\theta_i)` in the first half, :math:`\cos(p\theta_i)` in
    the second, :math:`\theta_i = 10000^{-2i/C}`."""
    angle = (torch.arange(length, dtype=torch.float64)[:, None] *
             10000.0**(-torch.arange(head_dim // 2, dtype=torch.float64) *
                       2 / head_dim)[None, :])
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


def _check_rotary_table(model) -> None:
    """The convs compute RoFormer's sinusoids from the positions, so the
    model's frozen table (``encoder.embed_positions``) must hold them."""
    table = model.encoder.embed_positions.weight
    length, head_dim = table.shape
    if head_dim % 2:
        raise ValueError(f"from_huggingface needs an even RoFormer head "
                         f"width for the rotary embedding, got {head_dim}")
    expected = _rotary_table(length, head_dim)
    if not torch.allclose(table.detach().double().cpu(), expected,
                          atol=1e-5, rtol=0):
        raise ValueError(
            "this roformer model's encoder.embed_positions table is not "
            "RoFormer's sinusoids (sin(p θ_i) | cos(p θ_i), θ_i = "
            "10000^(-2i/C)); the rotary convs compute those, so its "
            "attention would not be reproduced")


def _check_mpnet_buckets(model) -> None:
    buckets = model.config.relative_attention_num_buckets
    if buckets < _MPNET_BUCKETS:
        raise ValueError(
            f"MPNet buckets relative positions into {_MPNET_BUCKETS} buckets"
            f" whatever its config says, so relative_attention_num_buckets "
            f"must be >= {_MPNET_BUCKETS}; got {buckets}")


def _mpnet_position_bias(model) -> RelativePositionBias:
    """MPNet's bias (``MPNetEncoder.compute_position_bias``): T5's
    bidirectional buckets of key minus query position, 32 buckets, maximum
    distance 128, as :func:`relative_position_bucket` computes them, looked
    up in the model's own ``encoder.relative_attention_bias`` table (shared,
    so it trains with the model; rows past 32 are never used, as in
    MPNet)."""
    table = model.encoder.relative_attention_bias
    bias = RelativePositionBias(table.embedding_dim,
                                num_buckets=_MPNET_BUCKETS,
                                max_distance=_MPNET_MAX_DISTANCE,
                                bidirectional=True)
    bias.embedding = table
    return bias


@dataclass(frozen=True)
class Family:
    """How one Hugging Face model family maps onto graph layers."""
    package: str
    """``transformers.models.<package>``: where its modules must come from"""
    layer: LayerWeights
    """where each encoder layer keeps its weights"""
    layers: Callable[..., List[torch.nn.Module]]
    """base model -> its encoder layers in the order they run"""
    activation_setting: str = "hidden_act"
    """the config attribute that names the activation"""
    input_projection: Callable[..., Optional[torch.nn.Module]] = \
        _no_projection
    """base model -> the token-wise map between embeddings and layers"""
    token_types: bool = True
    """whether the embeddings take ``token_type_ids``"""
    rotary: bool = False
    """queries and keys rotated by position inside the attention"""
    position_bias: Optional[Callable[..., RelativePositionBias]] = None
    """base model -> its relative-position bias, shared by all layers"""
    checks: Tuple[Callable[..., None], ...] = ()
    """raise ``ValueError`` for settings that change the attention"""

    def embed(self, model, input_ids: Tensor,
              token_type_ids: Optional[Tensor] = None) -> Tensor:
        """``[B, L, hidden_size]``: the input of the first encoder layer
        (embeddings, then the family's projection if any)."""
        kwargs = {}
        if self.token_types and token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = model.embeddings(input_ids=input_ids, **kwargs)
        projection = self.input_projection(model)
        return hidden if projection is None else projection(hidden)


_BERT_CHECKS = (_refuse_decoders, _refuse_relative_key)

#: ``config.model_type`` -> :class:`Family`, the one table of conversions.
FAMILIES: Dict[str, Family] = {
    "bert": Family("bert", _BERT_LAYER, _encoder_layers, checks=_BERT_CHECKS),
    "roberta": Family("roberta", _BERT_LAYER, _encoder_layers,
                      checks=_BERT_CHECKS),
    "xlm-roberta": Family("xlm_roberta", _BERT_LAYER, _encoder_layers,
                          checks=_BERT_CHECKS),
    "camembert": Family("camembert", _BERT_LAYER, _encoder_layers,
                        checks=_BERT_CHECKS),
    "electra": Family("electra", _BERT_LAYER, _encoder_layers,
                      input_projection=_embeddings_project,
                      checks=_BERT_CHECKS),
    "distilbert": Family("distilbert", _DISTILBERT_LAYER, _distilbert_layers,
                         activation_setting="activation", token_types=False),
    "albert": Family("albert", _ALBERT_LAYER, _albert_layers,
                     input_projection=_albert_mapping_in),
    "roformer": Family("roformer", _BERT_LAYER, _encoder_layers,
                       input_projection=_embeddings_project, rotary=True,
                       checks=(_refuse_decoders, _refuse_rotary_value,
                               _check_rotary_table)),
    "mpnet": Family("mpnet", _MPNET_LAYER, _encoder_layers,
                    token_types=False, position_bias=_mpnet_position_bias,
                    checks=(_check_mpnet_buckets, )),
}
#: The ``config.model_type`` values :meth:`GraphTransformer.from_huggingface`
#: converts.
SUPPORTED_MODEL_TYPES: Tuple[str, ...] = tuple(FAMILIES)


# ----------------------------------------------------------------------
# checks shared by all families
# ----------------------------------------------------------------------
def _unsupported_type(model_type: str, model) -> ValueError:
    reason = _REFUSAL_REASONS.get(model_type)
    why = f" ({reason})" if reason else ""
    return ValueError(
        f"from_huggingface does not support model_type={model_type!r}"
        f"{why} ({type(model).__name__}); supported model types: "
        f"{', '.join(SUPPORTED_MODEL_TYPES)}")


def _check_modules(model, family: Family) -> None:
    """Every module must be the ``transformers`` library's own for the
    family (or a plain ``torch.nn`` one): a replaced attention, an adapter
    or remote code under a supported ``model_type`` would be copied as if it
    were the family's and silently give other outputs."""
    allowed = ("torch.nn.", "transformers.activations",
               f"transformers.models.{family.package}.")
    for name, module in model.named_modules():
        cls = type(module)
        if not cls.__module__.startswith(allowed):
            raise ValueError(
                f"this {model.config.model_type} model's module "
                f"{name or '<root>'!r} is a {cls.__module__}."
                f"{cls.__qualname__}, not one of transformers' "
                f"{family.package} modules: from_huggingface reproduces "
                f"the library's own {model.config.model_type} layers only "
                f"(a replaced attention, an adapter or remote code would "
                f"be copied wrongly)")


def huggingface_family(model) -> Tuple[torch.nn.Module, Family]:
    """``(base model, family)`` of a Hugging Face model (a task model such
    as ``BertForSequenceClassification`` gives its base ``BertModel``), or
    a ``ValueError`` naming what is not supported."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if not isinstance(model_type, str):
        raise TypeError(f"expected a Hugging Face transformers model (with "
                        f".config.model_type), got {type(model).__name__}")
    family = FAMILIES.get(model_type)
    if family is None:
        raise _unsupported_type(model_type, model)
    base = getattr(model, "base_model", model)
    _check_modules(base, family)
    for check in family.checks:
        check(base)
    return base, family


def _activation(model, family: Family, layers) -> str:
    """The :class:`FeedForward` activation equal to the layers'."""
    setting = family.activation_setting
    name = getattr(model.config, setting, None)
    if not isinstance(name, str) or name not in HF_ACTIVATIONS:
        raise ValueError(
            f"from_huggingface supports {setting} in "
            f"{sorted(HF_ACTIVATIONS)} (activations with an equal in "
            f"FeedForward), got {setting}={name!r}")
    activation, expected_class = HF_ACTIVATIONS[name]
    for layer in layers:
        module = operator.attrgetter(family.layer.activation)(layer)
        if type(module).__name__ != expected_class:
            raise ValueError(
                f"config.{setting}={name!r} builds {expected_class}, but "
                f"the layers hold {type(module).__name__}: the config does "
                f"not describe the model")
    return activation


# ----------------------------------------------------------------------
# the conversion
# ----------------------------------------------------------------------
def interleaved_to_rotate_half(heads: int, head_dim: int) -> Tensor:
    r"""Output-channel order of a query/key projection that turns RoFormer's
    interleaved rotary pairs :math:`(2i, 2i+1)` into the rotate-half pairs
    :math:`(i, i + C/2)` of :class:`RotaryEmbedding`, head by head.

    Both rotate pair :math:`i` by :math:`p\theta_i`,
    :math:`\theta_i = b^{-2i/C}`, so with rows ``order`` of
    :math:`W_Q, W_K` (and their biases) the rotate-half RoPE of the
    permuted vectors is the interleaved RoPE of the originals, permuted.
    The same permutation of queries and keys leaves every
    :math:`\mathbf{q}\cdot\mathbf{k}`, hence the attention, unchanged;
    values are not touched."""
    within = torch.cat([torch.arange(0, head_dim, 2),
                        torch.arange(1, head_dim, 2)])
    return (torch.arange(heads)[:, None] * head_dim + within).flatten()


def _copy_linear(ours: torch.nn.Module, theirs: torch.nn.Module,
                 rows: Optional[Tensor] = None) -> None:
    weight, bias = theirs.weight, theirs.bias
    if rows is not None:
        rows = rows.to(weight.device)
        weight = weight.index_select(0, rows)
        bias = None if bias is None else bias.index_select(0, rows)
    ours.weight.copy_(weight)
    if bias is not None:
        ours.bias.copy_(bias)


def _attention_conv(layer, names: LayerWeights, heads: int, rotary: bool,
                    backend: str) -> MultiHeadAttentionConv:
    """The conv equal to a layer's self-attention and its output
    projection (not its norm)."""
    part = operator.attrgetter
    query, key, value, output = (part(path)(layer) for path in (
        names.query, names.key, names.value, names.attention_output))
    width = query.in_features
    for name, linear in (("query", query), ("key", key), ("value", value),
                         ("attention output", output)):
        if tuple(linear.weight.shape) != (width, width):
            raise ValueError(
                f"from_huggingface needs square {width} x {width} attention "
                f"projections (all heads kept); the {name} projection is "
                f"{tuple(linear.weight.shape)} (pruned heads?)")
    if width % heads:
        raise ValueError(f"{heads} heads do not divide the width {width}")
    head_dim = width // heads
    conv = MultiHeadAttentionConv(
        width, head_dim, heads, dropout=part(names.attention_dropout)(
            layer).p, bias=query.bias is not None, root_weight=False,
        out_proj=True, backend=backend,
        rope=RotaryEmbedding(head_dim) if rotary else False)
    conv.to(device=output.weight.device, dtype=output.weight.dtype)
    rows = interleaved_to_rotate_half(heads, head_dim) if rotary else None
    with torch.no_grad():
        _copy_linear(conv.lin_query, query, rows)
        _copy_linear(conv.lin_key, key, rows)
        _copy_linear(conv.lin_value, value)
        _copy_linear(conv.out_proj, output)
    return conv


def _graph_layer(layer, family: Family, heads: int, activation: str,
                 backend: str) -> "GraphTransformerLayer":
    """A :class:`GraphTransformerLayer` equal to one encoder layer."""
    from .graph_transformer import GraphTransformerLayer
    names = family.layer
    part = operator.attrgetter
    attention = _attention_conv(layer, names, heads, family.rotary, backend)
    ffn_in, ffn_out = part(names.ffn_in)(layer), part(names.ffn_out)(layer)
    norm1, norm2 = (part(names.attention_norm)(layer),
                    part(names.ffn_norm)(layer))
    width = ffn_in.in_features
    out = GraphTransformerLayer(
        width, heads, attention, ffn_multiplier=ffn_in.out_features / width,
        activation=activation, norm="layer", norm_first=False,
        dropout=part(names.dropout)(layer).p, norm_eps=norm1.eps,
        bias=ffn_in.bias is not None)
    # None of these families has dropout between the two FFN linears.
    out.ffn.dropout.p = 0.0
    out.to(device=ffn_out.weight.device, dtype=ffn_out.weight.dtype)
    out.ffn.lin1.load_state_dict(ffn_in.state_dict())
    out.ffn.lin2.load_state_dict(ffn_out.state_dict())
    out.norm1.load_state_dict(norm1.state_dict())
    out.norm2.load_state_dict(norm2.state_dict())
    out.norm2.eps = norm2.eps
    out.train(layer.training)
    return out


def graph_transformer_from_huggingface(cls, model, backend: str = "auto"
                                       ) -> "GraphTransformer":
    """``cls`` (a :class:`GraphTransformer`) equal to ``model``'s encoder
    (see :meth:`GraphTransformer.from_huggingface`)."""
    base, family = huggingface_family(model)
    hf_layers = family.layers(base)
    activation = _activation(base, family, hf_layers)
    heads = base.config.num_attention_heads
    # ALBERT runs the same layer modules several times: convert each once
    # and repeat it, so the graph stack shares its weights the same way.
    converted: Dict[int, torch.nn.Module] = {}
    layers = []
    for layer in hf_layers:
        if id(layer) not in converted:
            converted[id(layer)] = _graph_layer(layer, family, heads,
                                                activation, backend)
        layers.append(converted[id(layer)])
    out = cls(layers[0].channels, layers[0].heads, len(layers),
              final_norm=None)
    out.layers = torch.nn.ModuleList(layers)
    out.train(model.training)
    return out
