r"""Attention weights on their own, one per edge and head, in the input
edge order.

:func:`~tgnn_transformers.functional.edge_attention` computes the weights
and aggregates the values in one fused pass and keeps the weights in its
own (target-major) order.  The functions here split that pass in two for
code that must see or change the weights in between: PyG's explain tools
and message-passing hooks, which multiply an edge mask into the weights
before the aggregation (:func:`attention_aggregate` does the second half).
They gather ``[E, H, C]`` tensors and are meant for that, not for speed.
"""
from __future__ import annotations

from typing import Optional, Union

import torch.nn.functional as F
from torch import Tensor

from ._checks import (as_score_bias, check_choice, check_edge_index,
                      check_per_edge, check_query_key)
from ._precision import (autocast_disabled, compute_dtype, result_dtype,
                         upcast_all)
from .scores import SCORE_NORMALIZATIONS
from .softmax import edge_softmax
from .sparse_ops import graph_index


def attention_weights(query: Tensor, key: Tensor, edge_index: Tensor, *,
                      edge_key: Optional[Tensor] = None,
                      bias: Optional[Tensor] = None,
                      scale: Union[float, Tensor, None] = None,
                      normalization: str = "softmax") -> Tensor:
    r"""The attention weights of :func:`edge_attention`, ``[E, H]``.

    For every edge :math:`j \to i` (``edge_index[:, e] = (j, i)``) and head
    :math:`h`:

    .. math::
        s_{ij}^h = \mathrm{scale} \cdot \langle q_i^h,\ k_j^h +
        e^{K,h}_{ij} \rangle + b_{ij}^h, \qquad
        \alpha_{ij}^h = \mathrm{softmax}_{j \in \mathcal{N}(i)}(s_{ij}^h)

    (or :math:`\mathrm{ReLU}(s_{ij}^h)` with ``normalization="relu"``,
    :math:`s_{ij}^h` itself with ``normalization="raw"``).
    The arguments mean what they mean in :func:`edge_attention`; no dropout
    is applied (see :func:`attention_dropout`).

    Args:
        query: ``[N_dst, H, C]`` queries of the target nodes.
        key: ``[N_src, H, C]`` keys of the source nodes.
        edge_index: ``[2, E]`` integer tensor, row 0 sources, row 1 targets.
        edge_key: optional ``[E, H, C]`` per-edge term added to the keys.
        bias: optional ``[E, H]`` additive score bias, or a boolean mask
            (``True`` attends, ``False`` masks; see :func:`edge_attention`).
        scale: score scale, a float or a 0-d tensor; default
            :math:`1/\sqrt{C}`.
        normalization: ``"softmax"``, ``"relu"`` or ``"raw"``.

    Returns:
        ``[E, H]`` weights in the order of the columns of ``edge_index``.
    """
    check_choice("normalization", normalization, SCORE_NORMALIZATIONS)
    check_query_key(query, key)
    num_dst, heads, channels = query.shape
    check_edge_index(edge_index, key.size(0), num_dst)
    num_edges = edge_index.size(1)
    check_per_edge(edge_key, "edge_key", num_edges, (heads, channels))
    check_per_edge(bias, "bias", num_edges, (heads, ))
    bias = as_score_bias(bias, query.dtype)
    dtype = result_dtype(query, key, edge_key)
    inner = compute_dtype(dtype)
    # Half / bfloat16 scores are summed and normalised in float32.
    with autocast_disabled(query.device):
        query, key, edge_key, bias, scale = upcast_all(
            inner, query, key, edge_key, bias, scale)
        src, dst = edge_index[0], edge_index[1]
        key_j = key.index_select(0, src)
        if edge_key is not None:
            key_j = key_j + edge_key
        scores = (query.index_select(0, dst) * key_j).sum(-1)
        scores = scores * (channels**-0.5 if scale is None else scale)
        if bias is not None:
            scores = scores + bias
        if normalization == "relu":
            return F.relu(scores).to(dtype)
        if normalization == "raw":
            return scores.to(dtype)
        return edge_softmax(scores, dst, num_nodes=num_dst).to(dtype)


def attention_dropout(alpha: Tensor, edge_index: Tensor, p: float = 0.0,
                      training: bool = True, *, num_src: int,
                      num_dst: int) -> Tensor:
    """Dropout on ``[E, H]`` attention weights given in the input edge
    order, drawn exactly as :func:`edge_attention`'s edge path draws it.

    The kernel drops weights in the target-major order of the graph's
    cached index; this function draws its random mask in that same order
    and returns the weights in the input order, so under the same random
    seed both drop the same edges.  ``num_src`` and ``num_dst`` are the
    node counts the kernel sees (``key.size(0)``, ``query.size(0)``).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return alpha
    index = graph_index(edge_index, num_src, num_dst)
    return index.to_input_order(F.dropout(index.to_csr_order(alpha), p,
                                          True))
