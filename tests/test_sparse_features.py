"""Sparse CSR node features: the convs give the dense result, and
feature_dropout keeps the sparsity pattern and matches dense dropout."""
import pytest
import torch

from tgnn_transformers import (GINAttentionConv, MultiHeadAttentionConv,
                               PNAAttentionConv)
from tgnn_transformers.functional import feature_dropout
from tgnn_transformers.train.recipes import prepare_node_data


def bag_of_words(n=40, d=30, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, d, generator=gen) < 0.1
    return mask.float() * torch.rand(n, d, generator=gen)


@pytest.mark.parametrize("make", [
    lambda: MultiHeadAttentionConv(30, 4, heads=2),
    lambda: GINAttentionConv(30, 4, heads=2),
    lambda: PNAAttentionConv(30, 4, heads=2, delta=1.0),
])
def test_csr_features_give_the_dense_result(make):
    torch.manual_seed(0)
    conv = make()
    x = bag_of_words()
    edge_index = torch.randint(0, 40, (2, 160))
    dense = conv(x, edge_index)
    dense.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in conv.named_parameters()
             if p.grad is not None}
    conv.zero_grad()
    sparse = conv(x.to_sparse_csr(), edge_index)
    sparse.square().sum().backward()
    torch.testing.assert_close(sparse, dense)
    for name, grad in grads.items():
        torch.testing.assert_close(dict(conv.named_parameters())[name].grad,
                                   grad, rtol=1e-4, atol=1e-5)


def test_feature_dropout_on_csr():
    x = bag_of_words(200, 50).to_sparse_csr()
    torch.manual_seed(0)
    out = feature_dropout(x, 0.4, training=True)
    assert out.layout == torch.sparse_csr
    assert torch.equal(out.col_indices(), x.col_indices())
    kept = out.values() != 0
    # kept values are scaled by 1 / (1 - p), the others are zero
    torch.testing.assert_close(out.values()[kept], x.values()[kept] / 0.6)
    assert 0.5 < kept.float().mean() < 0.7
    assert feature_dropout(x, 0.4, training=False) is x
    dense = bag_of_words(200, 50)
    torch.manual_seed(0)
    expected = torch.nn.functional.dropout(dense, 0.4)
    torch.manual_seed(0)
    torch.testing.assert_close(feature_dropout(dense, 0.4), expected)


def test_node_data_becomes_csr_only_when_sparse_and_supported():
    from torch_geometric.data import Data
    edge_index = torch.tensor([[0, 1], [1, 0]])
    sparse = Data(x=torch.eye(20), edge_index=edge_index,
                  y=torch.zeros(20, dtype=torch.long))
    config = {"model": "mha", "self_loops": False,
              "normalize_features": False, "sparse_features": True}
    assert prepare_node_data(sparse, config).x.layout == torch.sparse_csr
    assert prepare_node_data(sparse, dict(config, model="sage")).x.layout \
        == torch.strided
    assert prepare_node_data(sparse, dict(config, sparse_features=False)) \
        .x.layout == torch.strided
    dense = Data(x=torch.rand(20, 4) + 0.1, edge_index=edge_index,
                 y=torch.zeros(20, dtype=torch.long))
    assert prepare_node_data(dense, config).x.layout == torch.strided
