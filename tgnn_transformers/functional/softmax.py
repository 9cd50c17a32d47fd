"""Softmax over the incoming edges of each node."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def _expand_index(index: Tensor, like: Tensor) -> Tensor:
    return index.view((-1, ) + (1, ) * (like.dim() - 1)).expand_as(like)


def segment_max(src: Tensor, index: Tensor, num_nodes: int) -> Tensor:
    """Per-node maximum of ``src`` over the rows that share ``index``;
    ``-inf`` for nodes that have none."""
    out = src.new_full((num_nodes, ) + src.shape[1:], float("-inf"))
    return out.scatter_reduce(0, _expand_index(index, src), src, "amax",
                              include_self=True)


def segment_sum(src: Tensor, index: Tensor, num_nodes: int) -> Tensor:
    """Per-node sum of ``src`` over the rows that share ``index``."""
    out = src.new_zeros((num_nodes, ) + src.shape[1:])
    return out.index_add_(0, index, src)


def edge_softmax(scores: Tensor, index: Tensor,
                 num_nodes: Optional[int] = None) -> Tensor:
    r"""Softmax of edge scores over the edges that share a target node.

    .. math::
        \alpha_{e} = \frac{\exp(s_e - m_i)}{\sum_{e' : \mathrm{index}[e'] = i}
        \exp(s_{e'} - m_i)}, \qquad m_i = \max_{e' \to i} s_{e'}

    Args:
        scores: ``[E]`` or ``[E, H]`` edge scores (one column per head).
        index: ``[E]`` target node of each edge (``edge_index[1]``).
        num_nodes: number of target nodes; defaults to ``index.max() + 1``.

    Returns:
        Tensor of the shape of ``scores``.  Subtracting the per-target
        maximum keeps large logits finite; nodes without incoming edges
        simply receive no weight, and a target whose scores are all ``-inf``
        (every edge masked) gets all-zero weights instead of NaN.
    """
    if index.dim() != 1 or index.numel() != scores.size(0):
        raise ValueError(f"index must have shape [{scores.size(0)}] (the "
                         f"target of each edge), got {list(index.shape)}")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be floating point, got {scores.dtype}")
    if num_nodes is None:
        num_nodes = int(index.max()) + 1 if index.numel() > 0 else 0
    # The shift is a constant per segment: it changes nothing in the result,
    # so it needs no gradient.
    shift = segment_max(scores.detach(), index, num_nodes)
    shift = shift.masked_fill(torch.isinf(shift), 0.0)
    weights = (scores - shift[index]).exp()
    denom = segment_sum(weights, index, num_nodes)
    # denom >= 1 wherever a finite score exists; the clamp only turns 0/0
    # (all scores -inf) into 0.
    return weights / denom.clamp_min(torch.finfo(denom.dtype).tiny)[index]
