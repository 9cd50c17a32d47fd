"""Memory-lean sparse primitives for attention on edges.

PyG's ``TransformerConv`` gathers per-edge query, key, value and message
tensors of shape ``[E, H, C]`` and autograd keeps them for backward, so its
memory grows as O(E·H·C).  Here attention is three sparse primitives with
hand-written backward passes that keep only ``[E, H]`` edge weights and the
node tensors:

* :func:`sddmm` — sampled dense-dense product, ``s_e = <q_i, k_j>`` for
  every edge ``e = j -> i`` (``torch.sparse.sampled_addmm`` per head);
* :func:`spmm` — sparse-dense product, ``out_i = sum_e w_e v_j``
  (CSR matrix product per head);
* :func:`edge_dot` / :func:`edge_weighted_sum` — the same two with a
  per-edge ``[E, H, C]`` operand (edge features), processed in chunks of
  edges so no second ``[E, H, C]`` tensor is ever alive.

All of them work on edges in **target-major (CSR) order**; the
:class:`GraphIndex` of a graph holds that order, the CSR and CSC index
arrays and the permutations, computed once per ``edge_index`` tensor and
cached with it (across layers and epochs).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
from torch import Tensor

from ._cache import cached_on


_CSR_BETA_WARNING = "Sparse CSR tensor support is in beta state"
_csr_beta_warning_consumed = False


def _without_csr_beta_warning(build: Callable[[], Tensor]) -> Tensor:
    """``build()`` (which makes a compressed sparse tensor) without torch's
    "beta state" ``UserWarning``.

    Torch emits that warning once per process (``TORCH_WARN_ONCE``), at the
    first compressed sparse tensor, so only the first construction here
    needs the warnings context; that keeps the (process-wide, not
    thread-safe) ``warnings.catch_warnings`` off the hot path.  With
    ``torch.set_warn_always(True)`` the warning repeats, and so does the
    context.
    """
    global _csr_beta_warning_consumed
    if _csr_beta_warning_consumed and not torch.is_warn_always_enabled():
        return build()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_CSR_BETA_WARNING)
        out = build()
    _csr_beta_warning_consumed = True
    return out


def _sparse_csr(crow: Tensor, col: Tensor, values: Tensor,
                size: tuple) -> Tensor:
    """``torch.sparse_csr_tensor`` (indices known valid), quietly."""
    return _without_csr_beta_warning(lambda: torch.sparse_csr_tensor(
        crow, col, values, size, check_invariants=False))


def to_sparse_csr(x: Tensor) -> Tensor:
    """``x.to_sparse_csr()`` without torch's "beta state" warning (the
    package's layers take CSR node features on purpose)."""
    return _without_csr_beta_warning(x.to_sparse_csr)


def hstack_features(x: Tensor, extra: Tensor) -> Tensor:
    """``torch.cat([x, extra], dim=1)`` for dense or sparse CSR ``x`` and
    dense ``extra`` (``[N, F + D]``); a CSR ``x`` gives a CSR result (its
    nonzeros, then every entry of ``extra``, per row), so bag-of-words
    features stay sparse when an encoding is appended to them."""
    if x.dim() != 2 or extra.dim() != 2 or x.size(0) != extra.size(0):
        raise ValueError(f"hstack_features needs [N, F] and [N, D] "
                         f"tensors with the same N, got {list(x.shape)} "
                         f"and {list(extra.shape)}")
    if x.layout != torch.sparse_csr:
        return torch.cat([x, extra.to(x.dtype)], dim=1)
    crow, col, values = x.crow_indices(), x.col_indices(), x.values()
    rows, width = x.size(0), extra.size(1)
    counts = crow[1:] - crow[:-1]
    new_crow = crow + torch.arange(rows + 1, device=crow.device) * width
    # Each row's old entries keep their order, its D new ones follow.
    row_of_old = torch.repeat_interleave(
        torch.arange(rows, device=crow.device), counts)
    old_slot = torch.arange(col.numel(), device=crow.device) - \
        crow[row_of_old] + new_crow[row_of_old]
    new_slot = (new_crow[:-1] + counts).view(-1, 1) + \
        torch.arange(width, device=crow.device)
    out_col = col.new_empty(col.numel() + rows * width)
    out_val = values.new_empty(out_col.numel())
    out_col[old_slot] = col
    out_val[old_slot] = values
    out_col[new_slot.view(-1)] = (x.size(1) + torch.arange(
        width, device=col.device, dtype=col.dtype)).repeat(rows)
    out_val[new_slot.view(-1)] = extra.to(values.dtype).reshape(-1)
    return _sparse_csr(new_crow, out_col, out_val,
                       (rows, x.size(1) + width))


