r"""Attention-weighted aggregation in one Triton pass (PNA-Attention's
reductions on CUDA, or on CPU tensors in Triton's interpreter).

:func:`~tgnn_transformers.functional.attention_aggregate` with several
reductions needs, per target :math:`i` and head :math:`h`, the weighted sum
:math:`\sum_j \alpha_{ij} v_j`, the weighted second moment
:math:`\sum_j \alpha_{ij} v_j^2`, the total weight
:math:`\sum_j \alpha_{ij}`, and the max and min of :math:`v_j` over the
edges with :math:`\alpha_{ij} > 0`.  The composed path reads every edge
once per statistic and head (and gathers ``[E, H, C]`` messages for max
and min).  Here:

* **forward**: one program per target row and head streams the row's
  edges in blocks of ``BLOCK_E`` (the attention kernel's work items, rows
  not split) and keeps every statistic it is asked for in registers, with
  the first edge reaching each max and min;
* **backward**: one pass over the *source* rows (CSC order, split like the
  attention kernel's by-source backward) sums each source's value gradient
  over its outgoing edges -- ``α (g_sum + 2 v g_sq)`` plus the max / min
  gradients of the outputs it won -- and writes each edge's weight
  gradient ``<g_sum, v> + <g_sq, v^2> + g_total`` once: no per-edge
  atomics.

float32 only (the composed path upcasts half precision to float32 before
aggregating; float64 stays on the composed path); no edge terms.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ._cache import cached_on
from .sparse_ops import GraphIndex
from . import triton_attention
from .triton_attention import (WorkItems, _blocks, _dummy, _launch,
                               build_work_items, work_items_by_source)


class Moments(NamedTuple):
    """What one aggregation pass returns (``None``: not asked for)."""
    weighted_sum: Optional[Tensor]  # [N, H, C]: sum_j a_ij v_j
    second: Optional[Tensor]  # [N, H, C]: sum_j a_ij v_j^2
    total: Optional[Tensor]  # [N, H]: sum_j a_ij
    maximum: Optional[Tensor]  # [N, H, C], 0 without a kept edge
    minimum: Optional[Tensor]  # [N, H, C]


@functools.lru_cache(maxsize=None)
def _kernels():
    from . import _triton_kernels as k
    return k.aggregate_forward, k.aggregate_backward_by_source


def _row_items(index: GraphIndex) -> WorkItems:
    """One item per target row (max and min do not merge across split
    items), longest first; cached with the index."""
    def build() -> WorkItems:
        degree = index.dst_ptr[1:] - index.dst_ptr[:-1]
        longest = int(degree.max()) if index.num_dst else 1
        return build_work_items(index.dst_ptr, split=max(longest, 1))
    return cached_on(index.dst_ptr, "triton_aggregate_items", build,
                     triton_attention.BLOCK_E)


class _TritonAggregate(torch.autograd.Function):

    @staticmethod
    def forward(ctx, value, weight, index, by_source, need_sum, need_sq,
                need_ext):
        forward_kernel, _ = _kernels()
        num_dst, heads, channels = index.num_dst, value.size(1), value.size(2)
        f32 = dict(dtype=torch.float32, device=value.device)
        shape = (num_dst, heads, channels)
        empty = value.new_zeros(0)
        out_sum = torch.empty(shape, **f32) if need_sum else empty
        total = torch.empty(num_dst, heads, **f32) if need_sum else empty
        out_sq = torch.empty(shape, **f32) if need_sq else empty
        out_max = torch.empty(shape, **f32) if need_ext else empty
        out_min = torch.empty(shape, **f32) if need_ext else empty
        long = dict(dtype=torch.long, device=value.device)
        arg_max = torch.empty(shape, **long) if need_ext else empty.long()
        arg_min = torch.empty(shape, **long) if need_ext else empty.long()
        items = _row_items(index)
        grid = (items.row.numel(), heads)
        if grid[0] > 0:
            block_c = _blocks(channels)
            forward_kernel[grid](
                value, weight, index.src, items.row, items.start, items.end,
                _or_dummy(out_sum), _or_dummy(out_sq), _or_dummy(total),
                _or_dummy(out_max), _or_dummy(out_min), _or_dummy(arg_max),
                _or_dummy(arg_min), index.num_edges, heads, channels,
                NEED_SUM=need_sum, NEED_SQ=need_sq, NEED_EXT=need_ext,
                BLOCK_E=items.block_e, BLOCK_C=block_c,
                **_launch(items.block_e, block_c))
        ctx.save_for_backward(value, weight, arg_max, arg_min)
        ctx.index, ctx.by_source = index, by_source
        ctx.flags = (need_sum, need_sq, need_ext)
        return out_sum, out_sq, total, out_max, out_min

    @staticmethod
    def backward(ctx, g_sum, g_sq, g_total, g_max, g_min):
        _, backward_kernel = _kernels()
        value, weight, arg_max, arg_min = ctx.saved_tensors
        index, items = ctx.index, ctx.by_source
        need_sum, need_sq, need_ext = ctx.flags
        heads, channels = value.size(1), value.size(2)
        grads = {
            "GSUM": g_sum if need_sum else None,
            "GSQ": g_sq if need_sq else None,
            "GTOTAL": g_total if need_sum else None,
            "GMAX": g_max if need_ext else None,
            "GMIN": g_min if need_ext else None,
        }
        grads = {k: None if g is None else g.float().contiguous()
                 for k, g in grads.items()}
        # max and min do not depend on the weights' values (only on which
        # are positive): without a weighted statistic, no weight gradient
        need_dw = ctx.needs_input_grad[1] and (need_sum or need_sq)
        dv = torch.zeros(value.shape, dtype=torch.float32,
                         device=value.device)
        dw = (torch.zeros(weight.shape, dtype=torch.float32,
                          device=value.device) if need_dw else _dummy(dv))
        if index.num_edges > 0 and items.row.numel() > 0:
            block_c = _blocks(channels)
            backward_kernel[(items.row.numel(), heads)](
                value, weight, index.dst_by_src, index.to_csc, items.row,
                items.start, items.end,
                *(_or_dummy(g, dv) for g in grads.values()),
                _or_dummy(arg_max), _or_dummy(arg_min), dv, dw, heads,
                channels,
                **{f"HAS_{k}": g is not None for k, g in grads.items()},
                NEED_DW=need_dw, BLOCK_E=items.block_e, BLOCK_C=block_c,
                **_launch(items.block_e, block_c))
        return (dv if ctx.needs_input_grad[0] else None,
                dw if need_dw else None, None, None, None, None, None)


def _or_dummy(t: Optional[Tensor], like: Optional[Tensor] = None) -> Tensor:
    """``t``, or a one-element placeholder for a pointer the kernel does
    not read (``t`` absent or empty)."""
    if t is not None and t.numel() > 0:
        return t
    return _dummy(t if like is None else like)


def triton_aggregate_available(value: Tensor) -> bool:
    """Whether :func:`triton_moments` can serve ``value``: float32 on CUDA,
    or on the CPU in Triton's interpreter, with Triton installed."""
    from .triton_attention import interpreting, triton_available
    on_device = value.is_cuda or (interpreting() and
                                  value.device.type == "cpu")
    return (value.dtype == torch.float32 and on_device and
            triton_available())


@torch.compiler.disable
def triton_moments(value: Tensor, weight: Tensor, index: GraphIndex, *,
                   need_sum: bool, need_second: bool,
                   need_extremes: bool) -> Moments:
    """The statistics :func:`aggregate_csr` reduces to, in one Triton pass
    over each target's edges (``weight`` ``[E, H]`` in CSR order)."""
    value = value.contiguous()
    weight = weight.contiguous()
    by_source = None
    if torch.is_grad_enabled() and (value.requires_grad or
                                    weight.requires_grad):
        by_source = work_items_by_source(index)
    out = _TritonAggregate.apply(value, weight, index, by_source, need_sum,
                                 need_second, need_extremes)
    pick = lambda t, need: t if need else None  # noqa: E731
    return Moments(pick(out[0], need_sum), pick(out[1], need_second),
                   pick(out[2], need_sum), pick(out[3], need_extremes),
                   pick(out[4], need_extremes))
