"""Hugging Face BERT-family encoders as graph transformer layers.

A BERT layer is a post-norm transformer block: multi-head attention over the
sentence, an output projection, residual and LayerNorm, then a GELU
feed-forward network, residual and LayerNorm.  On the complete graph of a
sentence's tokens that is :class:`GraphTransformerLayer` with
``norm_first=False`` around a :class:`MultiHeadAttentionConv` in the
transformer form (``out_proj=True, root_weight=False``).  This module copies
the weights across; it reads the modules by their BERT names and does not
import ``transformers``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .multi_head_attention_conv import MultiHeadAttentionConv

if TYPE_CHECKING:  # pragma: no cover
    from .graph_transformer import GraphTransformer, GraphTransformerLayer

#: ``config.hidden_act`` values and the activation that equals them.
_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "silu": "silu",
                "swish": "silu"}


def _encoder_of(model):
    """The ``BertEncoder`` of a ``BertModel`` (or the encoder itself)."""
    encoder = getattr(model, "encoder", model)
    if not hasattr(encoder, "layer") or not hasattr(model, "config"):
        raise TypeError(f"expected a Hugging Face BERT-family model (a "
                        f"BertModel with .config and .encoder.layer), got "
                        f"{type(model).__name__}")
    return encoder


def _check_config(config) -> str:
    act = getattr(config, "hidden_act", None)
    if act not in _ACTIVATIONS:
        raise ValueError(f"from_huggingface supports hidden_act in "
                         f"{sorted(_ACTIVATIONS)}, got {act!r}")
    kind = getattr(config, "position_embedding_type", "absolute")
    if kind not in (None, "absolute"):
        raise ValueError("from_huggingface supports absolute position "
                         f"embeddings (added by the embeddings module), got "
                         f"position_embedding_type={kind!r}")
    if getattr(config, "is_decoder", False):
        raise ValueError("from_huggingface converts encoders; this model is "
                         "configured as a decoder")
    return _ACTIVATIONS[act]


def attention_from_bert(attention, heads: int,
                        backend: str = "auto") -> MultiHeadAttentionConv:
    """The conv that computes a ``BertAttention``'s self-attention and its
    output projection ``attention.output.dense`` (not its LayerNorm)."""
    self_attention, dense = attention.self, attention.output.dense
    width = self_attention.query.in_features
    conv = MultiHeadAttentionConv(
        width, width // heads, heads, dropout=self_attention.dropout.p,
        bias=self_attention.query.bias is not None, root_weight=False,
        out_proj=True, backend=backend)
    conv.to(device=dense.weight.device, dtype=dense.weight.dtype)
    with torch.no_grad():
        for ours, theirs in ((conv.lin_query, self_attention.query),
                             (conv.lin_key, self_attention.key),
                             (conv.lin_value, self_attention.value),
                             (conv.out_proj, dense)):
            ours.weight.copy_(theirs.weight)
            if theirs.bias is not None:
                ours.bias.copy_(theirs.bias)
    return conv


def layer_from_bert(layer, config, backend: str = "auto"
                    ) -> "GraphTransformerLayer":
    """A :class:`GraphTransformerLayer` equal to one ``BertLayer``."""
    from .graph_transformer import GraphTransformerLayer
    activation = _check_config(config)
    heads = config.num_attention_heads
    attention = attention_from_bert(layer.attention, heads, backend)
    width = layer.intermediate.dense.in_features
    out = GraphTransformerLayer(
        width, heads, attention,
        ffn_multiplier=layer.intermediate.dense.out_features / width,
        activation=activation, norm="layer", norm_first=False,
        dropout=layer.output.dropout.p, norm_eps=config.layer_norm_eps,
        bias=layer.intermediate.dense.bias is not None)
    reference = layer.output.dense.weight
    out.to(device=reference.device, dtype=reference.dtype)
    out.ffn.lin1.load_state_dict(layer.intermediate.dense.state_dict())
    out.ffn.lin2.load_state_dict(layer.output.dense.state_dict())
    out.norm1.load_state_dict(layer.attention.output.LayerNorm.state_dict())
    out.norm2.load_state_dict(layer.output.LayerNorm.state_dict())
    out.train(layer.training)
    return out


def graph_transformer_from_bert(cls, model, backend: str = "auto"
                                ) -> "GraphTransformer":
    """``cls`` (a :class:`GraphTransformer`) equal to ``model``'s encoder."""
    encoder = _encoder_of(model)
    layers = [layer_from_bert(layer, model.config, backend)
              for layer in encoder.layer]
    out = cls(layers[0].channels, layers[0].heads, len(layers),
              final_norm=None)
    out.layers = torch.nn.ModuleList(layers)
    out.train(model.training)
    return out
