import pytest
import torch

from dense_reference import adjacency, dense_aggregate, random_simple_graph
from tgnn_transformers.functional import REDUCTIONS, attention_aggregate


@pytest.mark.parametrize("reduce", REDUCTIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_reduce_matches_dense_masked_computation(reduce, seed):
    torch.manual_seed(seed)
    n, heads, channels = 9, 2, 3
    edge_index = random_simple_graph(n, 25, seed=seed)
    value = torch.randn(n, heads, channels, dtype=torch.float64)
    alpha = torch.rand(edge_index.size(1), heads, dtype=torch.float64)
    alpha[::4, 0] = 0.0  # zero weights are excluded from max / min
    out = attention_aggregate(value, alpha, edge_index, n, reduce)
    adj = adjacency(edge_index, n, n)
    weights = torch.zeros(heads, n, n, dtype=torch.float64)
    weights[:, edge_index[1], edge_index[0]] = alpha.t()
    torch.testing.assert_close(out, dense_aggregate(value, weights, adj,
                                                    reduce))


def test_several_reductions_stack_in_order():
    edge_index = torch.tensor([[0, 1, 2], [1, 1, 0]])
    value = torch.randn(3, 2, 4)
    alpha = torch.rand(3, 2)
    out = attention_aggregate(value, alpha, edge_index, 3, ["max", "sum"])
    assert out.shape == (3, 2, 2, 4)
    torch.testing.assert_close(out[:, :, 0],
                               attention_aggregate(value, alpha, edge_index,
                                                   3, "max"))


def test_max_and_min_are_over_neighbours_not_self():
    # node 0 receives from 1 and 2 only; its own value is the largest.
    value = torch.tensor([[[100.0]], [[1.0]], [[-3.0]]])
    edge_index = torch.tensor([[1, 2], [0, 0]])
    alpha = torch.ones(2, 1)
    assert attention_aggregate(value, alpha, edge_index, 3, "max")[0] == 1.0
    assert attention_aggregate(value, alpha, edge_index, 3, "min")[0] == -3.0
    # nodes without incoming edges get 0
    assert attention_aggregate(value, alpha, edge_index, 3, "max")[1] == 0.0


def test_std_is_differentiable_at_zero_variance():
    value = torch.ones(3, 1, 2, requires_grad=True)
    edge_index = torch.tensor([[0, 1, 2], [0, 0, 0]])
    out = attention_aggregate(value, torch.ones(3, 1), edge_index, 1, "std")
    assert torch.equal(out, torch.zeros(1, 1, 2))
    out.sum().backward()
    assert torch.isfinite(value.grad).all()


def test_gradcheck_all_reductions():
    torch.manual_seed(0)
    edge_index = random_simple_graph(6, 15, isolated=1)
    value = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    alpha = torch.rand(edge_index.size(1), 2, dtype=torch.float64) + 0.1
    alpha.requires_grad_()
    for reduce in ["sum", "mean", "var", "std"]:
        torch.autograd.gradcheck(
            lambda v, a: attention_aggregate(v, a, edge_index, 6, reduce),
            (value, alpha))


def test_unknown_reduce():
    with pytest.raises(ValueError, match="unknown reduce 'median'"):
        attention_aggregate(torch.randn(2, 1, 1), torch.ones(1, 1),
                            torch.tensor([[0], [1]]), 2, "median")
