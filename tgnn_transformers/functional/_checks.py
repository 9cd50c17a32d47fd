"""Input validation shared by the functional core and the layers.

Every check raises a ``ValueError`` or ``TypeError`` that names the argument
and what was wrong with it.  Checks that need a value from the tensor (index
ranges) are skipped while ``torch.compile`` traces, where they would force a
graph break on every call.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Tuple

import torch
from torch import Tensor

from ._cache import cached_on


def tracing() -> bool:
    return torch.compiler.is_compiling() or torch.jit.is_scripting()


def check_choice(name: str, value: Any, choices: Iterable, *,
                 hint: Optional[str] = None) -> Any:
    """Returns ``value`` if it is one of ``choices``, else raises a
    ``ValueError`` that names the argument, the choices (each as its
    ``repr``, so ``None`` prints ``None``) and the value received:
    ``unknown norm 'batchnorm'; expected one of 'layer', 'rms', None``.
    ``hint`` is added in brackets (e.g. ``"or a torch.nn.Module"``).  An
    unhashable ``value`` (a list) is simply not one of them."""
    choices = tuple(choices)  # a dict's keys; membership by equality
    if value in choices:
        return value
    message = (f"unknown {name} {value!r}; expected one of "
               f"{', '.join(map(repr, choices))}")
    if hint:
        message += f" ({hint})"
    raise ValueError(message)


def check_edge_index_layout(edge_index: Tensor) -> None:
    """Checks that ``edge_index`` is an integer ``[2, E]`` tensor (no value
    is read)."""
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"edge_index must be a torch.Tensor of shape [2, E], "
                        f"got {type(edge_index).__name__}")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index must have shape [2, E], "
                         f"got {list(edge_index.shape)}")
    if edge_index.dtype not in (torch.long, torch.int32):
        raise TypeError(f"edge_index must hold integers (torch.long or "
                        f"torch.int32), got {edge_index.dtype}")


def _index_bounds(edge_index: Tensor) -> Tuple[int, int, int]:
    """``(min over both rows, max source, max target)``."""
    bounds = torch.stack([edge_index.min(), edge_index[0].max(),
                          edge_index[1].max()])
    return tuple(int(b) for b in bounds.tolist())


def check_edge_index(edge_index: Tensor, num_src: Optional[int] = None,
                     num_dst: Optional[int] = None) -> None:
    """Checks that ``edge_index`` is an integer ``[2, E]`` tensor whose
    sources lie in ``[0, num_src)`` and targets in ``[0, num_dst)``."""
    check_edge_index_layout(edge_index)
    if tracing() or edge_index.numel() == 0:
        return
    # One reduction and one device sync per graph, not three per call: the
    # bounds are cached with the edge_index (an in-place edit recomputes).
    lo, hi_src, hi_dst = cached_on(edge_index, "index_bounds",
                                   lambda: _index_bounds(edge_index))
    if lo < 0:
        raise ValueError(f"edge_index contains the negative index {lo}")
    for hi, bound, name in ((hi_src, num_src, "source"),
                            (hi_dst, num_dst, "target")):
        if bound is not None and hi >= bound:
            raise ValueError(
                f"edge_index has {name} index {hi} but there are only "
                f"{bound} {name} nodes (valid indices are 0..{bound - 1})")


def check_query_key(query: Tensor, key: Tensor) -> None:
    """Checks that ``query`` and ``key`` are ``[N, H, C]`` with the same
    heads and channels."""
    for name, t in (("query", query), ("key", key)):
        if t.dim() != 3:
            raise ValueError(f"{name} must have shape [N, H, C], got "
                             f"{list(t.shape)}")
    if key.shape[1:] != query.shape[1:]:
        raise ValueError(f"query and key must share [H, C], got "
                         f"{list(query.shape)} and {list(key.shape)}")


def check_per_edge(tensor: Optional[Tensor], name: str, num_edges: int,
                   trailing: tuple) -> None:
    """Checks that a per-edge tensor has shape ``[E, *trailing]``."""
    if tensor is None:
        return
    expected = (num_edges, ) + tuple(trailing)
    if tuple(tensor.shape) != expected:
        raise ValueError(f"{name} must have shape {list(expected)} "
                         f"(one row per edge), got {list(tensor.shape)}")


def as_score_bias(bias: Optional[Tensor],
                  dtype: torch.dtype) -> Optional[Tensor]:
    """The additive score bias of an attention call: a floating-point
    ``bias`` as it is; a boolean mask as ``0`` where ``True`` (attend) and
    ``-inf`` where ``False`` (masked), the convention of
    :func:`torch.nn.functional.scaled_dot_product_attention`'s
    ``attn_mask``; other dtypes raise a ``TypeError``."""
    if bias is None:
        return None
    if bias.dtype == torch.bool:
        return torch.zeros(bias.shape, dtype=dtype,
                           device=bias.device).masked_fill_(~bias,
                                                            float("-inf"))
    if not bias.is_floating_point():
        raise TypeError(f"bias must be a floating-point additive score bias "
                        f"or a boolean mask (True: attend, as in "
                        f"scaled_dot_product_attention), got {bias.dtype}")
    return bias


def batch_is_sorted(batch: Tensor) -> bool:
    """Whether the graph ids never decrease (each graph's nodes stored
    together, as PyG's ``Batch`` does); one device sync per batch vector,
    not one per call (cached)."""
    if batch.numel() < 2:
        return True
    return cached_on(batch, "batch_sorted",
                     lambda: not bool((batch[1:] < batch[:-1]).any()))


def check_batch(batch: Optional[Tensor], num_nodes: int) -> None:
    if batch is None:
        return
    if batch.dim() != 1 or batch.numel() != num_nodes:
        raise ValueError(f"batch must have shape [{num_nodes}] (one graph "
                         f"id per node), got {list(batch.shape)}")
    if batch.dtype not in (torch.long, torch.int32):
        raise TypeError(f"batch must hold integers, got {batch.dtype}")
    if tracing():
        return
    if not batch_is_sorted(batch):
        raise ValueError("batch must be sorted (nodes of each graph stored "
                         "contiguously, as PyG's Batch does)")
