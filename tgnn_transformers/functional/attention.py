"""The scaled dot-product edge-attention kernel shared by every layer.

One function, :func:`edge_attention`, computes attention on the edges of a
graph and aggregates the values.  It has two implementations with the same
results:

* ``sparse``: scores on the edges, :func:`edge_softmax` per target,
  :func:`attention_aggregate` over the incoming edges.  Works for any graph,
  cost linear in the number of edges.
* ``dense``: for batches of complete or causal token graphs, the attention
  runs as :func:`torch.nn.functional.scaled_dot_product_attention` on the
  padded ``[B, H, L, C]`` layout (fused kernels, no per-edge tensors).

``backend="auto"`` takes the dense path whenever it gives the same answer.
"""
from __future__ import annotations

import os
import warnings
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ._cache import cached_on
from ._checks import (check_batch, check_choice, check_edge_index,
                      check_per_edge, check_query_key, tracing)
from ._precision import (autocast_disabled, compute_dtype, result_dtype,
                         upcast_all)
from .aggregate import aggregate_csr
from .patterns import recognize_sequence_pattern, token_positions
from .softmax import edge_softmax
from .sparse_ops import (build_graph_index, edge_dot, graph_index,
                         sddmm)
from .flex_attention import block_mask as flex_block_mask
from .flex_attention import (flex_attention_padded, flex_supported,
                             recognize_flex_pattern)
from .triton_attention import (_next_pow2, triton_attention,
                               triton_available)
from .triton_attention import unsupported as triton_unsupported

BACKENDS = ("auto", "sparse", "dense", "triton", "flex")
#: Score modes of :func:`edge_attention`: the softmax over each target's
#: incoming edges, the non-negative ReLU of the scores, or the raw scores
#: (the published GIN-Attention code's non-softmax mode).
SCORE_NORMALIZATIONS = ("softmax", "relu", "raw")
#: How :func:`sparsify_attention` applies its options: ``"drop"`` (weights
#: below ``threshold`` / outside the ``top_k`` largest become 0, the others
#: keep their value) or one of the published code's three modes
#: (``"shifted-relu"``: ``relu(alpha - threshold)``, ``"binary"``:
#: ``1[alpha > threshold]``, ``"top-k-fraction"``: 1 on the
#: ``max(1, floor(top_k_fraction * d_i))`` largest weights of target ``i``).
THRESHOLD_MODES = ("drop", "shifted-relu", "binary", "top-k-fraction")


class EdgeAttention(NamedTuple):
    """Result of :func:`edge_attention`."""
    out: Tensor
    """``[N_dst, H, C]`` (or ``[N_dst, H, R, C]`` for several reductions)."""
    alpha: Optional[Tensor]
    """``[E', H]`` attention weights before dropout (for the published
    threshold modes, which act on the dropped-out weights: after it and
    the thresholding), or ``None`` when the dense or Triton path ran and
    ``need_weights`` was not set."""
    edge_index: Tensor
    """``[2, E']`` the edges that carried attention: the input edges, or the
    kept subgraph after ``threshold`` / ``top_k`` sparsification."""


def _top_k_mask(alpha: Tensor, index: Tensor,
                k: Union[int, Tensor]) -> Tensor:
    """``[E, H]`` mask of the ``k`` largest weights of each target and head
    (``k`` an int, or a ``[num_targets]`` tensor: one count per target)."""
    num_edges, heads = alpha.shape
    flat = alpha.t().reshape(-1)  # head-major: [H * E]
    segment = (torch.arange(heads, device=alpha.device).repeat_interleave(
        num_edges) * (int(index.max()) + 1 if num_edges else 1) +
               index.repeat(heads))
    order = torch.argsort(flat, descending=True, stable=True)
    order = order[torch.argsort(segment[order], stable=True)]
    sorted_segment = segment[order]
    start = torch.ones_like(sorted_segment, dtype=torch.bool)
    start[1:] = sorted_segment[1:] != sorted_segment[:-1]
    position = torch.arange(order.numel(), device=alpha.device)
    run_start = torch.cummax(torch.where(start, position, 0), 0).values
    rank = torch.empty_like(position)
    rank[order] = position - run_start
    rank = rank.view(heads, num_edges).t()
    if isinstance(k, Tensor):
        return rank < k[index].unsqueeze(-1)
    return rank < k


