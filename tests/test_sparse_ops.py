"""The memory-lean primitives: values against gathers written in the test,
gradients by gradcheck in float64."""
import pytest
import torch

from tgnn_transformers.functional.sparse_ops import (build_graph_index,
                                                     edge_dot,
                                                     edge_weighted_sum,
                                                     sddmm, spmm)


@pytest.fixture
def graph():
    torch.manual_seed(0)
    # unsorted edges, a node without incoming edges, a bipartite shape
    edge_index = torch.stack([torch.randint(0, 6, (25, )),
                              torch.randint(0, 4, (25, ))])
    return edge_index, build_graph_index(edge_index, 6, 5)


def test_index_orders_and_permutations(graph):
    edge_index, index = graph
    assert torch.equal(index.src, edge_index[0][index.perm])
    assert torch.equal(index.dst, edge_index[1][index.perm])
    assert bool((index.dst[1:] >= index.dst[:-1]).all())
    values = torch.arange(25.0).view(-1, 1)
    back = index.to_input_order(index.to_csr_order(values))
    assert torch.equal(back, values)


def test_values_match_gathers(graph):
    _, index = graph
    q = torch.randn(5, 2, 3)
    k = torch.randn(6, 2, 3)
    w = torch.rand(25, 2)
    e = torch.randn(25, 2, 3)
    src, dst = index.src, index.dst
    torch.testing.assert_close(sddmm(q, k, index), (q[dst] * k[src]).sum(-1))
    ref = torch.zeros(5, 2, 3).index_add_(0, dst, w.unsqueeze(-1) * k[src])
    torch.testing.assert_close(spmm(w, k, index), ref)
    torch.testing.assert_close(edge_dot(q, e, index), (q[dst] * e).sum(-1))
    ref = torch.zeros(5, 2, 3).index_add_(0, dst, w.unsqueeze(-1) * e)
    torch.testing.assert_close(edge_weighted_sum(w, e, index), ref)


def test_gradcheck(graph):
    _, index = graph
    f64 = dict(dtype=torch.float64, requires_grad=True)
    q, k = torch.randn(5, 2, 3, **f64), torch.randn(6, 2, 3, **f64)
    w, e = torch.rand(25, 2, **f64), torch.randn(25, 2, 3, **f64)
    assert torch.autograd.gradcheck(lambda a, b: sddmm(a, b, index), (q, k))
    assert torch.autograd.gradcheck(lambda a, b: spmm(a, b, index), (w, k))
    assert torch.autograd.gradcheck(lambda a, b: edge_dot(a, b, index),
                                    (q, e))
    assert torch.autograd.gradcheck(
        lambda a, b: edge_weighted_sum(a, b, index), (w, e))


def test_empty_graph():
    index = build_graph_index(torch.zeros(2, 0, dtype=torch.long), 3, 3)
    q = torch.randn(3, 2, 4, requires_grad=True)
    assert sddmm(q, q, index).shape == (0, 2)
    out = spmm(torch.zeros(0, 2), q, index)
    assert torch.equal(out, torch.zeros(3, 2, 4))
