"""Batches of complete or causal token graphs on
:func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels on
the padded ``[B, H, L, C]`` layout, no per-edge tensors)."""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

import torch.nn.functional as F
from torch import Tensor

from .._cache import cached_on
from .._checks import tracing
from ..layout import PaddedLayout, padded_layout
from ..patterns import TokenPattern
from .base import AttentionBackend, AttentionCall, Capabilities, EdgeAttention

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


def _plan(call: AttentionCall) -> Optional[Tuple[TokenPattern,
                                                PaddedLayout]]:
    """The call's complete or causal token pattern and its padded layout,
    or None for any other graph; one lookup per call, kept on the graph
    (the layout also by its lengths: a new graph of the same lengths,
    the next batch, reuses it)."""
    num_nodes = call.query.size(0)

    def build():
        pattern = call.token_pattern()
        if pattern is None or pattern.kind == "window":
            return None
        return pattern, padded_layout(pattern.lengths, num_nodes)

    return cached_on(call.edge_index, "dense_plan", build, call.batch,
                     num_nodes)


class DenseBackend(AttentionBackend):
    """SDPA for complete and causal token batches (ragged lengths take a
    key-padding mask; causal ones need none, padding comes last)."""
    name = "dense"
    capabilities = Capabilities(weights=False, edge_terms=False, scores=False,
                                bipartite=False, reductions=("sum", "mean"),
                                many_reductions=False)

    def tried_by_auto(self, call: AttentionCall) -> bool:
        # Recognising the pattern reads tensor values, which would break
        # the compiled graph on every call: compiled "auto" stays sparse
        # (an explicit backend="dense" still runs).
        return not tracing()

    def refusals(self, call: AttentionCall) -> List[str]:
        if call.reduce == "mean" and call.dropout_p > 0:
            # softmax weights sum to 1, so the mean is the sum -- until
            # dropout removes some of them
            return [f"reduce={call.reduce!r} with attention dropout"]
        return []

    def graph_refusals(self, call: AttentionCall) -> List[str]:
        plan = _plan(call)
        if plan is None:
            return ["the graph is not a batch of complete or causal token "
                    "graphs"]
        pattern, layout = plan
        reason = _too_large(layout, call.query.size(1),
                            call.query.element_size(),
                            pattern.kind == "causal")
        return [reason] if reason else []

    def run(self, call: AttentionCall) -> EdgeAttention:
        pattern, layout = _plan(call)
        causal = pattern.kind == "causal"
        q, k, v = layout.pad(call.query, call.key, call.value)
        scale = call.scale
        if isinstance(scale, Tensor):  # SDPA takes a Python float scale only
            q, scale = q * scale, 1.0
        # Causal graphs put padding after the last real token, so the causal
        # mask alone already hides it; full graphs need a key padding mask.
        mask = layout.key_mask() if (layout.ragged and not causal) else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=call.dropout_p,
                                             is_causal=causal, scale=scale)
        return EdgeAttention(layout.unpad(out), None, call.edge_index)


def _too_large(layout: PaddedLayout, heads: int, element_size: int,
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