def check_sparsify_options(threshold: Optional[float] = None,
                           top_k: Optional[int] = None,
                           threshold_mode: str = "drop",
                           top_k_fraction: Optional[float] = None) -> None:
    """Raises a ``ValueError`` naming the argument, what it accepts and what
    it got, for a combination :func:`sparsify_attention` cannot apply.

    ``"drop"`` takes ``threshold`` and / or ``top_k``; ``"shifted-relu"``
    and ``"binary"`` need ``threshold`` (and take no ``top_k``);
    ``"top-k-fraction"`` needs ``top_k_fraction`` in ``(0, 1]`` (and takes
    neither ``threshold`` nor ``top_k``).
    """
    check_choice("threshold_mode", threshold_mode, THRESHOLD_MODES)
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None), got {top_k!r}")
    if top_k_fraction is not None and (
            isinstance(top_k_fraction, bool) or
            not isinstance(top_k_fraction, (int, float)) or
            not 0.0 < top_k_fraction <= 1.0):
        raise ValueError(f"top_k_fraction must be a float in (0, 1] or "
                         f"None, got {top_k_fraction!r}")
    if threshold_mode in ("shifted-relu", "binary"):
        if threshold is None:
            raise ValueError(f"threshold_mode={threshold_mode!r} needs a "
                             "threshold (a float), got threshold=None")
        if top_k is not None:
            raise ValueError(f"top_k applies to threshold_mode='drop' only; "
                             f"got top_k={top_k} with threshold_mode="
                             f"{threshold_mode!r}")
    if threshold_mode == "top-k-fraction":
        if top_k_fraction is None:
            raise ValueError("threshold_mode='top-k-fraction' needs "
                             "top_k_fraction (a float in (0, 1]), got None")
        if threshold is not None or top_k is not None:
            raise ValueError(
                "threshold_mode='top-k-fraction' takes neither threshold "
                f"nor top_k; got threshold={threshold!r}, top_k={top_k!r}")
    elif top_k_fraction is not None:
        raise ValueError(f"top_k_fraction applies to threshold_mode="
                         f"'top-k-fraction' only; got top_k_fraction="
                         f"{top_k_fraction!r} with threshold_mode="
                         f"{threshold_mode!r}")


def sparsifies(threshold: Optional[float] = None,
               top_k: Optional[int] = None, threshold_mode: str = "drop",
               top_k_fraction: Optional[float] = None) -> bool:
    """Whether these options make :func:`sparsify_attention` change the
    weights at all."""
    return (threshold is not None or top_k is not None or
            top_k_fraction is not None or threshold_mode != "drop")


