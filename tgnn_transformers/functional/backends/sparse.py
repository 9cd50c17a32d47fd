"""The edge path: works for any graph and every option, in time and memory
linear in the number of edges."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._precision import (autocast_disabled, compute_dtype, result_dtype,
                          upcast_all)
from ..aggregate import aggregate_csr
from ..sparse_ops import build_graph_index, edge_dot, graph_index, sddmm
from .base import AttentionBackend, AttentionCall, EdgeAttention


class SparseBackend(AttentionBackend):
    """SDDMM scores, segment softmax, SpMM aggregation, all in the CSR order
    of the graph's cached :class:`~..sparse_ops.GraphIndex`; only ``[E, H]``
    edge tensors are kept for backward.

    Half and bfloat16 inputs (autocast or low-precision weights) are
    computed in float32, with autocast off, and the output and weights come
    back in the inputs' dtype (torch has no low-precision SDDMM)."""
    name = "sparse"

    def run(self, call: AttentionCall) -> EdgeAttention:
        return _sparse_attention(call)


# Sparse CSR tensors and data-dependent index building are not traceable by
# Dynamo: inside a compiled model the kernel runs eagerly (one graph break)
# and everything around it compiles.
@torch.compiler.disable
def _sparse_attention(call: AttentionCall) -> EdgeAttention:
    dtype = result_dtype(call.query, call.key, call.value, call.edge_key,
                         call.edge_value)
    inner = compute_dtype(dtype)
    with autocast_disabled(call.query.device):
        (query, key, value, edge_key, edge_value, bias,
         scale) = upcast_all(inner, call.query, call.key, call.value,
                             call.edge_key, call.edge_value, call.bias,
                             call.scale)
        result = _edge_path(call._replace(
            query=query, key=key, value=value, edge_key=edge_key,
            edge_value=edge_value, bias=bias, scale=scale))
    if inner == dtype:
        return result
    alpha = None if result.alpha is None else result.alpha.to(dtype)
    return EdgeAttention(result.out.to(dtype), alpha, result.edge_index)


def _edge_path(call: AttentionCall) -> EdgeAttention:
    query, key, value = call.query, call.key, call.value
    options, dropout_p = call.scores, call.dropout_p
    index = graph_index(call.edge_index, key.size(0), query.size(0))
    edge_key = index.to_csr_order(call.edge_key)
    edge_value = index.to_csr_order(call.edge_value)
    scores = sddmm(query, key, index)
    if edge_key is not None:
        scores = scores + edge_dot(query, edge_key, index)
    scores = scores * call.scale
    if call.bias is not None:
        scores = scores + index.to_csr_order(call.bias)
    # The scores are in CSR order: the row pointers segment them (faster
    # on CPU than scattering by index.dst).
    alpha = options.normalize(scores, index.dst_ptr)
    if options.after_dropout:
        alpha = F.dropout(alpha, p=dropout_p, training=dropout_p > 0)
    if options.sparsifies:
        csr_edges = torch.stack([index.src, index.dst])
        alpha, kept_edges, kept = options.sparsify(alpha, csr_edges)
        if edge_value is not None:
            edge_value = edge_value[kept]
        # The kept subgraph is new (and already sorted by target).
        index = build_graph_index(kept_edges, index.num_src, index.num_dst)
        alpha_out, edges_out = alpha, kept_edges
    else:
        alpha_out, edges_out = None, call.edge_index
    weights = alpha if options.after_dropout else F.dropout(
        alpha, p=dropout_p, training=dropout_p > 0)
    out = aggregate_csr(value, weights, index, call.reduce,
                        edge_value=edge_value)
    if alpha_out is None and call.need_weights:
        # Only on request: in input order the weights are one more [E, H]
        # tensor (and its permutation) for every call.
        alpha_out = index.to_input_order(alpha)
    return EdgeAttention(out, alpha_out, edges_out)
