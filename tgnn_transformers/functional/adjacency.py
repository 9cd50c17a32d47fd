"""Graph structure as the layers need it: in-degrees, and PyG's sparse
adjacency inputs turned into edge indices.

Both read per-graph caches (see :mod:`._cache`), so repeated calls with the
same tensors (every layer, every epoch) do no sorting or index building.
"""
from __future__ import annotations

from typing import Any, Tuple

import torch
from torch import Tensor
from torch_geometric.utils import is_sparse, to_edge_index

from ._cache import cached_on
from ._checks import tracing
from .sparse_ops import graph_index


def in_degree(edge_index: Tensor, num_src: int, num_dst: int) -> Tensor:
    """Number of incoming edges of every target node, ``[num_dst]`` long.

    Read from the CSR pointers of the graph's cached index, the one that
    :func:`~tgnn_transformers.functional.edge_attention` builds for the same
    ``(edge_index, num_src, num_dst)``: after the attention has run on a
    graph this costs one subtraction.  (While ``torch.compile`` traces, the
    degrees are counted with a scatter instead, which traces cleanly.)

    Args:
        edge_index: ``[2, E]`` edges, row 0 the sources, row 1 the targets.
        num_src: number of source nodes (``key.size(0)`` of the attention).
        num_dst: number of target nodes.
    """
    if tracing():
        target = edge_index[1].long()
        return torch.zeros(num_dst, dtype=torch.long,
                           device=edge_index.device).index_add_(
                               0, target, torch.ones_like(target))
    return graph_index(edge_index, num_src, num_dst).dst_ptr.diff()


def _adjacency_anchor(adj: Any) -> Tuple[Tensor, tuple]:
    """The tensor a conversion is cached on, and what else it depends on."""
    if isinstance(adj, Tensor):
        return adj, ()
    # torch_sparse.SparseTensor: not a tensor itself; its column indices
    # and row indices (computed once and kept by its storage) identify it.
    storage = adj.storage
    return storage.col(), (storage.row(), tuple(adj.sparse_sizes()))


def adjacency_to_edge_index(adj: Any) -> Tensor:
    """The ``[2, E]`` edge index of a sparse adjacency in PyG's convention.

    ``adj`` is the *transposed* adjacency ``adj_t`` of shape
    ``[N_dst, N_src]`` that PyG's layers accept in place of ``edge_index``:
    a ``torch.sparse`` COO or CSR tensor or a ``torch_sparse.SparseTensor``
    whose entry ``(i, j)`` is the edge ``j -> i``.  The result holds the
    sources ``j`` in row 0 and the targets ``i`` in row 1, in the
    adjacency's own (row-major) order, the order of
    :func:`torch_geometric.utils.to_edge_index` and of the adjacency's
    values; per-edge tensors (edge features) follow that order.

    The conversion is cached on the adjacency: calling this again with the
    same, unmodified adjacency returns the same ``edge_index`` tensor, so
    the caches keyed on it (the CSR index of
    :func:`~tgnn_transformers.functional.edge_attention`) hit as well.
    """
    if not is_sparse(adj):
        raise TypeError(f"expected a torch.sparse tensor or a "
                        f"torch_sparse.SparseTensor, got "
                        f"{type(adj).__name__}"
                        + (f" with layout {adj.layout}" if isinstance(
                            adj, Tensor) else ""))
    if isinstance(adj, Tensor):
        if adj.layout not in (torch.sparse_coo, torch.sparse_csr):
            raise ValueError(f"sparse adjacency must be COO or CSR (the "
                             f"layouts of PyG's adj_t), got {adj.layout}")
        if adj.dim() != 2:
            raise ValueError(f"sparse adjacency must be 2-D ([num_dst, "
                             f"num_src]), got shape {list(adj.shape)}")

    def build() -> Tensor:
        # to_edge_index gives (row, col) = (target i, source j).
        index, _ = to_edge_index(adj)
        return index.flip(0).contiguous()

    anchor, depends = _adjacency_anchor(adj)
    return cached_on(anchor, "adjacency_edge_index", build, *depends)


def adjacency_size(adj: Any) -> Tuple[int, int]:
    """``(num_src, num_dst)`` of a transposed adjacency ``adj_t``
    (``[N_dst, N_src]``)."""
    if isinstance(adj, Tensor):
        return int(adj.size(1)), int(adj.size(0))
    num_dst, num_src = adj.sparse_sizes()
    return int(num_src), int(num_dst)


def weights_on_adjacency(adj: Any, edges: Tensor, alpha: Tensor,
                         whole: bool):
    """Attention weights in the form PyG returns them for a sparse
    adjacency input: ``(adj_t with alpha as values, alpha)`` for a
    ``torch.sparse`` tensor, ``adj_t.set_value(alpha)`` for a
    ``torch_sparse.SparseTensor``.

    ``edges`` (``[2, E']``, sources in row 0) and ``alpha`` (``[E', H]``)
    are what the attention returned: with ``whole`` all of the adjacency's
    entries in its own order, otherwise a subgraph of it (after
    sparsification), returned as a new adjacency of the same kind.
    """
    from torch_geometric.typing import SparseTensor
    from torch_geometric.utils import to_torch_coo_tensor, to_torch_csr_tensor
    from torch_geometric.utils.sparse import set_sparse_value
    if whole:
        if isinstance(adj, Tensor):
            return set_sparse_value(adj, alpha), alpha
        return adj.set_value(alpha, layout="coo")
    row, col = edges[1], edges[0]
    if isinstance(adj, Tensor):
        build = (to_torch_csr_tensor if adj.layout == torch.sparse_csr else
                 to_torch_coo_tensor)
        # The entries are a subset of the adjacency's, valid by
        # construction: invariant checks are off, and said so (torch warns
        # when they are off only by default).
        with torch.sparse.check_sparse_tensor_invariants(enable=False):
            sub = build(torch.stack([row, col]), alpha,
                        (adj.size(0), adj.size(1)))
        return sub, sub.values()
    return SparseTensor(row=row, col=col, value=alpha,
                        sparse_sizes=adj.sparse_sizes())