def sparsify_attention(alpha: Tensor, edge_index: Tensor, *,
                       threshold: Optional[float] = None,
                       top_k: Optional[int] = None,
                       threshold_mode: str = "drop",
                       top_k_fraction: Optional[float] = None):
    r"""Drops weak attention edges, returning ``(alpha, edge_index, kept)``.

    Per head, with ``threshold_mode="drop"`` (the default), weights below
    ``threshold`` and weights outside the ``top_k`` largest of their target
    are set to 0 and the others keep their value.  The published
    GIN-Attention code's modes, for target :math:`i` with in-degree
    :math:`d_i`:

    * ``"shifted-relu"``: :math:`\alpha \leftarrow \mathrm{relu}(\alpha - t)`
    * ``"binary"``: :math:`\alpha \leftarrow \mathbb{1}[\alpha > t]`
    * ``"top-k-fraction"``: :math:`\alpha \leftarrow 1` on the
      :math:`\max(1, \lfloor f \cdot d_i \rfloor)` largest weights of
      :math:`i` (:math:`f` = ``top_k_fraction``), 0 elsewhere

    (:math:`t` = ``threshold``; ``binary`` and ``top-k-fraction`` pass no
    gradient to the weights, as in that code).  Edges left with no weight
    in any head are removed, so the result is a real subgraph (``kept`` is
    the boolean mask of the surviving input edges).  Bad combinations raise
    (:func:`check_sparsify_options`).
    """
    check_sparsify_options(threshold, top_k, threshold_mode, top_k_fraction)
    if threshold_mode == "shifted-relu":
        alpha = F.relu(alpha - threshold)
        keep = alpha > 0
    elif threshold_mode == "binary":
        keep = alpha > threshold
        alpha = keep.to(alpha.dtype)
    elif threshold_mode == "top-k-fraction":
        num_dst = int(edge_index[1].max()) + 1 if edge_index.numel() else 0
        degree = torch.bincount(edge_index[1], minlength=num_dst)
        k = (top_k_fraction * degree.double()).floor().long().clamp_min(1)
        keep = _top_k_mask(alpha.detach(), edge_index[1], k)
        alpha = keep.to(alpha.dtype)
    else:
        keep = torch.ones_like(alpha, dtype=torch.bool)
        if threshold is not None:
            keep &= alpha >= threshold
        if top_k is not None:
            keep &= _top_k_mask(alpha.detach(), edge_index[1], top_k)
        alpha = alpha * keep
    kept = keep.any(dim=1)
    return alpha[kept], edge_index[:, kept], kept


def _scale_value(scale: Union[float, Tensor, None], head_dim: int):
    return head_dim**-0.5 if scale is None else scale


def _dense_supported(reduce, dropout_active: bool) -> bool:
    if not isinstance(reduce, str):
        return False
    return reduce == "sum" or (reduce == "mean" and not dropout_active)


class _PaddedLayout:
    """Index map between a node tensor and its padded ``[B, L]`` layout."""

    def __init__(self, lengths: Tensor, num_nodes: int, multiple: int = 1):
        self.batch_size = lengths.numel()
        self.max_len = int(lengths.max()) if lengths.numel() else 0
        self.max_len = -(-self.max_len // multiple) * multiple
        _, graph, position = token_positions(lengths, num_nodes)
        self.flat_index = graph * self.max_len + position
        self.ragged = bool((lengths != self.max_len).any())
        self.lengths = lengths
        self._key_mask: Optional[Tensor] = None

    def pad(self, x: Tensor) -> Tensor:
        """``[N, H, C]`` -> ``[B, H, L, C]`` (a view when all sequences have
        the same length)."""
        if not self.ragged:
            return x.view(self.batch_size, self.max_len,
                          *x.shape[1:]).transpose(1, 2)
        out = x.new_zeros((self.batch_size * self.max_len, ) + x.shape[1:])
        out = out.index_copy(0, self.flat_index, x)
        return out.view(self.batch_size, self.max_len,
                        *x.shape[1:]).transpose(1, 2)

    def unpad(self, x: Tensor) -> Tensor:
        """``[B, H, L, C]`` -> ``[N, H, C]``."""
        x = x.transpose(1, 2).reshape(self.batch_size * self.max_len,
                                      *x.shape[1:2], x.size(-1))
        if not self.ragged:
            return x
        return x.index_select(0, self.flat_index)

    def key_mask(self) -> Tensor:
        """``[B, 1, 1, L]`` boolean mask of the real (non-padding) keys
        (built once per layout)."""
        if self._key_mask is None:
            self._key_mask = self._build_key_mask()
        return self._key_mask

    def _build_key_mask(self) -> Tensor:
        position = torch.arange(self.max_len, device=self.lengths.device)
        mask = position.view(1, -1) < self.lengths.view(-1, 1)
        # An empty sequence would leave its padded query rows with no key at
        # all (NaN); those rows are discarded, but let them see key 0.
        mask[:, 0] = True
        return mask.view(self.batch_size, 1, 1, self.max_len)


#: Default of :func:`dense_masked_max_bytes` when ``TGNN_DENSE_MAX_BYTES``
#: is not set.
DENSE_MASKED_MAX_BYTES = 2**31


def dense_masked_max_bytes() -> int:
    """Largest attention-score tensor (bytes) the dense path may materialise
    for a key-padding mask; beyond it ``backend="auto"`` stays sparse.

    Read from the environment variable ``TGNN_DENSE_MAX_BYTES`` at every
    call (a non-negative integer; unset or empty: ``DENSE_MASKED_MAX_BYTES``).
    """
    raw = os.environ.get("TGNN_DENSE_MAX_BYTES", "").strip()
    if not raw:
        return DENSE_MASKED_MAX_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"TGNN_DENSE_MAX_BYTES must be a non-negative "
                         f"integer (bytes), got {raw!r}")
    return value


