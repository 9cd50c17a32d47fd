"""The scaled dot-product edge-attention kernel shared by every layer.

:func:`edge_attention` checks its inputs once, then hands them to one of
the backends of :mod:`tgnn_transformers.functional.backends` (the sparse
edge path for any graph; SDPA, FlexAttention or the fused Triton kernel
where they give the same answer faster).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

from torch import Tensor

from ._checks import (as_score_bias, check_batch, check_choice,
                      check_edge_index, check_per_edge, check_query_key)
from .backends import BACKENDS, AttentionCall, EdgeAttention, select_backend
from .scores import ScoreOptions, as_score_options


def edge_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    edge_index: Tensor,
    *,
    edge_key: Optional[Tensor] = None,
    edge_value: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    scale: Union[float, Tensor, None] = None,
    scores: Optional[ScoreOptions] = None,
    normalization: Optional[str] = None,
    dropout_p: float = 0.0,
    training: bool = True,
    reduce: Union[str, Sequence[str]] = "sum",
    threshold: Optional[float] = None,
    top_k: Optional[int] = None,
    threshold_mode: Optional[str] = None,
    top_k_fraction: Optional[float] = None,
    need_weights: bool = False,
    batch: Optional[Tensor] = None,
    backend: str = "auto",
) -> EdgeAttention:
    r"""Scaled dot-product attention on the edges of a graph.

    For every edge :math:`j \to i` (``edge_index[:, e] = (j, i)``) and head
    :math:`h`:

    .. math::
        s_{ij}^h = \mathrm{scale} \cdot \langle q_i^h,\ k_j^h + e^{K,h}_{ij}
        \rangle + b_{ij}^h, \qquad
        \alpha_{ij}^h = \mathrm{softmax}_{j \in \mathcal{N}(i)}(s_{ij}^h)

    then the values :math:`v_j^h + e^{V,h}_{ij}` are aggregated over the
    incoming edges with weights :math:`\mathrm{dropout}(\alpha)` by
    :func:`attention_aggregate` (``reduce="sum"`` gives
    :math:`\sum_j \alpha_{ij} v_j`, the transformer's attention).

    Args:
        query: ``[N_dst, H, C]`` queries of the target nodes.
        key: ``[N_src, H, C]`` keys of the source nodes.
        value: ``[N_src, H, C_v]`` values of the source nodes.
        edge_index: ``[2, E]`` integer tensor, row 0 sources, row 1 targets.
        edge_key: optional ``[E, H, C]`` per-edge term added to the keys.
        edge_value: optional ``[E, H, C_v]`` per-edge term added to values.
        bias: optional ``[E, H]`` additive score bias (relative positions,
            masks as ``-inf``), or a boolean mask: ``True`` attends,
            ``False`` masks the edge (as ``-inf``), the convention of
            ``scaled_dot_product_attention``'s ``attn_mask``.
        scale: score scale, a float or a 0-d tensor (a trainable sharpening
            factor); default :math:`1/\sqrt{C}`.
        scores: how scores become weights, a :class:`ScoreOptions`
            (normalisation and sparsification); or give its fields as the
            keywords below.
        normalization: ``"softmax"`` (the default) over each target's
            incoming edges, ``"relu"`` (non-normalised, non-negative
            scores) or ``"raw"`` (the scores themselves, signed).
        dropout_p: dropout probability on the attention weights.
        training: apply dropout only when set (as in ``F.dropout``).
        reduce: a reduction of :func:`attention_aggregate` or a sequence.
        threshold, top_k, threshold_mode, top_k_fraction: optional
            sparsification of the weights before aggregation (see
            :func:`sparsify_attention`).  ``"drop"`` (the default) applies
            before the attention dropout; the published code's modes
            (``"shifted-relu"``, ``"binary"``, ``"top-k-fraction"``) after
            it, as that code does.
        need_weights: return the ``[E, H]`` weights.
        batch: optional ``[N]`` graph id of every node (PyG's batch vector);
            lets the token-graph backends recognise a batch of sequences.
        backend: ``"auto"`` or a name of
            :data:`~tgnn_transformers.functional.backends.ATTENTION_BACKENDS`:
            ``"dense"`` (SDPA, batches of complete or causal token graphs),
            ``"rows"`` (SDPA over each target's gathered sources, for
            targets of equal in-degree listed in order: decoding steps),
            ``"flex"`` (FlexAttention, batches of full, causal or (dilated)
            window token graphs given with ``batch``; forward-only on the
            CPU), ``"triton"`` (the fused CSR kernel of
            :mod:`~tgnn_transformers.functional.triton_attention`, on CUDA)
            or ``"sparse"`` (any graph, every option).  ``"auto"`` takes
            dense where it applies, rows for bipartite calls it fits, then
            on CUDA FlexAttention (heads of 16 channels or more) and the
            Triton kernel, else sparse; a named
            backend that cannot compute the call raises a ``ValueError``
            with the reasons.

    Returns:
        :class:`EdgeAttention` ``(out, alpha, edge_index)``.

    Edge cases (``tests/test_numerical_edge_cases.py``): a target without
    incoming edges, or whose edges are all masked (``-inf`` bias) or
    sparsified away, gets 0 from every reduction; logits of any finite size
    stay finite (the maximum is subtracted per target); duplicate edges are
    separate edges, so ``m`` copies weigh as one edge with score
    ``+ log m``.
    """
    check_choice("backend", backend, BACKENDS)
    options = as_score_options(scores, normalization=normalization,
                               threshold=threshold, top_k=top_k,
                               threshold_mode=threshold_mode,
                               top_k_fraction=top_k_fraction)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    check_query_key(query, key)
    if value.dim() != 3:
        raise ValueError(f"value must have shape [N, H, C], got "
                         f"{list(value.shape)}")
    if value.shape[:2] != key.shape[:2]:
        raise ValueError(f"value must have one row per source node and the "
                         f"heads of key: got {list(value.shape)} and "
                         f"{list(key.shape)}")
    num_dst, heads, channels = query.shape
    check_edge_index(edge_index, key.size(0), num_dst)
    num_edges = edge_index.size(1)
    check_per_edge(edge_key, "edge_key", num_edges, (heads, channels))
    check_per_edge(edge_value, "edge_value", num_edges,
                   (heads, value.size(-1)))
    check_per_edge(bias, "bias", num_edges, (heads, ))
    bias = as_score_bias(bias, query.dtype)
    check_batch(batch, num_dst)
    call = AttentionCall(
        query, key, value, edge_index, edge_key, edge_value, bias,
        scale=channels**-0.5 if scale is None else scale, scores=options,
        dropout_p=dropout_p if training else 0.0, reduce=reduce,
        need_weights=need_weights, batch=batch)
    return select_backend(backend, call).run(call)