def leading_rows(x: Tensor, n: int) -> Tensor:
    """The first ``n`` rows of ``x``, dense or sparse CSR (which torch
    cannot slice): the target features ``x_dst`` of a sampled block whose
    targets come first."""
    if x.layout != torch.sparse_csr:
        return x[:n]
    crow = x.crow_indices()[:n + 1]
    end = int(crow[-1])
    return _sparse_csr(crow, x.col_indices()[:end], x.values()[:end],
                       (n, x.size(1)))


def select_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[index]`` for dense or sparse CSR ``x`` (torch has no
    ``index_select`` for CSR): the features of a sampled subgraph's nodes,
    gathered without a dense copy of the whole feature matrix."""
    if x.layout != torch.sparse_csr:
        return x[index]
    crow, col, values = x.crow_indices(), x.col_indices(), x.values()
    start, counts = crow[index], crow[index + 1] - crow[index]
    new_crow = torch.zeros(index.numel() + 1, dtype=crow.dtype,
                           device=crow.device)
    torch.cumsum(counts, 0, out=new_crow[1:])
    # position of every kept nonzero in the old arrays: its row's old start
    # plus its offset within the row
    total = int(new_crow[-1])
    row = torch.repeat_interleave(torch.arange(index.numel(),
                                               device=crow.device), counts,
                                  output_size=total)
    old = start[row] + torch.arange(total, device=crow.device) - new_crow[row]
    return _sparse_csr(new_crow, col[old], values[old],
                       (index.numel(), x.size(1)))


#: edges per chunk for the primitives that must gather ``[chunk, H, C]``
EDGE_CHUNK = 1 << 16


@dataclass
class GraphIndex:
    """CSR (by target) and CSC (by source) views of one ``edge_index``."""
    num_src: int
    num_dst: int
    dst_ptr: Tensor  # [N_dst + 1] CSR row pointers over targets
    src: Tensor  # [E] source of each edge, CSR order
    dst: Tensor  # [E] target of each edge, CSR order
    perm: Optional[Tensor]  # CSR position -> input edge id (None: sorted)
    src_ptr: Tensor  # [N_src + 1] CSC pointers over sources
    dst_by_src: Tensor  # [E] target of each edge, CSC order
    to_csc: Tensor  # CSC position -> CSR position

    @property
    def num_edges(self) -> int:
        return self.src.numel()

    def csr(self, values: Tensor) -> Tensor:
        """``[N_dst, N_src]`` CSR matrix with ``values`` in CSR order."""
        return _sparse_csr(self.dst_ptr, self.src, values,
                           (self.num_dst, self.num_src))

    def csc_transposed(self, values: Tensor) -> Tensor:
        """``[N_src, N_dst]`` CSR matrix of the transpose; ``values`` in CSR
        order."""
        return _sparse_csr(self.src_ptr, self.dst_by_src,
                           values[self.to_csc], (self.num_src, self.num_dst))

    def to_csr_order(self, edge_tensor: Optional[Tensor]) -> Optional[Tensor]:
        if edge_tensor is None or self.perm is None:
            return edge_tensor
        return edge_tensor.index_select(0, self.perm)

    def to_input_order(self, edge_tensor: Tensor) -> Tensor:
        if self.perm is None:
            return edge_tensor
        out = torch.empty_like(edge_tensor)
        out[self.perm] = edge_tensor
        return out


def _edge_chunks(num_edges: int) -> Iterator[slice]:
    for start in range(0, num_edges, EDGE_CHUNK):
        yield slice(start, start + EDGE_CHUNK)


def _pointers(sorted_index: Tensor, size: int) -> Tensor:
    ptr = torch.zeros(size + 1, dtype=torch.long, device=sorted_index.device)
    ptr[1:] = torch.cumsum(torch.bincount(sorted_index, minlength=size), 0)
    return ptr


def build_graph_index(edge_index: Tensor, num_src: int,
                      num_dst: int) -> GraphIndex:
    """Builds the CSR/CSC views (O(E log E), once per graph)."""
    src, dst = edge_index[0].long(), edge_index[1].long()
    perm = None
    if src.numel() > 1 and bool((dst[1:] < dst[:-1]).any()):
        perm = torch.argsort(dst, stable=True)
        src, dst = src[perm], dst[perm]
    else:
        # Copies, not views: a view keeps edge_index alive, and with it
        # this index in the cache that edge_index's death should clear.
        src, dst = src.clone(), dst.clone()
    to_csc = torch.argsort(src, stable=True)
    return GraphIndex(num_src, num_dst, _pointers(dst, num_dst), src, dst,
                      perm, _pointers(src[to_csc], num_src), dst[to_csc],
                      to_csc)


def graph_index(edge_index: Tensor, num_src: int,
                num_dst: int) -> GraphIndex:
    """The cached :class:`GraphIndex` of ``edge_index`` (rebuilt when the
    tensor is modified in place or freed)."""
    return cached_on(edge_index, "graph_index",
                     lambda: build_graph_index(edge_index, num_src, num_dst),
                     num_src, num_dst)


# --------------------------------------------------------------------------
# per-head building blocks (no autograd)
# --------------------------------------------------------------------------

def _heads_first(x: Tensor) -> Tensor:
    """``[N, H, C]`` -> contiguous ``[H, N, C]``."""
    return x.transpose(0, 1).contiguous()


def _sddmm(index: GraphIndex, a: Tensor, b: Tensor) -> Tensor:
    """``[E, H]``: ``<a[dst_e], b[src_e]>`` per head, CSR order."""
    heads = a.size(1)
    if index.num_edges == 0:
        return a.new_zeros(0, heads)
    if index.num_edges > index.num_dst * index.num_src:
        # More edges than matrix entries (duplicate edges): torch's
        # sampled_addmm fails on such a pattern ("torch.copy_: only sparse
        # compressed tensors with the same number of specified elements");
        # gather instead, which such a small matrix can afford.
        return (a.index_select(0, index.dst) *
                b.index_select(0, index.src)).sum(-1)
    a_h, b_h = _heads_first(a), _heads_first(b)
    pattern = index.csr(a.new_zeros(index.num_edges))
    out = [torch.sparse.sampled_addmm(pattern, a_h[h], b_h[h].t(),
                                      beta=0.0).values()
           for h in range(heads)]
    return torch.stack(out, dim=1)


def _spmm(index: GraphIndex, weight: Tensor, x: Tensor,
          transpose: bool = False) -> Tensor:
    """``[N_dst, H, C]`` (or ``[N_src, ...]`` with ``transpose``):
    ``sum_e weight[e, h] * x[src_e, h]``."""
    heads = weight.size(1)
    rows = index.num_src if transpose else index.num_dst
    if index.num_edges == 0:
        return x.new_zeros(rows, heads, x.size(-1))
    x_h = _heads_first(x)
    out = []
    for h in range(heads):
        w = weight[:, h].contiguous()
        matrix = index.csc_transposed(w) if transpose else index.csr(w)
        out.append(torch.mm(matrix, x_h[h]))
    return torch.stack(out, dim=1)


# --------------------------------------------------------------------------
# autograd functions
# --------------------------------------------------------------------------

# The backward passes of _SDDMM and _SpMM are written with the two
# Functions themselves (not the raw per-head kernels), so they are
# differentiable again: double backward (gradgradcheck, gradient penalties)
# works, at no cost when no graph is being recorded.

class _SDDMM(torch.autograd.Function):

    @staticmethod
    def forward(ctx, query, key, index):
        ctx.index = index
        ctx.save_for_backward(query, key)
        return _sddmm(index, query, key)

    @staticmethod
    def backward(ctx, grad):
        query, key = ctx.saved_tensors
        index = ctx.index
        grad = grad.contiguous()
        grad_q = (_SpMM.apply(grad, key, index, False)
                  if ctx.needs_input_grad[0] else None)
        grad_k = (_SpMM.apply(grad, query, index, True)
                  if ctx.needs_input_grad[1] else None)
        return grad_q, grad_k, None


class _SpMM(torch.autograd.Function):
    """``out_i = sum_{e: j -> i} w_e x_j``; with ``transpose`` the product
    with the transposed matrix, ``out_j = sum_{e: j -> i} w_e x_i``."""

    @staticmethod
    def forward(ctx, weight, value, index, transpose=False):
        ctx.index, ctx.transpose = index, transpose
        ctx.save_for_backward(weight, value)
        return _spmm(index, weight, value, transpose=transpose)

    @staticmethod
    def backward(ctx, grad):
        weight, value = ctx.saved_tensors
        index, transpose = ctx.index, ctx.transpose
        grad = grad.contiguous()
        grad_w = grad_v = None
        if ctx.needs_input_grad[0]:
            # <grad_out[dst], value[src]> (transposed: the roles swap)
            grad_w = (_SDDMM.apply(value, grad, index) if transpose else
                      _SDDMM.apply(grad, value, index))
        if ctx.needs_input_grad[1]:
            grad_v = _SpMM.apply(weight, grad, index, not transpose)
        return grad_w, grad_v, None, None


class _EdgeDot(torch.autograd.Function):
    """``s_e = <node[dst_e], edge_e>`` with an ``[E, H, C]`` edge operand."""

    @staticmethod
    def forward(ctx, node, edge, index):
        ctx.index = index
        ctx.save_for_backward(node, edge)
        out = node.new_empty(index.num_edges, node.size(1))
        for part in _edge_chunks(index.num_edges):
            out[part] = (node[index.dst[part]] * edge[part]).sum(-1)
        return out

    @staticmethod
    def backward(ctx, grad):
        node, edge = ctx.saved_tensors
        index = ctx.index
        grad_node = torch.zeros_like(node) if ctx.needs_input_grad[0] \
            else None
        grad_edge = torch.empty_like(edge) if ctx.needs_input_grad[1] \
            else None
        for part in _edge_chunks(index.num_edges):
            g = grad[part].unsqueeze(-1)
            if grad_node is not None:
                grad_node.index_add_(0, index.dst[part], g * edge[part])
            if grad_edge is not None:
                grad_edge[part] = g * node[index.dst[part]]
        return grad_node, grad_edge, None


class _EdgeWeightedSum(torch.autograd.Function):
    """``out_i = sum_{e -> i} w_e * edge_e`` with an ``[E, H, C]`` operand."""

    @staticmethod
    def forward(ctx, weight, edge, index):
        ctx.index = index
        ctx.save_for_backward(weight, edge)
        out = edge.new_zeros(index.num_dst, edge.size(1), edge.size(2))
        for part in _edge_chunks(index.num_edges):
            out.index_add_(0, index.dst[part],
                           weight[part].unsqueeze(-1) * edge[part])
        return out

    @staticmethod
    def backward(ctx, grad):
        weight, edge = ctx.saved_tensors
        index = ctx.index
        grad_w = torch.empty_like(weight) if ctx.needs_input_grad[0] else None
        grad_e = torch.empty_like(edge) if ctx.needs_input_grad[1] else None
        for part in _edge_chunks(index.num_edges):
            g = grad[index.dst[part]]
            if grad_w is not None:
                grad_w[part] = (g * edge[part]).sum(-1)
            if grad_e is not None:
                grad_e[part] = weight[part].unsqueeze(-1) * g
        return grad_w, grad_e, None


def sddmm(query: Tensor, key: Tensor, index: GraphIndex) -> Tensor:
    """``[E, H]`` scores ``<query[dst_e], key[src_e]>`` in CSR order."""
    return _SDDMM.apply(query, key, index)


def spmm(weight: Tensor, value: Tensor, index: GraphIndex) -> Tensor:
    """``[N_dst, H, C]``: ``sum_{e: j -> i} weight[e] * value[j]``;
    ``weight`` in CSR order."""
    return _SpMM.apply(weight, value, index)


def edge_dot(node: Tensor, edge: Tensor, index: GraphIndex) -> Tensor:
    """``[E, H]``: ``<node[dst_e], edge[e]>``; ``edge`` in CSR order."""
    return _EdgeDot.apply(node, edge, index)


def edge_weighted_sum(weight: Tensor, edge: Tensor,
                      index: GraphIndex) -> Tensor:
    """``[N_dst, H, C]``: ``sum_{e -> i} weight[e] * edge[e]``."""
    return _EdgeWeightedSum.apply(weight, edge, index)
