"""Tokenizer output as a batch of sentence graphs, for a pretrained encoder
run as graph layers (:meth:`GraphTransformer.from_huggingface`)."""
from __future__ import annotations

from typing import Mapping, NamedTuple

import torch
from torch import Tensor

from ..functional import complete_edge_index, sequence_edge_index


class SentenceGraphs(NamedTuple):
    """A batch of sentence graphs over the real (non-padding) tokens."""
    x: Tensor
    """``[N, C]`` the embeddings module's output for the real tokens"""
    edge_index: Tensor
    """``[2, E]`` every sentence's token graph (``j -> i``)"""
    batch: Tensor
    """``[N]`` sentence of every token"""
    token_mask: Tensor
    """``[B, L]`` bool, where the real tokens sit in the padded batch"""


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
    """Runs ``model.embeddings`` on tokenizer output and returns the real
    tokens' embeddings as a batch of sentence graphs of ``pattern`` (see
    :func:`~tgnn_transformers.functional.sequence_edge_index`).

    With the default ``"full"`` pattern, the graph encoder of
    :meth:`GraphTransformer.from_huggingface` maps ``x`` to the rows of the
    model's ``last_hidden_state[token_mask]``.
    """
    if "input_ids" not in encoding:
        raise ValueError("encoding must hold 'input_ids' (a tokenizer's "
                         "output with return_tensors='pt')")
    input_ids = encoding["input_ids"]
    mask = encoding.get("attention_mask")
    mask = torch.ones_like(input_ids, dtype=torch.bool) if mask is None \
        else _check_mask(mask)
    kwargs = {}
    if encoding.get("token_type_ids") is not None:
        kwargs["token_type_ids"] = encoding["token_type_ids"]
    hidden = model.embeddings(input_ids=input_ids, **kwargs)
    lengths = mask.sum(dim=1)
    batch = torch.repeat_interleave(
        torch.arange(lengths.numel(), device=input_ids.device), lengths)
    edge_index = sentence_edge_index(lengths, pattern,
                                     **pattern_options).to(input_ids.device)
    return SentenceGraphs(hidden[mask], edge_index, batch, mask)
