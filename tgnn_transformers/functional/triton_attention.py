r"""A fused CSR attention kernel in Triton (``backend="triton"``).

FlashAttention's method on a graph in CSR order (edges sorted by target):

* **forward**: one program per *work item* (a slice of at most
  :data:`ROW_SPLIT` incoming edges of one target row) and head.  It streams
  the item's edges in blocks of ``BLOCK_E``, gathers the source keys and
  values, computes the scores ``scale * <q_i, k_j + ek_e> + b_e`` and keeps
  a running maximum and sum (online softmax) and an fp32 accumulator of the
  weighted values.  It writes the output and one log-sum-exp per node and
  head; nothing of size ``E x C`` is stored.  Rows longer than
  ``ROW_SPLIT`` edges (hubs of power-law graphs) are split into several
  items whose partial ``(max, sum, acc)`` are merged afterwards, so a hub
  does not serialise the launch; items are launched longest first.
* **backward**: recomputes every weight from the saved log-sum-exp,
  ``p_e = exp(s_e - lse_i)``, with ``D_i = <dO_i, O_i>`` (plus
  ``sum_e p_e dalpha_e`` when the returned weights get a gradient), and
  ``ds_e = p_e (<dO_i, v_j + ev_e> + dalpha_e - D_i)``.  A pass over the
  target rows sums ``dq`` (and, for a tensor ``scale``, ``sum_e ds_e
  <q_i, k_j + ek_e>``); a pass over the *source* rows (CSC order, split
  like the target rows) sums ``dk_j`` and ``dv_j`` over each source's
  outgoing edges and writes the per-edge gradients (edge keys, edge
  values, bias) only when those inputs need them.  Summing by source
  instead of one fp32 atomic add per edge and channel made the backward
  of a 10M-edge graph 1.5x faster on an H200 (10.5 ms against 16.0 ms,
  each at its best warp count); ``BACKWARD = "atomic"`` keeps the
  single-pass, atomic variant.
* ``need_weights``: a third kernel writes ``p_e`` from the final
  log-sum-exp, only on request.

Inputs may be float32, bfloat16 or float16; every load is converted to
float32 and all statistics and sums are float32; outputs come back in the
inputs' dtype.  What the kernel does not do -- attention dropout,
reductions other than ``"sum"``, ``normalization="relu"``, threshold /
top-k sparsification, float64 -- the ``"triton"`` backend
(:class:`~tgnn_transformers.functional.backends.triton.TritonBackend`)
names as the reason it cannot run a call.

The kernels are built on first use, so this module imports without Triton;
with ``TRITON_INTERPRET=1`` set before that first use they run in Triton's
interpreter on CPU tensors (how the test suite checks them without a GPU).
"""
from __future__ import annotations

import functools
import os
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from ._cache import cached_on
from ._checks import check_choice
from ._precision import result_dtype
from .sparse_ops import GraphIndex, graph_index

#: Most edges one program handles; longer rows are split into several
#: work items merged afterwards (a multiple of every ``BLOCK_E``).
ROW_SPLIT = 512

#: Launch settings, ``None`` for the defaults (``BLOCK_E`` from the mean
#: degree; warps from the tile size, :func:`_launch`);
#: ``benchmarks/tune_triton.py`` sets them to time alternatives on a GPU.
BLOCK_E: Optional[int] = None
NUM_WARPS: Optional[int] = None

#: How the backward finds the key and value gradients: ``"by_source"``
#: walks each source's outgoing edges (CSC order) and writes its gradient
#: once per work item; ``"atomic"`` adds every edge's share to its source
#: with an atomic add from the target-ordered pass.
BACKWARD = "by_source"
BACKWARDS = ("by_source", "atomic")

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether ``import triton`` works."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    """Whether Triton's interpreter is requested (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# --------------------------------------------------------------------------
# work items
# --------------------------------------------------------------------------

