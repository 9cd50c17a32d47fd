"""Attention-weighted aggregation of values over incoming edges."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ._checks import check_choice, tracing
from ._precision import (autocast_disabled, compute_dtype, result_dtype,
                         upcast_all)
from .softmax import segment_sum
from .sparse_ops import (GraphIndex, edge_weighted_sum, graph_index,
                         spmm)
from .triton_aggregate import triton_aggregate_available, triton_moments

#: The ``reduce`` choices of :func:`attention_aggregate`.
REDUCTIONS = ("sum", "mean", "max", "min", "var", "std")

# Below this variance the standard deviation is reported as exactly 0.
_STD_EPS = 1e-12


def _safe_sqrt(var: Tensor) -> Tensor:
    # sqrt'(0) is infinite; evaluate the root on a clamped copy and select 0
    # where the variance vanishes, so both value and gradient stay finite.
    positive = var > _STD_EPS
    return torch.where(positive, var.clamp_min(_STD_EPS).sqrt(),
                       torch.zeros_like(var))


def _row_extremes_available(value: Tensor, edge_value: Optional[Tensor],
                            keep_all: bool, num_edges: int) -> bool:
    """Whether torch's CSR max / min product can serve: CPU (it has no
    CUDA kernel), unmasked edges (the product has one pattern for all
    heads; a per-head mask would need one product per head), no edge term
    (it takes node rows only) and at least one edge (without edges it
    records no winners)."""
    return (keep_all and edge_value is None and value.device.type == "cpu"
            and num_edges > 0 and _CSR_REDUCE is not None)


# torch's sparse-dense product with a max / min reduction (the CPU kernel
# written for PyG): one pass over each target's edges, all heads and
# channels at once, recording each output's winning edge.  The public
# ``torch.sparse.mm(A, x, "amax")`` wraps it with a backward that is slower
# than sending each gradient to its winner, so the op is called directly.
_CSR_REDUCE = getattr(torch.ops.aten, "_sparse_mm_reduce_impl", None)


def _row_extremes(value: Tensor, index: GraphIndex, kinds: tuple):
    """``(best, winner)`` of each ``kind`` reduction of ``value[src]`` over
    each target's edges, both ``[N_dst, H, C]``; the winner is a CSR edge
    position (``num_edges`` for a target without edges, whose best is 0)."""
    rows = value.detach().flatten(1)
    if kinds == ("max", "min"):
        # min(v) = -max(-v): both in one pass over the edges (25 % less
        # time than two products on a 1M-edge graph).
        rows, reduce = torch.cat([rows, -rows], dim=1), "amax"
    else:
        (kind,) = kinds
        reduce = "a" + kind
    ones = rows.new_ones(index.num_edges)
    # The op records the winners only when a gradient is wanted.
    with torch.enable_grad():
        best, winner = _CSR_REDUCE(index.csr(ones), rows.requires_grad_(),
                                   reduce)
    shape = (index.num_dst,) + tuple(value.shape[1:])
    best = best.detach()
    if len(kinds) == 1:
        return [(best.view(shape), winner.view(shape))]
    width = best.size(1) // 2
    return [(best[:, :width].reshape(shape), winner[:, :width].reshape(shape)),
            (-best[:, width:].reshape(shape),
             winner[:, width:].reshape(shape))]


def _scattered_extremes(message: Tensor, keep: Tensor, dst: Tensor,
                        num_nodes: int, kind: str, keep_all: bool):
    """``(best, winner)`` as :func:`_row_extremes`, from the gathered
    ``[E, H, C]`` messages (any device, masks and edge terms)."""
    num_edges = message.size(0)
    target = dst.view(-1, 1, 1).expand_as(message)
    shape = (num_nodes,) + tuple(message.shape[1:])
    skip = float("-inf") if kind == "max" else float("inf")
    masked = message if keep_all else message.masked_fill(~keep, skip)
    best = message.new_full(shape, skip).scatter_reduce_(
        0, target, masked, "a" + kind)
    # The winning edge of each output element: the hits are about one per
    # element, so list them rather than scan all edges again; the first
    # edge wins a tie.
    edge, *rest = (masked == best.index_select(0, dst)).nonzero(
        as_tuple=True)
    element = dst[edge]
    for axis, size in zip(rest, shape[1:]):
        element = element * size + axis
    winner = torch.full((best.numel(),), num_edges, dtype=torch.long,
                        device=message.device)
    winner = winner.scatter_reduce_(0, element, edge, "amin")
    empty = torch.isinf(best)
    return (best.masked_fill(empty, 0.0),
            winner.view(shape).masked_fill(empty, num_edges))


class _NeighbourExtremes(torch.autograd.Function):
    """Elementwise max / min of the messages ``value[src] (+ edge_value)``
    over each target's edges with ``keep``, recording each output's winning
    edge; the backward sends each output's gradient straight to that
    edge's source (and edge term), so no ``[E, H, C]`` gradient is built.
    Ties go to the first edge (a valid subgradient;
    ``torch_scatter.scatter_max`` also sends it to a single edge,
    ``scatter_reduce`` splits it).

    On the CPU without masks or edge terms, torch's CSR max / min product
    reduces each target's edges in one pass (no ``[E, H, C]`` message
    tensor); otherwise the messages are gathered once and reduced by
    scatter."""

    @staticmethod
    def forward(ctx, value: Tensor, edge_value: Optional[Tensor],
                keep: Tensor, index: GraphIndex, kinds: tuple):
        # Softmax weights are all positive unless dropout or a threshold
        # removed edges: skip the masked copy then.
        keep_all = bool(keep.all())
        if _row_extremes_available(value, edge_value, keep_all,
                                   index.num_edges):
            results = _row_extremes(value, index, kinds)
        else:
            message = value.index_select(0, index.src)
            if edge_value is not None:
                message += edge_value
            results = [_scattered_extremes(message, keep, index.dst,
                                           index.num_dst, kind, keep_all)
                       for kind in kinds]
        outs, winners = zip(*results)
        ctx.save_for_backward(index.src, *winners)
        ctx.num_src = value.size(0)
        ctx.has_edge_value = edge_value is not None
        ctx.num_edges = index.num_edges
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        src, *winners = ctx.saved_tensors
        num_src, num_edges = ctx.num_src, ctx.num_edges
        # Outputs without an edge point one past the last edge, whose
        # source is one past the last node: both sink rows are cut off.
        source = torch.cat([src, src.new_full((1,), num_src)])
        grad_value = grad_edge = None
        for grad, winner in zip(grads, winners):
            if grad is None:
                continue
            rows = grad.shape[1:]
            part = grad.new_zeros((num_src + 1,) + rows).scatter_add(
                0, source.index_select(0, winner.flatten()).view_as(winner),
                grad)[:-1]
            grad_value = part if grad_value is None else grad_value + part
            if ctx.has_edge_value:
                part = grad.new_zeros((num_edges + 1,) + rows).scatter_add(
                    0, winner, grad)[:-1]
                grad_edge = part if grad_edge is None else grad_edge + part
        return grad_value, grad_edge, None, None, None


def attention_aggregate(value: Tensor, alpha: Tensor, edge_index: Tensor,
                        num_nodes: int,
                        reduce: Union[str, Sequence[str]] = "sum", *,
                        edge_value: Optional[Tensor] = None) -> Tensor:
    r"""Aggregates per-head values over incoming edges with weights ``alpha``.

    For each target :math:`i`, head :math:`h` and message
    :math:`m_{j} = v_j (+ e_{ji})` over the edges :math:`j \to i`:

    * ``"sum"``: :math:`\sum_j \alpha_{ij} m_j`
    * ``"mean"``: :math:`\sum_j \alpha_{ij} m_j / \sum_j \alpha_{ij}`
    * ``"max"`` / ``"min"``: elementwise max / min of :math:`m_j` over the
      edges with :math:`\alpha_{ij} > 0` (unweighted)
    * ``"var"``: :math:`\sum_j \alpha_{ij} m_j^2 / \sum_j \alpha_{ij} -
      \mathrm{mean}^2`, clamped at 0; ``"std"``: its square root

    Every reduction is 0 for a node without (positively weighted) incoming
    edges.  Duplicate edges count once per copy in the weighted reductions
    (max and min do not see them).  Sums, means and variances run as
    sparse-dense products
    (:func:`~tgnn_transformers.functional.sparse_ops.spmm`) that keep no
    ``[E, H, C]`` tensor; max and min gather the messages once
    and keep only each output's winning edge for the backward (a tie sends
    the whole gradient to the first winning edge).

    Args:
        value: ``[N_src, H, C]`` source values.
        alpha: ``[E, H]`` edge weights.
        edge_index: ``[2, E]``, ``edge_index[0]`` the sources.
        num_nodes: number of target nodes.
        reduce: one reduction or a sequence of them.
        edge_value: optional ``[E, H, C]`` per-edge term added to the
            messages (as edge features are in ``TransformerConv``).

    Returns:
        ``[num_nodes, H, C]`` for one reduction, ``[num_nodes, H, R, C]``
        for a sequence of ``R`` reductions (in the order given).
    """
    if value.dim() != 3:
        raise ValueError(f"value must have shape [N, H, C], got "
                         f"{list(value.shape)}")
    if alpha.shape != (edge_index.size(1), value.size(1)):
        raise ValueError(f"alpha must have shape [E, H] = "
                         f"[{edge_index.size(1)}, {value.size(1)}], got "
                         f"{list(alpha.shape)}")
    index = graph_index(edge_index, value.size(0), num_nodes)
    # No low-precision SpMM: half / bfloat16 reduce in float32 (autocast
    # off) and come back in the inputs' dtype; float32 runs as is.
    dtype = result_dtype(value, alpha, edge_value)
    inner = compute_dtype(dtype)
    with autocast_disabled(value.device):
        value, alpha, edge_value = upcast_all(inner, value, alpha,
                                              edge_value)
        out = aggregate_csr(value, index.to_csr_order(alpha), index, reduce,
                            edge_value=index.to_csr_order(edge_value))
    return out.to(dtype)


def aggregate_csr(value: Tensor, alpha: Tensor, index: GraphIndex,
                  reduce: Union[str, Sequence[str]] = "sum", *,
                  edge_value: Optional[Tensor] = None) -> Tensor:
    """:func:`attention_aggregate` with ``alpha`` and ``edge_value`` already
    in the CSR order of ``index`` (what the attention kernel hands over)."""
    names = [reduce] if isinstance(reduce, str) else list(reduce)
    for name in names:
        check_choice("reduce", name, REDUCTIONS)
    num_nodes, dst = index.num_dst, index.dst
    weight = alpha.unsqueeze(-1)
    cache = {}
    if edge_value is None and not tracing() and \
            triton_aggregate_available(value):
        # Every statistic the reductions need in one pass over the edges.
        wants = set(names)
        moments = triton_moments(
            value, alpha, index,
            need_sum=bool(wants & {"sum", "mean", "var", "std"}),
            need_second=bool(wants & {"var", "std"}),
            need_extremes=bool(wants & {"max", "min"}))
        found = {"sum": moments.weighted_sum, "second": moments.second,
                 "max": moments.maximum, "min": moments.minimum,
                 "total": None if moments.total is None else
                 moments.total.unsqueeze(-1)}
        cache.update((k, v) for k, v in found.items() if v is not None)

    def message() -> Tensor:
        # Only edge-valued variances need per-edge messages here.
        if "message" not in cache:
            m = value.index_select(0, index.src)
            cache["message"] = m if edge_value is None else m + edge_value
        return cache["message"]

    def weighted(power: int) -> Tensor:
        if power == 2 and cache.get("second") is not None:
            return cache["second"]
        if edge_value is not None:
            m = edge_value if power == 1 else message() * message()
            out = edge_weighted_sum(alpha, m, index)
            if power == 1:
                out = out + spmm(alpha, value, index)
            return out
        return spmm(alpha, value if power == 1 else value * value, index)

    def weighted_sum() -> Tensor:
        if "sum" not in cache:
            cache["sum"] = weighted(1)
        return cache["sum"]

    def total_weight() -> Tensor:
        if "total" not in cache:
            cache["total"] = segment_sum(alpha, dst, num_nodes).unsqueeze(-1)
        return cache["total"]

    def normalise(x: Tensor) -> Tensor:
        total = total_weight()
        return torch.where(total != 0, x / torch.where(total != 0, total, 1),
                           torch.zeros_like(x))

    def mean() -> Tensor:
        if "mean" not in cache:
            cache["mean"] = normalise(weighted_sum())
        return cache["mean"]

    def var() -> Tensor:
        if "var" not in cache:
            second = normalise(weighted(2))
            cache["var"] = (second - mean() * mean()).clamp_min(0.0)
        return cache["var"]

    def extreme(kind: str) -> Tensor:
        if kind not in cache:  # max and min share one pass
            kinds = tuple(k for k in ("max", "min") if k in names)
            cache.update(zip(kinds, _NeighbourExtremes.apply(
                value, edge_value, weight > 0, index, kinds)))
        return cache[kind]

    compute = {
        "sum": weighted_sum,
        "mean": mean,
        "max": lambda: extreme("max"),
        "min": lambda: extreme("min"),
        "var": var,
        "std": lambda: _safe_sqrt(var()),
    }
    outs = [compute[name]() for name in names]
    if isinstance(reduce, str):
        return outs[0]
    return torch.stack(outs, dim=2)