def _dense_too_large(layout: _PaddedLayout, heads: int, element_size: int,
                     causal: bool) -> Optional[str]:
    """Why the dense path would not fit, or None.  Unmasked (equal-length
    or causal) SDPA runs fused kernels in O(L) memory; a key-padding mask
    may make it materialise ``[B, H, L, L]`` scores."""
    if causal or not layout.ragged:
        return None
    size = layout.batch_size * heads * layout.max_len**2 * element_size
    limit = dense_masked_max_bytes()
    if size > limit:
        return (f"the padded ragged batch needs a {size / 2**30:.1f} GiB "
                f"score tensor (limit TGNN_DENSE_MAX_BYTES={limit})")
    return None


def _dense_attention(query: Tensor, key: Tensor, value: Tensor,
                     layout: _PaddedLayout, causal: bool, scale,
                     dropout_p: float) -> Tensor:
    q, k, v = layout.pad(query), layout.pad(key), layout.pad(value)
    if isinstance(scale, Tensor):  # SDPA takes a Python float scale only.
        q, scale = q * scale, 1.0
    # Causal graphs put padding after the last real token, so the causal
    # mask alone already hides it; full graphs need a key padding mask.
    mask = layout.key_mask() if (layout.ragged and not causal) else None
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                         dropout_p=dropout_p,
                                         is_causal=causal, scale=scale)
    return layout.unpad(out)


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
    normalization: str = "softmax",
    dropout_p: float = 0.0,
    training: bool = True,
    reduce: Union[str, Sequence[str]] = "sum",
    threshold: Optional[float] = None,
    top_k: Optional[int] = None,
    threshold_mode: str = "drop",
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
            masks as ``-inf``).
        scale: score scale, a float or a 0-d tensor (a trainable sharpening
            factor); default :math:`1/\sqrt{C}`.
        normalization: ``"softmax"`` over each target's incoming edges,
            ``"relu"`` (non-normalised, non-negative scores) or ``"raw"``
            (the scores themselves, signed).
        dropout_p: dropout probability on the attention weights.
        training: apply dropout only when set (as in ``F.dropout``).
        reduce: a reduction of :func:`attention_aggregate` or a sequence.
        threshold, top_k, threshold_mode, top_k_fraction: optional
            sparsification of the weights before aggregation (see
            :func:`sparsify_attention`).  ``"drop"`` (the default) applies
            before the attention dropout; the published code's modes
            (``"shifted-relu"``, ``"binary"``, ``"top-k-fraction"``) after
            it, as that code does.
        need_weights: return the ``[E, H]`` weights (forces the sparse path).
        batch: optional ``[N]`` graph id of every node (PyG's batch vector);
            lets the dense path recognise a batch of token graphs.
        backend: ``"auto"`` (dense when the graph is a batch of complete or
            causal token graphs and the options allow it; else, on CUDA,
            FlexAttention when the graph is a batch of full, causal or
            (dilated) window token graphs and the options allow it (heads
            of 16 channels or more), then the fused Triton
            kernel (Triton installed) when the options allow it; else
            sparse), ``"sparse"``, ``"dense"`` (an error if
            not applicable) or ``"triton"`` (the fused CSR kernel of
            :mod:`~tgnn_transformers.functional.triton_attention`; options
            it does not support -- dropout, reductions other than sum,
            ReLU scores, sparsification -- run the sparse path with a
            warning) or ``"flex"`` (FlexAttention on a batch of full,
            causal or (dilated) window token graphs given with ``batch``;
            an error if not applicable; forward-only on the CPU).

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
    check_choice("normalization", normalization, SCORE_NORMALIZATIONS)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    check_sparsify_options(threshold, top_k, threshold_mode, top_k_fraction)
    sparsify = sparsifies(threshold, top_k, threshold_mode, top_k_fraction)
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
    check_batch(batch, num_dst)
    scale = _scale_value(scale, channels)
    dropout_p = dropout_p if training else 0.0

    if backend in ("auto", "dense"):
        blockers = []
        if need_weights:
            blockers.append("need_weights=True")
        if edge_key is not None or edge_value is not None or bias is not None:
            blockers.append("per-edge terms (edge features or bias)")
        if normalization != "softmax":
            blockers.append(f"normalization={normalization!r}")
        if sparsify:
            blockers.append("sparsification")
        if not _dense_supported(reduce, dropout_p > 0):
            blockers.append(f"reduce={reduce!r}")
        if key.size(0) != num_dst:
            blockers.append("bipartite input")
        pattern, lengths = (None, None)
        if not blockers and backend == "auto" and tracing():
            # Recognising the pattern reads tensor values, which would break
            # the compiled graph on every call; compiled "auto" stays sparse.
            blockers.append("torch.compile tracing (use backend='dense')")
        if not blockers:
            pattern, lengths = recognize_sequence_pattern(
                edge_index, batch, num_dst)
            if pattern is None:
                blockers.append("the graph is not a batch of complete or "
                                "causal token graphs in canonical order")
        if not blockers:
            layout = cached_on(edge_index, "padded_layout",
                               lambda: _PaddedLayout(lengths, num_dst),
                               batch, num_dst)
            reason = _dense_too_large(layout, heads, query.element_size(),
                                      pattern == "causal")
            if reason is not None:
                blockers.append(reason)
        if not blockers:
            out = _dense_attention(query, key, value, layout,
                                   pattern == "causal", scale, dropout_p)
            return EdgeAttention(out, None, edge_index)
        if backend == "dense":
            raise ValueError("backend='dense' cannot be used here: " +
                             "; ".join(blockers))

    if backend == "flex" or (backend == "auto" and flex_preferred(query)):
        blockers = _flex_blockers(query, key, value, need_weights,
                                  (edge_key, edge_value, bias),
                                  normalization, sparsify, reduce, dropout_p)
        pattern = None
        if not blockers:
            pattern = recognize_flex_pattern(edge_index, batch, num_dst)
            if pattern is None:
                blockers.append("the graph is not a batch of full, causal "
                                "or (dilated) window token graphs")
        if not blockers:
            return EdgeAttention(
                _flex_attention(query, key, value, edge_index, batch,
                                pattern, scale), None, edge_index)
        if backend == "flex":
            raise ValueError("backend='flex' cannot be used here: " +
                             "; ".join(blockers))

    if backend == "triton" or (backend == "auto" and query.is_cuda and
                               triton_available() and not tracing()):
        reason = triton_unsupported(query, dropout_p=dropout_p,
                                    reduce=reduce,
                                    normalization=normalization,
                                    sparsify=sparsify)
        if reason is None:
            out, alpha = triton_attention(
                query, key, value, edge_index, edge_key=edge_key,
                edge_value=edge_value, bias=bias, scale=scale,
                need_weights=need_weights)
            return EdgeAttention(out, alpha, edge_index)
        if backend == "triton":
            warnings.warn(f"backend='triton' runs the sparse path instead: "
                          f"the Triton kernel does not support {reason}",
                          stacklevel=2)

    return _sparse_attention(query, key, value, edge_index, edge_key,
                             edge_value, bias, scale, normalization,
                             dropout_p, reduce, threshold, top_k,
                             threshold_mode, top_k_fraction)


#: FlexAttention's default block size (tokens).
_FLEX_BLOCK = 128


def flex_preferred(query: Tensor) -> bool:
    """Whether ``backend="auto"`` tries FlexAttention: on CUDA, where it
    has a backward and is compiled (on an H200 it ran a 64k-token window
    graph 1.2x (fp32) to 8x (bf16) faster than the Triton kernel)."""
    return query.is_cuda and flex_supported()


def _flex_blockers(query, key, value, need_weights, edge_terms,
                   normalization, sparsify, reduce, dropout_p) -> list:
    """What keeps this call off FlexAttention (empty: nothing)."""
    blockers = []
    if not flex_supported():
        blockers.append("this torch has no FlexAttention")
    if need_weights:
        blockers.append("need_weights=True")
    if any(t is not None for t in edge_terms):
        blockers.append("per-edge terms (edge features or bias)")
    if normalization != "softmax":
        blockers.append(f"normalization={normalization!r}")
    if sparsify:
        blockers.append("sparsification")
    if not (isinstance(reduce, str) and reduce == "sum"):
        blockers.append(f"reduce={reduce!r}")
    if dropout_p > 0:
        blockers.append("attention dropout")
    if key.size(0) != query.size(0):
        blockers.append("bipartite input")
    if not query.dtype == key.dtype == value.dtype:
        blockers.append("query, key and value of different dtypes")
    if query.is_cuda and min(query.size(-1), value.size(-1)) < 16:
        # compiled FlexAttention refuses heads narrower than 16 channels
        blockers.append("fewer than 16 channels per head on CUDA")
    if not query.is_cuda and torch.is_grad_enabled() and any(
            t.requires_grad for t in (query, key, value)):
        blockers.append("gradients on the CPU (torch runs FlexAttention's "
                        "backward only on GPUs)")
    if tracing():
        blockers.append("torch.compile tracing")
    return blockers


def flex_padding(query: Tensor) -> Tuple[int, bool]:
    """``(length multiple, batch to a power of two)`` of FlexAttention's
    padded layout.  On CUDA the compiled kernel is specialised per shape,
    so shapes are bucketed: the length rounded up to the 128-token block and
    the batch (with empty sequences, whose blocks are skipped) to a power of
    two.  New sequence lengths in a bucket do not recompile; new shapes do,
    and after torch's ``recompile_limit`` (8) FlexAttention runs eagerly."""
    return (_FLEX_BLOCK, True) if query.is_cuda else (1, False)


def _pad_batch(lengths: Tensor, pow2: bool) -> Tensor:
    """``lengths`` with empty sequences up to a power-of-two batch."""
    batch_size = lengths.numel()
    target = _next_pow2(batch_size) if pow2 else batch_size
    return torch.cat([lengths, lengths.new_zeros(target - batch_size)])


def _flex_attention(query, key, value, edge_index, batch, pattern,
                    scale) -> Tensor:
    """FlexAttention on the padded token batch of ``pattern``
    (:func:`flex_padding` says how far it is padded)."""
    multiple, pow2 = flex_padding(query)
    layout = cached_on(edge_index, "flex_layout",
                       lambda: _PaddedLayout(_pad_batch(pattern.lengths,
                                                        pow2),
                                             query.size(0), multiple),
                       batch, query.size(0), multiple, pow2)
    q, k, v = layout.pad(query), layout.pad(key), layout.pad(value)
    if isinstance(scale, Tensor):
        q, scale = q * scale, 1.0
    mask = flex_block_mask(pattern._replace(lengths=layout.lengths),
                           layout.max_len, edge_index)
    out = flex_attention_padded(q.contiguous(), k.contiguous(),
                                v.contiguous(), mask, float(scale))
    return layout.unpad(out)


# Sparse CSR tensors and data-dependent index building are not traceable by
# Dynamo: inside a compiled model the kernel runs eagerly (one graph break)
# and everything around it compiles.
@torch.compiler.disable
def _sparse_attention(query, key, value, edge_index, edge_key, edge_value,
                      bias, scale, normalization, dropout_p, reduce,
                      threshold, top_k, threshold_mode="drop",
                      top_k_fraction=None) -> EdgeAttention:
    """SDDMM scores, segment softmax, SpMM aggregation, all in the CSR
    order of the cached :class:`GraphIndex`; only ``[E, H]`` edge tensors
    are kept for backward.

    Half and bfloat16 inputs (autocast or low-precision weights) are
    computed in float32, with autocast off, and the output and weights come
    back in the inputs' dtype (torch has no low-precision SDDMM)."""
    dtype = result_dtype(query, key, value, edge_key, edge_value)
    inner = compute_dtype(dtype)
    with autocast_disabled(query.device):
        (query, key, value, edge_key, edge_value, bias,
         scale) = upcast_all(inner, query, key, value, edge_key, edge_value,
                             bias, scale)
        result = _sparse_attention_impl(query, key, value, edge_index,
                                        edge_key, edge_value, bias, scale,
                                        normalization, dropout_p, reduce,
                                        threshold, top_k, threshold_mode,
                                        top_k_fraction)
    if inner == dtype:
        return result
    return EdgeAttention(result.out.to(dtype), result.alpha.to(dtype),
                         result.edge_index)


def _sparse_attention_impl(query, key, value, edge_index, edge_key,
                           edge_value, bias, scale, normalization, dropout_p,
                           reduce, threshold, top_k, threshold_mode="drop",
                           top_k_fraction=None) -> EdgeAttention:
    index = graph_index(edge_index, key.size(0), query.size(0))
    edge_key = index.to_csr_order(edge_key)
    edge_value = index.to_csr_order(edge_value)
    scores = sddmm(query, key, index)
    if edge_key is not None:
        scores = scores + edge_dot(query, edge_key, index)
    scores = scores * scale
    if bias is not None:
        scores = scores + index.to_csr_order(bias)
    if normalization == "softmax":
        # The scores are in CSR order: the row pointers segment them
        # (faster on CPU than scattering by index.dst).
        alpha = edge_softmax(scores, ptr=index.dst_ptr)
    elif normalization == "relu":
        alpha = F.relu(scores)
    else:  # "raw"
        alpha = scores
    # The published code's threshold modes act on the dropped-out weights;
    # "drop" sparsifies first (dropout then acts on the kept weights).
    after_dropout = threshold_mode != "drop"
    if after_dropout:
        alpha = F.dropout(alpha, p=dropout_p, training=dropout_p > 0)
    if sparsifies(threshold, top_k, threshold_mode, top_k_fraction):
        csr_edges = torch.stack([index.src, index.dst])
        alpha, kept_edges, kept = sparsify_attention(
            alpha, csr_edges, threshold=threshold, top_k=top_k,
            threshold_mode=threshold_mode, top_k_fraction=top_k_fraction)
        if edge_value is not None:
            edge_value = edge_value[kept]
        # The kept subgraph is new (and already sorted by target).
        index = build_graph_index(kept_edges, index.num_src, index.num_dst)
        alpha_out, edges_out = alpha, kept_edges
    else:
        alpha_out, edges_out = None, edge_index
    weights = alpha if after_dropout else F.dropout(
        alpha, p=dropout_p, training=dropout_p > 0)
    out = aggregate_csr(value, weights, index, reduce, edge_value=edge_value)
    if alpha_out is None:
        alpha_out = index.to_input_order(alpha)
    return EdgeAttention(out, alpha_out, edges_out)
