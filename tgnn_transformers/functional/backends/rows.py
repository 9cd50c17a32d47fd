r"""Graphs whose targets all have the same number :math:`k` of incoming
edges, listed target by target (``edge_index[1]`` is
``0, .., 0, 1, .., 1, ..`` with :math:`k` of each): every target's sources
are gathered into one row of a ``[N_dst, k]`` table, and
:func:`torch.nn.functional.scaled_dot_product_attention` runs each query
over its row,

.. math::
    \mathrm{out}_i^h = \sum_{r < k} \mathrm{softmax}_r\big(
    \mathrm{scale}\, \langle q_i^h, k^h_{s_{ir}} \rangle\big)\,
    v^h_{s_{ir}}, \qquad s_{ir} = \texttt{edge\_index[0]}[ik + r],

which is the edge softmax and sum of the sparse path (a repeated source is
a separate edge, as there).  Decoding with a key/value cache is this
graph: each new token is one target whose sources are the cached tokens of
its pattern and itself, so a step is one small SDPA call instead of the
sparse path's index building and segment kernels.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._cache import cached_on
from .._checks import tracing
from .base import AttentionBackend, AttentionCall, Capabilities, EdgeAttention
from .dense import dense_masked_max_bytes


def uniform_in_degree(edge_index: Tensor, num_dst: int) -> Optional[int]:
    """``k`` when ``edge_index``'s targets are ``0 .. num_dst - 1`` in
    order with ``k >= 1`` edges each, else ``None`` (cached per
    ``edge_index``, as the other recognisers)."""
    return cached_on(edge_index, "uniform_in_degree",
                     lambda: _uniform_in_degree(edge_index, num_dst),
                     num_dst)


def _uniform_in_degree(edge_index: Tensor, num_dst: int) -> Optional[int]:
    num_edges = edge_index.size(1)
    if num_dst == 0 or num_edges == 0 or num_edges % num_dst:
        return None
    k = num_edges // num_dst
    targets = edge_index[1].view(num_dst, k)
    rows = torch.arange(num_dst, device=edge_index.device,
                        dtype=edge_index.dtype)
    return k if bool((targets == rows[:, None]).all()) else None


def source_run(edge_index: Tensor) -> Optional[int]:
    """``s`` when ``edge_index``'s sources are ``s, s + 1, ..`` in order
    (one target's row of consecutive cached nodes: a sequence decoded
    alone), else ``None`` (cached per ``edge_index``)."""
    return cached_on(edge_index, "source_run",
                     lambda: _source_run(edge_index[0]))


def _source_run(sources: Tensor) -> Optional[int]:
    if sources.numel() == 0:
        return None
    first = int(sources[0])
    steps = torch.arange(first, first + sources.numel(),
                         device=sources.device, dtype=sources.dtype)
    return first if bool(torch.equal(sources, steps)) else None


class RowsBackend(AttentionBackend):
    """SDPA over each target's gathered sources, for graphs of uniform
    in-degree listed by target.  ``backend="auto"`` tries it for bipartite
    calls (sources and targets of different sizes, e.g. new tokens
    attending to cached ones); the gathered keys and values take
    ``E * H * C`` elements each, and calls where they would exceed
    ``TGNN_DENSE_MAX_BYTES`` are refused."""
    name = "rows"
    capabilities = Capabilities(weights=False, edge_terms=False, scores=False,
                                reductions=("sum", "mean"),
                                many_reductions=False)

    def tried_by_auto(self, call: AttentionCall) -> bool:
        # Reading the targets would break a compiled graph on every call.
        return call.bipartite and not tracing()

    def refusals(self, call: AttentionCall) -> List[str]:
        if call.reduce == "mean" and call.dropout_p > 0:
            # softmax weights sum to 1, so the mean is the sum -- until
            # dropout removes some of them
            return [f"reduce={call.reduce!r} with attention dropout"]
        return []

    def graph_refusals(self, call: AttentionCall) -> List[str]:
        if uniform_in_degree(call.edge_index, call.query.size(0)) is None:
            return ["the targets do not all have the same number of "
                    "incoming edges, listed target by target"]
        heads = call.query.size(1)
        gathered = call.edge_index.size(1) * heads * (
            call.key.size(-1) + call.value.size(-1)) * \
            call.key.element_size()
        limit = dense_masked_max_bytes()
        if gathered > limit:
            return [f"the gathered keys and values need "
                    f"{gathered / 2**30:.1f} GiB (limit "
                    f"TGNN_DENSE_MAX_BYTES={limit})"]
        return []

    def run(self, call: AttentionCall) -> EdgeAttention:
        num_dst = call.query.size(0)
        k = uniform_in_degree(call.edge_index, num_dst)
        # [N, H, 1, C] queries over [N, H, k, C] rows of keys and values:
        # one target over consecutive sources (a sequence decoded alone)
        # reads them in place, others gather them (index_select: one
        # gather, cheaper than advanced indexing).
        query = call.query.unsqueeze(2)
        first = source_run(call.edge_index) if num_dst == 1 else None
        if first is not None:
            key, value = (x[first:first + k] for x in (call.key, call.value))
        else:
            sources = call.edge_index[0]
            key, value = (x.index_select(0, sources)
                          for x in (call.key, call.value))
        key = key.view(num_dst, k, *call.key.shape[1:]).transpose(1, 2)
        value = value.view(num_dst, k, *call.value.shape[1:]).transpose(1, 2)
        scale = call.scale
        if isinstance(scale, Tensor):  # SDPA takes a Python float scale only
            query, scale = query * scale, 1.0
        out = F.scaled_dot_product_attention(query, key, value,
                                             dropout_p=call.dropout_p,
                                             scale=scale)
        return EdgeAttention(out.squeeze(2), None, call.edge_index)
