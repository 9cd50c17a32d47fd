"""Sparse adjacency inputs as PyG's layers take them: ``conv(x, adj_t)``
with the transposed adjacency as a torch.sparse COO or CSR tensor or a
torch_sparse.SparseTensor."""
import pytest
import torch
from torch_geometric.nn import TransformerConv
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csr_tensor

from tgnn_transformers import (GINAttentionConv, MultiHeadAttentionConv,
                               PNAAttentionConv)
from tgnn_transformers.functional import adjacency_to_edge_index

N_SRC, N_DST, F_IN = 9, 7, 6


def random_edges(num_src, num_dst, num_edges=30, seed=0):
    """Unique edges, shuffled (not in the adjacency's order)."""
    gen = torch.Generator().manual_seed(seed)
    flat = torch.randperm(num_src * num_dst, generator=gen)[:num_edges]
    return torch.stack([flat % num_src, flat // num_src])


def transposed_adjacency(edge_index, num_src, num_dst, layout):
    """``adj_t`` ([num_dst, num_src], entry (i, j) for the edge j -> i) and
    the edges in its row-major order."""
    adj_t = to_torch_coo_tensor(edge_index.flip(0), size=(num_dst, num_src))
    row, col = adj_t.indices()
    if layout == "csr":
        adj_t = to_torch_csr_tensor(edge_index.flip(0),
                                    size=(num_dst, num_src))
    return adj_t, torch.stack([col, row])


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("bipartite", [False, True])
@pytest.mark.parametrize("edge_dim", [None, 3])
def test_torch_sparse_adjacency_matches_transformer_conv(layout, bipartite,
                                                         edge_dim):
    num_src, num_dst = (N_SRC, N_DST) if bipartite else (N_SRC, N_SRC)
    in_channels = (F_IN, 4) if bipartite else F_IN
    ref = TransformerConv(in_channels, 5, heads=2, edge_dim=edge_dim,
                          beta=True)
    conv = MultiHeadAttentionConv(in_channels, 5, heads=2, edge_dim=edge_dim,
                                  beta=True)
    conv.load_state_dict(ref.state_dict())
    x = ((torch.randn(num_src, F_IN), torch.randn(num_dst, 4))
         if bipartite else torch.randn(num_src, F_IN))
    adj_t, edges = transposed_adjacency(random_edges(num_src, num_dst),
                                        num_src, num_dst, layout)
    # Edge features come in the adjacency's (row-major) order.
    edge_attr = torch.randn(edges.size(1), edge_dim) if edge_dim else None

    out_ref, (_, alpha_ref) = ref(x, adj_t, edge_attr,
                                  return_attention_weights=True)
    out, (adj_alpha, alpha) = conv(x, adj_t, edge_attr,
                                   return_attention_weights=True)
    torch.testing.assert_close(out, out_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(alpha, alpha_ref, atol=1e-6, rtol=1e-5)
    # The adjacency comes back with the weights as its values.
    assert adj_alpha.layout == adj_t.layout
    assert adj_alpha.shape == (num_dst, num_src, 2)
    if layout == "coo":
        assert torch.equal(adj_alpha.indices(), adj_t.indices())
    else:
        assert torch.equal(adj_alpha.crow_indices(), adj_t.crow_indices())
        assert torch.equal(adj_alpha.col_indices(), adj_t.col_indices())
    torch.testing.assert_close(adj_alpha.values(), alpha)
    # ... and equals the call with the edges in that order.
    torch.testing.assert_close(conv(x, edges, edge_attr), out)


@pytest.mark.parametrize("make", [
    lambda: GINAttentionConv(F_IN, 4, heads=2, edge_dim=3),
    lambda: PNAAttentionConv(F_IN, 4, heads=2, edge_dim=3, delta=1.1),
], ids=["gin", "pna"])
@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_graph_aware_convs_take_sparse_adjacency(make, layout):
    conv = make().eval()
    x = torch.randn(N_SRC, F_IN)
    adj_t, edges = transposed_adjacency(random_edges(N_SRC, N_SRC), N_SRC,
                                        N_SRC, layout)
    edge_attr = torch.randn(edges.size(1), 3)
    torch.testing.assert_close(conv(x, adj_t, edge_attr),
                               conv(x, edges, edge_attr))


def test_gin_sparsified_weights_on_adjacency():
    conv = GINAttentionConv(F_IN, 4, heads=2, top_k=1).eval()
    x = torch.randn(N_SRC, F_IN)
    adj_t, edges = transposed_adjacency(random_edges(N_SRC, N_SRC), N_SRC,
                                        N_SRC, "coo")
    _, (kept, alpha) = conv(x, edges, return_attention_weights=True)
    _, (adj_kept, alpha_adj) = conv(x, adj_t, return_attention_weights=True)
    assert adj_kept.shape == (N_SRC, N_SRC, 2)
    assert adj_kept._nnz() == kept.size(1) < edges.size(1)
    dense = torch.zeros(N_SRC, N_SRC, 2).index_put((kept[1], kept[0]),
                                                   alpha)
    torch.testing.assert_close(adj_kept.to_dense(), dense)
    torch.testing.assert_close(alpha_adj, adj_kept.values())


def test_conversion_is_cached_per_adjacency():
    adj_t, edges = transposed_adjacency(random_edges(N_SRC, N_SRC), N_SRC,
                                        N_SRC, "csr")
    first = adjacency_to_edge_index(adj_t)
    assert torch.equal(first, edges)
    assert adjacency_to_edge_index(adj_t) is first  # no second conversion
    other, _ = transposed_adjacency(random_edges(N_SRC, N_SRC, seed=1),
                                    N_SRC, N_SRC, "csr")
    assert adjacency_to_edge_index(other) is not first


def test_adjacency_of_the_wrong_shape_is_rejected():
    conv = MultiHeadAttentionConv(F_IN, 4, heads=2)
    adj_t, _ = transposed_adjacency(random_edges(N_SRC, N_DST), N_SRC,
                                    N_DST, "coo")
    with pytest.raises(ValueError, match=r"adj_t"):
        conv(torch.randn(N_SRC, F_IN), adj_t)
    with pytest.raises(ValueError, match="COO or CSR"):
        conv(torch.randn(N_SRC, F_IN), adj_t.to_dense().to_sparse_csc())


def test_sparse_tensor_adjacency_matches_transformer_conv():
    torch_sparse = pytest.importorskip("torch_sparse")
    ref = TransformerConv(F_IN, 5, heads=2, edge_dim=3)
    conv = MultiHeadAttentionConv(F_IN, 5, heads=2, edge_dim=3)
    conv.load_state_dict(ref.state_dict())
    x = torch.randn(N_SRC, F_IN)
    edge_index = random_edges(N_SRC, N_SRC)
    adj_t = torch_sparse.SparseTensor(row=edge_index[1], col=edge_index[0],
                                      sparse_sizes=(N_SRC, N_SRC))
    row, col, _ = adj_t.coo()
    edges = torch.stack([col, row])
    edge_attr = torch.randn(edges.size(1), 3)
    out_ref, adj_ref = ref(x, adj_t, edge_attr,
                           return_attention_weights=True)
    out, adj_alpha = conv(x, adj_t, edge_attr,
                          return_attention_weights=True)
    torch.testing.assert_close(out, out_ref, atol=1e-6, rtol=1e-5)
    assert isinstance(adj_alpha, torch_sparse.SparseTensor)
    torch.testing.assert_close(adj_alpha.storage.value(),
                               adj_ref.storage.value(), atol=1e-6,
                               rtol=1e-5)
    assert torch.equal(adj_alpha.storage.row(), row)
    assert torch.equal(adj_alpha.storage.col(), col)
    torch.testing.assert_close(conv(x, edges, edge_attr), out)
    # The conversion is cached on the SparseTensor as well.
    assert adjacency_to_edge_index(adj_t) is adjacency_to_edge_index(adj_t)
