"""Tokenizer output as a batch of sentence graphs, for a pretrained encoder
run as graph layers (:meth:`GraphTransformer.from_huggingface`)."""
from __future__ import annotations

from typing import Mapping, NamedTuple, Optional

import torch
from torch import Tensor

from ..functional import complete_edge_index, sequence_edge_index
from ..nn.huggingface import huggingface_family


class SentenceGraphs(NamedTuple):
    """A batch of sentence graphs over the real (non-padding) tokens; the
    arguments of the graph encoder of
    :meth:`~tgnn_transformers.nn.GraphTransformer.from_huggingface`:
    ``encoder(g.x, g.edge_index, batch=g.batch, pos=g.pos,
    attn_bias=g.attn_bias)``."""
    x: Tensor
    """``[N, C]`` the real tokens' input to the first encoder layer: the
    embeddings module's output, then the model's embedding projection if it
    has one (ELECTRA's and RoFormer's ``embeddings_project``, ALBERT's
    ``embedding_hidden_mapping_in``)"""
    edge_index: Tensor
    """``[2, E]`` every sentence's token graph (``j -> i``)"""
    batch: Tensor
    """``[N]`` sentence of every token"""
    token_mask: Tensor
    """``[B, L]`` bool, where the real tokens sit in the padded batch"""
    pos: Optional[Tensor] = None
    """``[N]`` each token's position (its column in the padded batch, the
    position the model's attention uses) when the attention rotates by
    position (RoFormer); ``None`` otherwise"""
    attn_bias: Optional[Tensor] = None
    """``[E, H]`` the relative-position score bias of every edge when the
    model adds one in its attention (MPNet); ``None`` otherwise"""


def sentence_edge_index(lengths: Tensor, pattern: str = "full",
                        **pattern_options) -> Tensor:
    """Edges of a batch of sentence graphs with ``lengths`` tokens each,
    nodes numbered sentence after sentence (PyG's ``Batch`` layout)."""
    lengths = torch.as_tensor(lengths).long().cpu()
    if pattern in ("full", "causal") and not pattern_options:
        return complete_edge_index(lengths, causal=pattern == "causal")
    parts, offset = [], 0
    for length in lengths.tolist():
        parts.append(sequence_edge_index(length, pattern, **pattern_options)
                     + offset)
        offset += length
    return torch.cat(parts, dim=1) if parts else \
        torch.zeros(2, 0, dtype=torch.long)


@torch.no_grad()
def _check_mask(mask: Tensor) -> Tensor:
    if mask.dim() != 2:
        raise ValueError(f"attention_mask must have shape [B, L], got "
                         f"{list(mask.shape)}")
    return mask.bool()


def encode_as_graphs(model, encoding: Mapping[str, Tensor],
                     pattern: str = "full",
                     **pattern_options) -> SentenceGraphs:
    """Runs ``model``'s embedding step on tokenizer output and returns the
    real tokens as a batch of sentence graphs of ``pattern`` (see
    :func:`~tgnn_transformers.functional.sequence_edge_index`).

    ``model`` is one of the Hugging Face model types
    :meth:`GraphTransformer.from_huggingface` supports (others raise its
    ``ValueError``).  The embedding step is the embeddings module, then the
    model's token-wise projection to the hidden size where it has one; for
    RoFormer the result holds the token positions (``pos``), for MPNet its
    relative-position bias on every edge (``attn_bias``).  With the default
    ``"full"`` pattern the graph encoder maps them to the rows of the
    model's ``last_hidden_state[token_mask]``.
    """
    base, family = huggingface_family(model)
    if "input_ids" not in encoding:
        raise ValueError("encoding must hold 'input_ids' (a tokenizer's "
                         "output with return_tensors='pt')")
    input_ids = encoding["input_ids"]
    mask = encoding.get("attention_mask")
    mask = torch.ones_like(input_ids, dtype=torch.bool) if mask is None \
        else _check_mask(mask)
    hidden = family.embed(base, input_ids, encoding.get("token_type_ids"))
    lengths = mask.sum(dim=1)
    batch = torch.repeat_interleave(
        torch.arange(lengths.numel(), device=input_ids.device), lengths)
    edge_index = sentence_edge_index(lengths, pattern,
                                     **pattern_options).to(input_ids.device)
    # The attention's positions are the columns of the padded batch (what
    # RoFormer's rotary table and MPNet's bias are indexed by).
    columns = torch.arange(input_ids.size(1), device=input_ids.device)
    positions = columns.expand_as(input_ids)[mask]
    attn_bias = None
    if family.position_bias is not None:
        attn_bias = family.position_bias(base)(edge_index, positions)
    return SentenceGraphs(hidden[mask], edge_index, batch, mask,
                          positions if family.rotary else None, attn_bias)
