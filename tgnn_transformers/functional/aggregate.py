"""Attention-weighted aggregation of values over incoming edges."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ._checks import check_choice
from ._precision import (autocast_disabled, compute_dtype, result_dtype,
                         upcast_all)
from .softmax import segment_max, segment_sum
from .sparse_ops import (GraphIndex, edge_weighted_sum, graph_index,
                         spmm)

REDUCTIONS = ("sum", "mean", "max", "min", "var", "std")

# Below this variance the standard deviation is reported as exactly 0.
_STD_EPS = 1e-12


def _safe_sqrt(var: Tensor) -> Tensor:
    # sqrt'(0) is infinite; evaluate the root on a clamped copy and select 0
    # where the variance vanishes, so both value and gradient stay finite.
    positive = var > _STD_EPS
    return torch.where(positive, var.clamp_min(_STD_EPS).sqrt(),
                       torch.zeros_like(var))


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
    (max and min do not see them).  Sums, means and variances run as sparse-dense products
    (:func:`~tgnn_transformers.functional.sparse_ops.spmm`) that keep no
    ``[E, H, C]`` tensor.

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

    def message() -> Tensor:
        # Only max / min and edge-valued variances need per-edge messages.
        if "message" not in cache:
            m = value.index_select(0, index.src)
            cache["message"] = m if edge_value is None else m + edge_value
        return cache["message"]

    def weighted(power: int) -> Tensor:
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

    def extreme(sign: float) -> Tensor:
        masked = (sign * message()).masked_fill(weight <= 0, float("-inf"))
        best = segment_max(masked, dst, num_nodes)
        return sign * best.masked_fill(torch.isinf(best), 0.0)

    compute = {
        "sum": weighted_sum,
        "mean": mean,
        "max": lambda: extreme(1.0),
        "min": lambda: extreme(-1.0),
        "var": var,
        "std": lambda: _safe_sqrt(var()),
    }
    outs = [compute[name]() for name in names]
    if isinstance(reduce, str):
        return outs[0]
    return torch.stack(outs, dim=2)
