r"""Graph positional and structural encodings of every node, through PyG's
transforms, with a fixed width and reproducible results.

* ``"lap"``: the first :math:`k` non-trivial eigenvectors of the symmetric
  normalised Laplacian :math:`L = I - D^{-1/2} A D^{-1/2}`
  (:class:`~torch_geometric.transforms.AddLaplacianEigenvectorPE`, Dwivedi
  et al.).  Their signs are arbitrary: models flip them at random in
  training (:class:`~tgnn_transformers.models.task_models.PositionalInput`).
* ``"rw"``: the return probabilities of random walks of :math:`1..k` steps,
  :math:`\big((D^{-1} A)^t\big)_{ii}`
  (:class:`~torch_geometric.transforms.AddRandomWalkPE`, Dwivedi et al.).

Both are computed on the graph as given (no self-loops added).  A graph of
:math:`n \le k` nodes has fewer than :math:`k` non-trivial eigenvectors; the
missing columns are zero, so every graph of a data set gets ``k`` columns.
"""
from __future__ import annotations

import torch
from torch import Tensor

#: The encodings :func:`graph_positional_encoding` computes.
GRAPH_ENCODINGS = ("lap", "rw")
#: Raised when the computation changes, so that cached encodings (see
#: :func:`tgnn_transformers.data.positional_encodings`) are recomputed.
ENCODING_VERSION = 1
#: Above this many nodes, and when the walk matrix's powers fill in (its
#: square has more than ``DENSE_FILL`` of all entries), the random-walk
#: encoding is computed by sparse-times-dense products on blocks of
#: columns instead of PyG's sparse matrix powers (which on Tolokers, 11,758
#: nodes of mean degree 88, ran out of time: its square is nearly dense).
BLOCKED_MIN_NODES = 2000
DENSE_FILL = 0.05
#: Columns per block of the blocked computation (memory ~ steps/2 x nodes x
#: block floats).
BLOCK_COLUMNS = 512


def _check(edge_index: Tensor, num_nodes: int, k: int, name: str) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{name} must be a positive integer, got {k!r}")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index must have shape [2, E], got "
                         f"{list(edge_index.shape)}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or
                               int(edge_index.max()) >= num_nodes):
        raise ValueError(f"edge_index refers to nodes outside 0.."
                         f"{num_nodes - 1}")


def laplacian_pe(edge_index: Tensor, num_nodes: int, k: int) -> Tensor:
    """``[num_nodes, k]``: the first ``k`` non-trivial Laplacian
    eigenvectors by PyG's ``AddLaplacianEigenvectorPE`` (zero columns past
    ``num_nodes - 1``), with the signs it draws from a generator seeded 0
    and ARPACK started from a seeded vector, so the same graph always gives
    the same encoding."""
    import numpy as np
    from torch_geometric.data import Data
    from torch_geometric.transforms import AddLaplacianEigenvectorPE
    from torch_geometric.utils import is_undirected
    _check(edge_index, num_nodes, k, "k")
    out = torch.zeros(num_nodes, k)
    usable = min(k, num_nodes - 1)
    if usable < 1:
        return out
    edge_index = edge_index.cpu()
    start = np.random.default_rng(0).uniform(0.5, 1.5, num_nodes)
    transform = AddLaplacianEigenvectorPE(
        usable, attr_name="pe",
        is_undirected=is_undirected(edge_index, num_nodes=num_nodes),
        v0=start)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pe = transform(Data(edge_index=edge_index, num_nodes=num_nodes)).pe
    out[:, :pe.size(1)] = pe.float()
    return out


def _fills_in(edge_index: Tensor, num_nodes: int) -> bool:
    """Whether the walk matrix's square is nearly dense: the walks of two
    steps, ``sum_j in(j) out(j)``, exceed ``DENSE_FILL`` of all pairs."""
    if num_nodes <= BLOCKED_MIN_NODES:
        return False
    out_deg = torch.bincount(edge_index[0], minlength=num_nodes).double()
    in_deg = torch.bincount(edge_index[1], minlength=num_nodes).double()
    return float((out_deg * in_deg).sum()) > DENSE_FILL * num_nodes**2


