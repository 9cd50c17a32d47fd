"""Batches of token graphs of a known pattern -- complete, causal, or a
(dilated) sliding window, ragged lengths allowed -- on
:func:`torch.nn.attention.flex_attention.flex_attention`, with a block mask
built from the recognised pattern (cached with the ``edge_index``).

Torch runs FlexAttention's backward only on GPUs: on the CPU it is
forward-only (inputs that need gradients are refused).
"""
from __future__ import annotations

import functools
import warnings
from typing import List, Tuple

import torch
from torch import Tensor

from .._cache import cached_on
from .._checks import tracing
from ..layout import PaddedLayout
from ..patterns import TokenPattern
from ..triton_attention import next_pow2
from .base import AttentionBackend, AttentionCall, Capabilities, EdgeAttention

#: FlexAttention's default block size (tokens).
FLEX_BLOCK = 128


def flex_supported() -> bool:
    """Whether this torch has FlexAttention."""
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def flex_preferred(query: Tensor) -> bool:
    """Whether ``backend="auto"`` tries FlexAttention: on CUDA, where it
    has a backward and is compiled (on an H200 it ran a 64k-token window
    graph 1.2x (fp32) to 8x (bf16) faster than the Triton kernel)."""
    return query.is_cuda and flex_supported()


def flex_padding(query: Tensor) -> Tuple[int, bool]:
    """``(length multiple, batch to a power of two)`` of FlexAttention's
    padded layout.  On CUDA the compiled kernel is specialised per shape,
    so shapes are bucketed: the length rounded up to the 128-token block and
    the batch (with empty sequences, whose blocks are skipped) to a power of
    two.  New sequence lengths in a bucket do not recompile; new shapes do,
    and after torch's ``recompile_limit`` (8) FlexAttention runs eagerly."""
    return (FLEX_BLOCK, True) if query.is_cuda else (1, False)


def _pad_batch(lengths: Tensor, pow2: bool) -> Tensor:
    """``lengths`` with empty sequences up to a power-of-two batch."""
    batch_size = lengths.numel()
    target = next_pow2(batch_size) if pow2 else batch_size
    return torch.cat([lengths, lengths.new_zeros(target - batch_size)])


def _mask_mod(pattern: TokenPattern):
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


def block_mask(pattern: TokenPattern, max_len: int, edge_index: Tensor):
    """The FlexAttention block mask of ``pattern`` (cached)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def build():
        return create_block_mask(_mask_mod(pattern), pattern.lengths.numel(),
                                 None, max_len, max_len,
                                 device=pattern.lengths.device)
    return cached_on(edge_index, "flex_block_mask", build, max_len,
                     pattern.lengths, pattern.kind, pattern.window,
                     pattern.dilation)


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


def flex_attention_padded(q: Tensor, k: Tensor, v: Tensor, mask,
                          scale: float) -> Tensor:
    """``[B, H, L, C]`` attention under the block mask (compiled on GPUs,
    where eager FlexAttention would materialise the scores; eager on the
    CPU, on purpose: ``backend="flex"`` there serves parity checks, and
    compiling it would cost far more than the scores it saves, so torch's
    notice that it runs uncompiled is not shown)."""
    if q.is_cuda:
        return _compiled_flex()(q, k, v, block_mask=mask, scale=scale)
    from torch.nn.attention.flex_attention import flex_attention
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning,
                                message=_UNCOMPILED_NOTICE)
        return flex_attention(q, k, v, block_mask=mask, scale=scale)


#: The start of torch's notice when FlexAttention runs without
#: ``torch.compile`` (it materialises the scores), issued once per process.
_UNCOMPILED_NOTICE = r"flex_attention called without torch\.compile"


class FlexBackend(AttentionBackend):
    """FlexAttention on the padded token batch of the recognised pattern
    (:func:`flex_padding` says how far it is padded)."""
    name = "flex"
    capabilities = Capabilities(weights=False, edge_terms=False, scores=False,
                                dropout=False, bipartite=False,
                                reductions=("sum", ), many_reductions=False)

    def tried_by_auto(self, call: AttentionCall) -> bool:
        return flex_preferred(call.query)

    def refusals(self, call: AttentionCall) -> List[str]:
        query, key, value = call.query, call.key, call.value
        reasons = []
        if not flex_supported():
            reasons.append("this torch has no FlexAttention")
        if not query.dtype == key.dtype == value.dtype:
            reasons.append("query, key and value of different dtypes")
        if query.is_cuda and min(query.size(-1), value.size(-1)) < 16:
            # compiled FlexAttention refuses heads narrower than 16 channels
            reasons.append("fewer than 16 channels per head on CUDA")
        if not query.is_cuda and torch.is_grad_enabled() and any(
                t.requires_grad for t in (query, key, value)):
            reasons.append("gradients on the CPU (torch runs "
                           "FlexAttention's backward only on GPUs)")
        if tracing():
            reasons.append("torch.compile tracing")
        return reasons

    def graph_refusals(self, call: AttentionCall) -> List[str]:
        if call.edge_index.size(1) == 0 or call.query.size(0) == 0:
            return ["an empty graph"]
        if call.token_pattern() is None:
            return ["the graph is not a batch of full, causal or (dilated) "
                    "window token graphs"]
        return []

    def run(self, call: AttentionCall) -> EdgeAttention:
        query = call.query
        pattern = call.token_pattern()
        multiple, pow2 = flex_padding(query)
        num_nodes = query.size(0)
        layout = cached_on(
            call.edge_index, "flex_layout",
            lambda: PaddedLayout(_pad_batch(pattern.lengths, pow2),
                                 num_nodes, multiple),
            call.batch, num_nodes, multiple, pow2)
        q, k, v = (layout.pad(t) for t in (query, call.key, call.value))
        scale = call.scale
        if isinstance(scale, Tensor):
            q, scale = q * scale, 1.0
        mask = block_mask(pattern._replace(lengths=layout.lengths),
                          layout.max_len, call.edge_index)
        out = flex_attention_padded(q.contiguous(), k.contiguous(),
                                    v.contiguous(), mask, float(scale))
        return EdgeAttention(layout.unpad(out), None, call.edge_index)