class WorkItems(NamedTuple):
    """The launch plan of one graph (cached with its ``edge_index``)."""
    row: Tensor  # [I] target row of each item
    start: Tensor  # [I] first edge (CSR position)
    end: Tensor  # [I] one past the last edge
    slot: Tensor  # [I] partial-result slot of a split row's item, else -1
    slot_row: Tensor  # [P] target row of every partial slot
    block_e: int  # edges per block (a power of two)


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def build_work_items(dst_ptr: Tensor, split: Optional[int] = None,
                     empty_rows: bool = True) -> WorkItems:
    """Splits every row into items of at most ``split`` (default
    :data:`ROW_SPLIT`) edges, longest first; an empty row gets one item
    (its output is written) unless ``empty_rows=False``."""
    split = ROW_SPLIT if split is None else split
    device = dst_ptr.device
    num_rows = dst_ptr.numel() - 1
    degree = dst_ptr[1:] - dst_ptr[:-1]
    chunks = (degree + split - 1) // split
    if empty_rows:
        chunks = chunks.clamp_min(1)
    row = torch.repeat_interleave(torch.arange(num_rows, device=device),
                                  chunks)
    first_item = torch.cumsum(chunks, 0) - chunks
    part = torch.arange(row.numel(), device=device) - first_item[row]
    start = dst_ptr[row] + part * split
    end = torch.minimum(start + split, dst_ptr[row + 1])
    is_split = chunks[row] > 1
    slot = torch.full_like(row, -1)
    slot[is_split] = torch.arange(int(is_split.sum()), device=device)
    slot_row = row[is_split]
    order = torch.argsort(end - start, descending=True, stable=True)
    num_edges = int(dst_ptr[-1]) if num_rows else 0
    mean_degree = num_edges / max(num_rows, 1)
    block_e = BLOCK_E or min(64, max(16, next_pow2(int(mean_degree))))
    as_i32 = lambda t: t[order].to(torch.int32).contiguous()  # noqa: E731
    return WorkItems(as_i32(row), start[order].contiguous(),
                     end[order].contiguous(), as_i32(slot), slot_row,
                     block_e)


def work_items(edge_index: Tensor, index: GraphIndex) -> WorkItems:
    """Work items over the target rows (forward, weights, ``dq``)."""
    return cached_on(edge_index, "triton_work_items",
                     lambda: build_work_items(index.dst_ptr),
                     index.num_src, index.num_dst, ROW_SPLIT, BLOCK_E)


def work_items_by_source(index: GraphIndex) -> WorkItems:
    """Work items over the source rows (the ``"by_source"`` backwards of
    the attention and the aggregation kernels), cached with the graph's
    index."""
    return cached_on(index.src_ptr, "triton_work_items_by_source",
                     lambda: build_work_items(index.src_ptr,
                                              empty_rows=False),
                     ROW_SPLIT, BLOCK_E)


# --------------------------------------------------------------------------
# kernels (built on first use)
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _kernels():
    from . import _triton_kernels as k
    return k.forward, k.weights, k.backward, k.backward_by_source


def _blocks(channels: int) -> int:
    return max(16, next_pow2(channels))


def _grid(items: WorkItems, heads: int) -> Tuple[int, int]:
    return (items.row.numel(), heads)


