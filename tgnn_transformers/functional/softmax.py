"""Softmax over the incoming edges of each node."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._checks import tracing
from ._precision import LOW_PRECISION, autocast_disabled


def _expand_index(index: Tensor, like: Tensor, dim: int = 0) -> Tensor:
    shape = [1] * like.dim()
    shape[dim] = -1
    return index.view(shape).expand_as(like)


def _resized(src: Tensor, dim: int, size: int) -> list:
    shape = list(src.shape)
    shape[dim] = size
    return shape


def segment_max(src: Tensor, index: Tensor, num_nodes: int,
                dim: int = 0) -> Tensor:
    """Per-node maximum of ``src`` over the entries along ``dim`` that share
    ``index``; ``-inf`` for nodes that have none."""
    out = src.new_full(_resized(src, dim, num_nodes), float("-inf"))
    return out.scatter_reduce(dim, _expand_index(index.long(), src, dim),
                              src, "amax", include_self=True)


def segment_sum(src: Tensor, index: Tensor, num_nodes: int,
                dim: int = 0) -> Tensor:
    """Per-node sum of ``src`` over the entries along ``dim`` that share
    ``index``."""
    out = src.new_zeros(_resized(src, dim, num_nodes))
    return out.index_add_(dim, index, src)


def _csr_reduce(src: Tensor, ptr: Tensor, dim: int, reduce: str) -> Tensor:
    """Reduction of ``src`` over the segments ``ptr[s]:ptr[s + 1]`` along
    ``dim`` (``-inf`` as the maximum of an empty segment, 0 as its sum)."""
    offsets = ptr.expand(*src.shape[:dim], ptr.numel())
    return torch._segment_reduce(src, reduce, offsets=offsets, axis=dim)


class _CSRSum(torch.autograd.Function):
    """Sum over the segments ``ptr[s]:ptr[s + 1]`` along ``dim`` with
    torch's fast ``_segment_reduce``, and a backward written as a gather
    (``segment``: the segment of each entry), which is differentiable
    again; ``_segment_reduce``'s own backward has no derivative, so double
    backward through the softmax failed."""

    @staticmethod
    def forward(ctx, src: Tensor, ptr: Tensor, segment: Tensor,
                dim: int) -> Tensor:
        ctx.save_for_backward(segment)
        ctx.dim = dim
        return _csr_reduce(src, ptr, dim, "sum")

    @staticmethod
    def backward(ctx, grad: Tensor):
        segment, = ctx.saved_tensors
        return grad.index_select(ctx.dim, segment), None, None, None


def _check_integer_vector(t, name: str, what: str, src: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor ({what}), got "
                        f"{type(t).__name__}")
    if t.dtype not in (torch.long, torch.int32):
        raise TypeError(f"{name} must hold integers (torch.long or "
                        f"torch.int32), got {t.dtype}")
    if t.device != src.device:
        raise ValueError(f"{name} must be on the device of src "
                         f"({src.device}), got {t.device}")


def _check_ptr(ptr: Tensor, size: int, dim: int, src: Tensor) -> None:
    what = f"CSR pointers of the segments along dim {dim}"
    _check_integer_vector(ptr, "ptr", what, src)
    if ptr.dim() != 1 or ptr.numel() == 0:
        raise ValueError(f"ptr must have shape [num_segments + 1] ({what}), "
                         f"got {list(ptr.shape)}")
    if tracing():
        return
    # One read of the device: the details only when something is wrong.
    bad = (ptr[0] != 0) | (ptr[-1] != size)
    if ptr.numel() > 1:
        bad |= (ptr[1:] < ptr[:-1]).any()
    if not bool(bad):
        return
    first, last = (int(v) for v in ptr[[0, -1]].tolist())
    if first != 0 or last != size:
        raise ValueError(f"ptr must start at 0 and end at src.size({dim}) = "
                         f"{size}, got ptr[0] = {first} and ptr[-1] = "
                         f"{last}")
    raise ValueError("ptr must be non-decreasing (CSR pointers), got a "
                     "decreasing step")


def edge_softmax(src: Tensor, index: Optional[Tensor] = None,
                 ptr: Optional[Tensor] = None,
                 num_nodes: Optional[int] = None, dim: int = 0) -> Tensor:
    r"""Softmax of edge scores over the edges that share a target node.

    The entries of ``src`` along ``dim`` are grouped into segments (the
    target node :math:`i` of each edge :math:`e`), and the softmax runs
    within each segment, independently for every other coordinate
    (e.g. every head):

    .. math::
        \alpha_{e} = \frac{\exp(s_e - m_i)}{\sum_{e' : \mathrm{index}[e'] = i}
        \exp(s_{e'} - m_i)}, \qquad m_i = \max_{e' \to i} s_{e'}

    The arguments and the result are those of
    :func:`torch_geometric.utils.softmax`, which this function can replace.

    Args:
        src: edge scores, e.g. ``[E]`` or ``[E, H]`` (one column per head);
            any floating-point tensor with the edges along ``dim``.
        index: ``[src.size(dim)]`` integer segment (target node) of each
            entry along ``dim``, e.g. ``edge_index[1]``; any order.
        ptr: ``[num_segments + 1]`` CSR pointers along ``dim``: segment
            ``i`` is ``src.narrow(dim, ptr[i], ptr[i + 1] - ptr[i])``, so the
            entries must be sorted by segment; ``ptr[0] = 0`` and
            ``ptr[-1] = src.size(dim)``.  Used instead of ``index`` (and
            ``num_nodes``) when given.  One of ``index`` and ``ptr`` is
            required.
        num_nodes: number of segments with ``index``; defaults to
            ``index.max() + 1``.  Segments without entries are allowed.
        dim: the dimension of ``src`` that holds the edges (negative values
            count from the end).

    Returns:
        Tensor of the shape and dtype of ``src`` (half and bfloat16 inputs
        are computed in float32).  Subtracting the per-segment maximum
        keeps large logits finite; nodes without incoming edges simply
        receive no weight, and a segment whose scores are all ``-inf``
        (every edge masked) gets all-zero weights instead of NaN.

    Raises:
        ValueError: neither ``index`` nor ``ptr`` is given, ``dim`` is out
            of range, or ``index`` / ``ptr`` does not fit ``src``.
        TypeError: ``src`` is not floating point or ``index`` / ``ptr`` do
            not hold integers.
    """
    if not isinstance(src, Tensor):
        raise TypeError(f"src must be a torch.Tensor of edge scores, got "
                        f"{type(src).__name__}")
    if not src.is_floating_point():
        raise TypeError(f"src must be floating point, got {src.dtype}")
    if src.dim() == 0:
        raise ValueError("src must have at least one dimension (the edges), "
                         "got a 0-d tensor")
    if not -src.dim() <= dim < src.dim():
        raise ValueError(f"dim must be in [{-src.dim()}, {src.dim() - 1}] "
                         f"for src of shape {list(src.shape)}, got {dim}")
    dim = dim % src.dim()
    if src.dtype in LOW_PRECISION:
        # Statistics (maximum, sum) in float32; the weights in src's dtype.
        with autocast_disabled(src.device):
            return edge_softmax(src.float(), index, ptr, num_nodes,
                                dim).to(src.dtype)
    size = src.size(dim)
    if ptr is not None:
        _check_ptr(ptr, size, dim, src)
        # The shift is a constant per segment: it changes nothing in the
        # result, so it needs no gradient.
        shift = _csr_reduce(src.detach(), ptr, dim, "amax")
        # Gathering through the expanded index is faster than
        # repeat_interleave, whose backward is slow.
        segment = torch.repeat_interleave(
            torch.arange(ptr.numel() - 1, device=ptr.device),
            ptr[1:] - ptr[:-1], output_size=size)
        expand = lambda t: t.index_select(dim, segment)  # noqa: E731
        denom_of = lambda w: _CSRSum.apply(w, ptr, segment,  # noqa: E731
                                           dim)
    elif index is not None:
        _check_integer_vector(index, "index", "the segment of each entry",
                              src)
        if index.dim() != 1 or index.numel() != size:
            raise ValueError(f"index must have shape [{size}] (the target "
                             f"of each entry of src along dim {dim}), got "
                             f"{list(index.shape)}")
        if num_nodes is None:
            num_nodes = int(index.max()) + 1 if index.numel() > 0 else 0
        elif num_nodes < 0:
            raise ValueError(f"num_nodes must be >= 0, got {num_nodes}")
        shift = segment_max(src.detach(), index, num_nodes, dim)
        expand = lambda t: t.index_select(dim, index)  # noqa: E731
        denom_of = lambda w: segment_sum(w, index, num_nodes,  # noqa: E731
                                         dim)
    else:
        raise ValueError("edge_softmax needs index (the segment of each "
                         "entry along dim) or ptr (CSR pointers of the "
                         "segments along dim); got neither")
    shift = shift.masked_fill(torch.isinf(shift), 0.0)
    weights = (src - expand(shift)).exp()
    denom = denom_of(weights)
    # denom >= 1 wherever a finite score exists (the maximum contributes
    # exp(0) = 1) and 0 where every score is -inf: clamping at 1 turns that
    # 0/0 into 0 and keeps the backward finite (a clamp at finfo.tiny let
    # 1/denom overflow, and inf * 0 gave NaN gradients to masked scores).
    return weights / expand(denom.clamp_min(1.0))