def _blocked_random_walk_pe(edge_index: Tensor, num_nodes: int,
                            steps: int) -> Tensor:
    r""":math:`((D^{-1}A)^t)_{ii}`, :math:`t = 1..` ``steps``, column block
    by column block: :math:`P^t E_B` by sparse-times-dense products, read
    on the block's own rows.  On an undirected graph
    :math:`P^t = D^{-1/2} S^t D^{1/2}` with :math:`S = D^{-1/2} A D^{-1/2}`
    symmetric, so :math:`(P^t)_{ii} = (S^t)_{ii} = \langle (S^a)_{:i},
    (S^{t-a})_{:i} \rangle` and ``steps / 2`` products suffice."""
    import numpy as np
    import scipy.sparse as sp
    from torch_geometric.utils import is_undirected
    row, col = edge_index.cpu().numpy()
    out_deg = np.maximum(np.bincount(row, minlength=num_nodes), 1)
    symmetric = is_undirected(edge_index.cpu(), num_nodes=num_nodes)
    if symmetric:
        weight = 1.0 / np.sqrt(out_deg[row] * out_deg[col])
        products = (steps + 1) // 2
    else:
        weight = 1.0 / out_deg[row]
        products = steps
    matrix = sp.csr_matrix((weight, (row, col)),
                           shape=(num_nodes, num_nodes))
    # PyG's dense path assigns duplicate edges once; its sparse path sums
    # them.  The data sets here have none; summing is the sparse answer.
    out = np.zeros((num_nodes, steps), dtype=np.float64)
    for start in range(0, num_nodes, BLOCK_COLUMNS):
        block = np.arange(start, min(num_nodes, start + BLOCK_COLUMNS))
        columns = np.arange(block.size)
        power = np.zeros((num_nodes, block.size))
        power[block, columns] = 1.0
        powers = [power]
        for t in range(1, products + 1):
            power = matrix @ power
            powers.append(power)
            if not symmetric:
                out[block, t - 1] = power[block, columns]
        if symmetric:
            for t in range(1, steps + 1):
                a = t // 2
                out[block, t - 1] = np.einsum("ij,ij->j", powers[a],
                                              powers[t - a])
    return torch.from_numpy(out).float()


def random_walk_pe(edge_index: Tensor, num_nodes: int,
                   steps: int) -> Tensor:
    """``[num_nodes, steps]``: PyG's ``AddRandomWalkPE`` (return
    probabilities of walks of 1..``steps`` steps); on large graphs whose
    walk matrix fills in, the same numbers by blocked sparse-times-dense
    products (see :data:`BLOCKED_MIN_NODES`)."""
    from torch_geometric.data import Data
    from torch_geometric.transforms import AddRandomWalkPE
    _check(edge_index, num_nodes, steps, "steps")
    if num_nodes == 0:
        return torch.zeros(0, steps)
    edge_index = edge_index.cpu()
    if _fills_in(edge_index, num_nodes):
        return _blocked_random_walk_pe(edge_index, num_nodes, steps)
    data = Data(edge_index=edge_index, num_nodes=num_nodes)
    return AddRandomWalkPE(steps, attr_name="pe")(data).pe.float()


def graph_positional_encoding(edge_index: Tensor, num_nodes: int, kind: str,
                              dim: int) -> Tensor:
    """``[num_nodes, dim]``: :func:`laplacian_pe` (``kind="lap"``) or
    :func:`random_walk_pe` (``kind="rw"``) of one graph."""
    if kind == "lap":
        return laplacian_pe(edge_index, num_nodes, dim)
    if kind == "rw":
        return random_walk_pe(edge_index, num_nodes, dim)
    raise ValueError(f"kind must be one of {', '.join(GRAPH_ENCODINGS)}, "
                     f"got {kind!r}")


__all__ = ["GRAPH_ENCODINGS", "ENCODING_VERSION", "laplacian_pe",
           "random_walk_pe", "graph_positional_encoding"]
