"""FlexAttention for batches of token graphs (``backend="flex"``).

When the graph is a batch of token graphs of a known pattern -- complete,
causal, or a (dilated) sliding window as :func:`sequence_edge_index` builds
them, ragged lengths allowed -- the attention runs as
:func:`torch.nn.attention.flex_attention.flex_attention` on the padded
``[B, H, L, C]`` layout with a block mask built from the pattern (cached
with the ``edge_index``), instead of per-edge work.

The pattern is recognised from the edges themselves (each target's sources
are exactly its window ``i + k * dilation``, ``|k| <= window``, inside its
sequence), so any ``edge_index`` gives the same answer as the sparse path
or is refused.  Torch runs FlexAttention's backward only on GPUs: on the
CPU it is forward-only (inputs that need gradients are refused).
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ._cache import cached_on
from .patterns import complete_edge_index, token_positions


class FlexPattern(NamedTuple):
    kind: str  # "full", "causal" or "window"
    lengths: Tensor  # [B] tokens per sequence
    window: int = 0
    dilation: int = 1


def _graph_lengths(batch: Optional[Tensor], num_nodes: int,
                   device) -> Tensor:
    if batch is None:
        return torch.tensor([num_nodes], device=device)
    return torch.bincount(batch.long(), minlength=1)


def _sorted_keys(edge_index: Tensor, num_nodes: int) -> Tensor:
    return torch.sort(edge_index[1].long() * max(num_nodes, 1) +
                      edge_index[0].long()).values


def _window_edges(lengths: Tensor, window: int, dilation: int) -> Tensor:
    """Edges ``i + k * dilation -> i``, ``|k| <= window``, in range, for a
    batch of sequences (node ids offset per sequence)."""
    ptr, graph, position = token_positions(lengths)
    target = torch.arange(position.numel(), device=lengths.device)
    offsets = torch.arange(-window, window + 1,
                           device=lengths.device) * dilation
    src_pos = position.view(-1, 1) + offsets.view(1, -1)
    keep = (src_pos >= 0) & (src_pos < lengths[graph].view(-1, 1))
    source = (src_pos + ptr[graph].view(-1, 1))[keep]
    target = target.view(-1, 1).expand_as(src_pos)[keep]
    return torch.stack([source, target])


def _recognize(edge_index: Tensor, batch: Optional[Tensor],
               num_nodes: int) -> Optional[FlexPattern]:
    if edge_index.size(1) == 0 or num_nodes == 0:
        return None
    lengths = _graph_lengths(batch, num_nodes, edge_index.device)
    if batch is not None and bool((batch[1:] < batch[:-1]).any()):
        return None  # sequences must be contiguous blocks of nodes
    if batch is not None and bool((batch[edge_index[0]] !=
                                   batch[edge_index[1]]).any()):
        return None  # an edge between two sequences
    candidates = [FlexPattern("full", lengths),
                  FlexPattern("causal", lengths)]
    delta = (edge_index[0] - edge_index[1]).long()
    positive = delta[delta > 0]
    if positive.numel():
        dilation = int(positive.min())
        # no wider than the longest sequence: the window's edge list is
        # built below, and must stay within the batch's own size
        window = min(int(delta.abs().max()) // dilation,
                     (int(lengths.max()) - 1) // dilation)
        candidates.append(FlexPattern("window", lengths, window, dilation))
    in_degree = torch.bincount(edge_index[1].long(), minlength=num_nodes)
    keys = None
    for cand in candidates:
        # O(N) first: a pattern whose in-degrees differ is never built (a
        # complete graph of 64k tokens, or the "window" of an arbitrary
        # graph, would not fit in memory).
        if not torch.equal(_pattern_degree(cand, num_nodes), in_degree):
            continue
        if cand.kind == "window":
            expected = _window_edges(lengths, cand.window, cand.dilation)
        else:
            expected = complete_edge_index(lengths, causal=cand.kind ==
                                           "causal")
        # (equal sorted keys also rule out duplicate edges, which would
        # weigh differently)
        keys = _sorted_keys(edge_index, num_nodes) if keys is None else keys
        if torch.equal(_sorted_keys(expected.to(edge_index.device),
                                    num_nodes), keys):
            return cand
    return None


def _pattern_degree(pattern: FlexPattern, num_nodes: int) -> Tensor:
    """In-degree of every token under ``pattern``."""
    lengths = pattern.lengths.long()
    _, graph, position = token_positions(lengths, num_nodes)
    length = lengths[graph]
    if pattern.kind == "full":
        return length
    if pattern.kind == "causal":
        return position + 1
    w, d = pattern.window, pattern.dilation
    after = torch.clamp((length - 1 - position) // d, max=w)
    before = torch.clamp(position // d, max=w)
    return before + after + 1


def recognize_flex_pattern(edge_index: Tensor, batch: Optional[Tensor],
                           num_nodes: int) -> Optional[FlexPattern]:
    """The :class:`FlexPattern` of a batch of token graphs, or ``None``
    (cached per ``edge_index``)."""
    return cached_on(edge_index, "flex_pattern",
                     lambda: _recognize(edge_index, batch, num_nodes), batch,
                     num_nodes)


def _mask_mod(pattern: FlexPattern):
    lengths = pattern.lengths
    kind, window, dilation = pattern.kind, pattern.window, pattern.dilation

    def mask_mod(b, h, q, kv):
        inside = (kv < lengths[b]) & (q < lengths[b])
        if kind == "causal":
            return inside & (kv <= q)
        if kind == "window":
            d = kv - q
            return inside & (d.abs() <= window * dilation) & \
                (d % dilation == 0)
        return inside

    return mask_mod


def block_mask(pattern: FlexPattern, max_len: int, edge_index: Tensor):
    """The FlexAttention block mask of ``pattern`` (cached)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def build():
        return create_block_mask(_mask_mod(pattern), pattern.lengths.numel(),
                                 None, max_len, max_len,
                                 device=pattern.lengths.device)
    return cached_on(edge_index, "flex_block_mask", build, max_len,
                     pattern.lengths, pattern.kind, pattern.window,
                     pattern.dilation)


def flex_supported() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


def flex_attention_padded(q: Tensor, k: Tensor, v: Tensor, mask,
                          scale: float) -> Tensor:
    """``[B, H, L, C]`` attention under the block mask (compiled on GPUs,
    where eager FlexAttention would materialise the scores; eager on the
    CPU)."""
    if q.is_cuda:
        return _compiled_flex()(q, k, v, block_mask=mask, scale=scale)
    from torch.nn.attention.flex_attention import flex_attention
    return flex_attention(q, k, v, block_mask=mask, scale=scale)
