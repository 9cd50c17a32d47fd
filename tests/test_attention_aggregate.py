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


@pytest.mark.parametrize("zero_weights", [False, True])
def test_max_min_gradients_reach_values_and_edge_terms(zero_weights):
    # Reference: the messages built densely and reduced with scatter_reduce
    # (the edge terms make every message distinct, so no ties).
    torch.manual_seed(0)
    n, heads, channels = 7, 2, 3
    edge_index = random_simple_graph(n, 20, isolated=1)
    num_edges = edge_index.size(1)
    value = torch.randn(n, heads, channels, dtype=torch.float64,
                        requires_grad=True)
    edge_value = torch.randn(num_edges, heads, channels,
                             dtype=torch.float64, requires_grad=True)
    alpha = torch.rand(num_edges, heads, dtype=torch.float64) + 0.1
    if zero_weights:
        alpha[::3, 1] = 0.0
    out = attention_aggregate(value, alpha, edge_index, n, ["max", "min"],
                              edge_value=edge_value)

    message = value[edge_index[0]] + edge_value
    target = edge_index[1].view(-1, 1, 1).expand_as(message)
    keep = (alpha > 0).unsqueeze(-1)
    expected = []
    for kind, skip in (("amax", float("-inf")), ("amin", float("inf"))):
        best = message.new_full((n, heads, channels), skip).scatter_reduce(
            0, target, message.masked_fill(~keep, skip), kind)
        expected.append(best.masked_fill(torch.isinf(best), 0.0))
    expected = torch.stack(expected, dim=2)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, (value, edge_value), grad)
    reference = torch.autograd.grad(expected, (value, edge_value), grad)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b)


def test_max_of_tied_messages_sends_the_whole_gradient_to_their_source():
    # Two edges from the same source (a duplicate edge) tie exactly.
    value = torch.tensor([[[1.0]], [[5.0]], [[2.0]]], requires_grad=True)
    edge_index = torch.tensor([[1, 1, 2], [0, 0, 0]])
    out = attention_aggregate(value, torch.ones(3, 1), edge_index, 1, "max")
    assert out.item() == 5.0
    out.sum().backward()
    assert value.grad.flatten().tolist() == [0.0, 1.0, 0.0]


def test_max_min_double_backward():
    torch.manual_seed(1)
    edge_index = random_simple_graph(5, 12, isolated=1)
    value = torch.randn(5, 2, 2, dtype=torch.float64, requires_grad=True)
    alpha = torch.rand(edge_index.size(1), 2, dtype=torch.float64) + 0.1
    torch.autograd.gradgradcheck(
        lambda v: attention_aggregate(v, alpha, edge_index, 5,
                                      ["max", "min"]) ** 2, (value,))


@pytest.mark.parametrize("num_src,num_dst", [(0, 3), (3, 0), (0, 0), (3, 3)])
def test_max_min_without_edges_are_zero_with_zero_gradients(num_src,
                                                            num_dst):
    value = torch.randn(num_src, 2, 3, requires_grad=True)
    edge_value = torch.randn(0, 2, 3, requires_grad=True)
    out = attention_aggregate(value, torch.ones(0, 2),
                              torch.zeros(2, 0, dtype=torch.long), num_dst,
                              ["max", "min"], edge_value=edge_value)
    assert torch.equal(out, torch.zeros(num_dst, 2, 2, 3))
    out.sum().backward()
    assert torch.equal(value.grad, torch.zeros_like(value))
    assert edge_value.grad.shape == (0, 2, 3)


@pytest.mark.parametrize("kinds", [["max", "min"], ["max"], ["min"],
                                   ["min", "max"]])
def test_row_pass_extremes_equal_the_scatter_reduction(monkeypatch, kinds):
    # The CPU path reduces each target's edges in one pass (torch's CSR
    # max / min product, max and min together); the scatter path gathers
    # the messages.  Same values, same winners (first edge of a tie,
    # between different sources too), same gradients; empty targets 0.
    from tgnn_transformers.functional import aggregate
    torch.manual_seed(3)
    n, heads, channels = 8, 2, 3
    edge_index = random_simple_graph(n, 24, isolated=2)
    edge_index = torch.cat([edge_index, edge_index[:, :3]], dim=1)
    value = torch.randint(-2, 3, (n, heads, channels)).double()  # ties
    alpha = torch.rand(edge_index.size(1), heads, dtype=torch.float64) + .1
    grad = torch.randn(n, heads, len(kinds), channels, dtype=torch.float64)

    def run():
        v = value.clone().requires_grad_()
        out = attention_aggregate(v, alpha, edge_index, n, kinds)
        (out * grad).sum().backward()
        return out, v.grad

    calls = []
    original = aggregate._row_extremes
    monkeypatch.setattr(aggregate, "_row_extremes",
                        lambda *a: calls.append(1) or original(*a))
    row_out, row_grad = run()
    assert calls, "the CPU row pass was not taken"
    monkeypatch.setattr(aggregate, "_CSR_REDUCE", None)
    scatter_out, scatter_grad = run()
    assert len(calls) == 1
    torch.testing.assert_close(row_out, scatter_out)
    torch.testing.assert_close(row_grad, scatter_grad)


def test_extremes_under_inference_mode_equal_the_recorded_pass():
    # The CPU pass asks torch's op for its winners through a gradient
    # request; under inference_mode (no autograd at all) it must still run.
    torch.manual_seed(0)
    edge_index = random_simple_graph(6, 15, isolated=1)
    value = torch.randn(6, 2, 3)
    alpha = torch.rand(edge_index.size(1), 2) + 0.1
    expected = attention_aggregate(value, alpha, edge_index, 6,
                                   ["max", "min"])
    with torch.inference_mode():
        out = attention_aggregate(value, alpha, edge_index, 6,
                                  ["max", "min"])
    torch.testing.assert_close(out, expected)