def _launch(block_e: int, block_c: int) -> dict:
    """Warps per program: one per 1024 elements of the ``BLOCK_E x
    BLOCK_C`` tile.  The tiles are small (one head's channels), and on an
    H200 one warp ran the 16 x 32 and 32 x 32 tiles of a 10M-edge graph
    fastest, forward and by-source backward (``benchmarks/tune_triton.py``:
    15.2 ms against 17.5 ms with two warps in the backward, 28.5 ms with
    four); the ``"atomic"`` backward ran best with two (22.4 ms)."""
    if NUM_WARPS is not None:
        return {"num_warps": NUM_WARPS}
    return {"num_warps": max(1, min(4, block_e * block_c // 1024))}


def _dummy(like: Tensor) -> Tensor:
    return like.new_zeros(1)


def _merge_partials(items: WorkItems, out: Tensor, lse: Tensor,
                    acc: Tensor, m: Tensor, l: Tensor) -> None:
    """Merges the partial ``(max, sum, acc)`` of split rows into ``out``
    and ``lse`` (fp32, a few rows)."""
    if items.slot_row.numel() == 0:
        return
    rows = items.slot_row
    num_rows, heads = lse.shape
    row_max = m.new_full((num_rows, heads), float("-inf")).scatter_reduce(
        0, rows.view(-1, 1).expand_as(m), m, "amax",
        include_self=True)[rows]
    shift = torch.where(torch.isinf(row_max), torch.zeros_like(row_max),
                        row_max)
    w = torch.exp(m - shift)  # 0 for partials without finite scores
    total = torch.zeros(num_rows, heads, dtype=torch.float32,
                        device=m.device).index_add_(0, rows, l * w)
    summed = torch.zeros(num_rows, heads, acc.size(-1), dtype=torch.float32,
                         device=m.device).index_add_(
                             0, rows, acc * w.unsqueeze(-1))
    split_rows = torch.unique(rows)
    t = total[split_rows]
    safe = torch.where(t > 0, t, torch.ones_like(t))
    row_shift = torch.zeros(num_rows, heads, dtype=torch.float32,
                            device=m.device)
    row_shift[rows] = shift  # the same for every partial of a row
    out[split_rows] = torch.where(
        t.unsqueeze(-1) > 0, summed[split_rows] / safe.unsqueeze(-1),
        torch.zeros_like(summed[split_rows])).to(out.dtype)
    lse[split_rows] = torch.where(t > 0, row_shift[split_rows] +
                                  torch.log(safe),
                                  torch.full_like(t, float("inf")))


class _TritonAttention(torch.autograd.Function):

    @staticmethod
    def forward(ctx, query, key, value, edge_key, edge_value, bias, scale,
                index, items, items_by_source, need_weights):
        forward_kernel, weights_kernel, _, _ = _kernels()
        num_dst, heads, channels = query.shape
        value_channels = value.size(-1)
        # fp32 output buffer: the backward's D = <dO, O> cancels against
        # <dO, v>, so it is taken from the unrounded output (bf16 rounding
        # there cost 2.6 % on the score gradients, 0.5 % with this).
        out = torch.empty(num_dst, heads, value_channels,
                          dtype=torch.float32, device=query.device)
        lse = torch.empty(num_dst, heads, dtype=torch.float32,
                          device=query.device)
        slots = items.slot_row.numel()
        part_acc = torch.empty(max(slots, 1), heads, value_channels,
                               dtype=torch.float32, device=query.device)
        part_m = torch.empty(max(slots, 1), heads, dtype=torch.float32,
                             device=query.device)
        part_l = torch.empty_like(part_m)
        ek = edge_key if edge_key is not None else _dummy(query)
        ev = edge_value if edge_value is not None else _dummy(value)
        b = bias if bias is not None else _dummy(lse)
        grid = _grid(items, heads)
        if grid[0] > 0:
            forward_kernel[grid](
                query, key, value, ek, ev, b, scale, index.src, items.row,
                items.start, items.end, items.slot, out, lse, part_acc,
                part_m, part_l, heads, channels, value_channels,
                HAS_EK=edge_key is not None, HAS_EV=edge_value is not None,
                HAS_B=bias is not None, BLOCK_E=items.block_e,
                BLOCK_C=_blocks(channels), BLOCK_V=_blocks(value_channels),
                **_launch(items.block_e, _blocks(channels)))
        _merge_partials(items, out, lse, part_acc[:slots], part_m[:slots],
                        part_l[:slots])
        if need_weights:
            alpha = torch.empty(index.num_edges, heads, dtype=torch.float32,
                                device=query.device)
            if grid[0] > 0 and index.num_edges > 0:
                weights_kernel[grid](
                    query, key, ek, b, scale, index.src, items.row,
                    items.start, items.end, lse, alpha, heads, channels,
                    HAS_EK=edge_key is not None, HAS_B=bias is not None,
                    BLOCK_E=items.block_e, BLOCK_C=_blocks(channels),
                    **_launch(items.block_e, _blocks(channels)))
            alpha = alpha.to(value.dtype)
        else:
            alpha = out.new_empty(0, heads)
            ctx.mark_non_differentiable(alpha)
        ctx.save_for_backward(query, key, value, edge_key, edge_value, bias,
                              scale, out, lse, alpha)
        ctx.index, ctx.items = index, items
        ctx.items_by_source = items_by_source
        ctx.need_weights = need_weights
        return out.to(value.dtype), alpha

    @staticmethod
    def backward(ctx, grad_out, grad_alpha):
        _, _, backward_kernel, by_source_kernel = _kernels()
        (query, key, value, edge_key, edge_value, bias, scale, out, lse,
         alpha) = ctx.saved_tensors
        index, items = ctx.index, ctx.items
        items_by_source = ctx.items_by_source
        num_dst, heads, channels = query.shape
        value_channels = value.size(-1)
        f32 = dict(dtype=torch.float32, device=query.device)
        grad_out = grad_out.contiguous()
        delta = (grad_out.float() * out.float()).sum(-1)
        has_dalpha = ctx.need_weights and grad_alpha is not None
        if has_dalpha:
            grad_alpha = grad_alpha.float().contiguous()
            delta = delta.index_add(0, index.dst,
                                    alpha.float() * grad_alpha)
        dq = torch.zeros(num_dst, heads, channels, **f32)
        dk = torch.zeros(key.shape, **f32)
        dv = torch.zeros(value.shape, **f32)
        need_dek = edge_key is not None and ctx.needs_input_grad[3]
        need_dev = edge_value is not None and ctx.needs_input_grad[4]
        need_db = bias is not None and ctx.needs_input_grad[5]
        num_edges = index.num_edges
        dek = (torch.empty(num_edges, heads, channels, **f32) if need_dek
               else _dummy(dq))
        dev = (torch.empty(num_edges, heads, value_channels, **f32)
               if need_dev else _dummy(dq))
        db = torch.empty(num_edges, heads, **f32) if need_db else _dummy(dq)
        grid = _grid(items, heads)
        dscale = torch.zeros(max(grid[0], 1), heads, **f32)
        inputs = (query, key, value,
                  edge_key if edge_key is not None else _dummy(query),
                  edge_value if edge_value is not None else _dummy(value),
                  bias if bias is not None else _dummy(lse), scale)
        flags = dict(HAS_EK=edge_key is not None,
                     HAS_EV=edge_value is not None, HAS_B=bias is not None,
                     HAS_DALPHA=has_dalpha, BLOCK_C=_blocks(channels),
                     BLOCK_V=_blocks(value_channels))
        # the pass that adds the key/value gradients writes the per-edge ones
        by_source = items_by_source is not None
        edge_grads = dict(NEED_DEK=need_dek, NEED_DEV=need_dev,
                          NEED_DB=need_db)
        no_edge_grads = dict.fromkeys(edge_grads, False)
        dalpha = grad_alpha if has_dalpha else _dummy(lse)
        if grid[0] > 0 and num_edges > 0:
            backward_kernel[grid](
                *inputs, index.src, items.row, items.start, items.end, lse,
                delta, grad_out, dalpha, dq, dk, dv, dek, dev, db, dscale,
                heads, channels, value_channels, ATOMIC_KV=not by_source,
                BLOCK_E=items.block_e, **flags,
                **(no_edge_grads if by_source else edge_grads),
                **_launch(items.block_e, _blocks(channels)))
        if by_source and num_edges > 0:
            by_source_kernel[_grid(items_by_source, heads)](
                *inputs, index.dst_by_src, index.to_csc, items_by_source.row,
                items_by_source.start, items_by_source.end, lse, delta,
                grad_out, dalpha, dk, dv, dek, dev, db, heads, channels,
                value_channels, BLOCK_E=items_by_source.block_e, **flags,
                **edge_grads,
                **_launch(items_by_source.block_e, _blocks(channels)))
        grads = [dq.to(query.dtype), dk.to(key.dtype), dv.to(value.dtype),
                 dek.to(edge_key.dtype) if need_dek else None,
                 dev.to(edge_value.dtype) if need_dev else None,
                 db.to(bias.dtype) if need_db else None,
                 dscale.sum().reshape(scale.shape).to(scale.dtype)
                 if ctx.needs_input_grad[6] else None]
        return (*grads, None, None, None, None)


@torch.compiler.disable
def triton_attention(query: Tensor, key: Tensor, value: Tensor,
                     edge_index: Tensor, *, edge_key: Optional[Tensor],
                     edge_value: Optional[Tensor], bias: Optional[Tensor],
                     scale, need_weights: bool):
    """``(out, alpha)`` of softmax attention with ``reduce="sum"`` (the
    arguments of :func:`edge_attention`; the backend checks what the kernel
    supports first).
    ``alpha`` is ``[E, H]`` in the input edge order, or ``None``."""
    index = graph_index(edge_index, key.size(0), query.size(0))
    items = work_items(edge_index, index)
    dtype = result_dtype(query, key, value, edge_key, edge_value)
    cast = lambda t: None if t is None else t.to(dtype).contiguous()  # noqa
    query, key, value = cast(query), cast(key), cast(value)
    edge_key = cast(index.to_csr_order(edge_key))
    edge_value = cast(index.to_csr_order(edge_value))
    bias = index.to_csr_order(bias)
    if bias is not None:
        bias = bias.float().contiguous()
    if isinstance(scale, Tensor):
        scale_t = scale.float().reshape(1)
    else:
        scale_t = torch.full((1, ), float(scale), dtype=torch.float32,
                             device=query.device)
    check_choice("BACKWARD", BACKWARD, BACKWARDS)
    items_by_source = None
    if BACKWARD == "by_source" and torch.is_grad_enabled() and any(
            t is not None and t.requires_grad
            for t in (query, key, value, edge_key, edge_value, bias)):
        items_by_source = work_items_by_source(index)
    out, alpha = _TritonAttention.apply(query, key, value, edge_key,
                                        edge_value, bias, scale_t, index,
                                        items, items_by_source, need_weights)
    if not need_weights:
        return out, None
    return out, index.to_input_order(alpha)
