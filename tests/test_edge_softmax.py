import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tgnn_transformers.functional import edge_softmax


def dense_reference(scores, index, num_nodes):
    """Softmax over a dense [N, E] masked matrix: row i holds the edges into i."""
    mask = index.view(1, -1) == torch.arange(num_nodes).view(-1, 1)  # [N, E]
    out = torch.zeros_like(scores)
    for h in range(scores.size(1)):
        dense = scores[:, h].view(1, -1).expand(num_nodes, -1)
        dense = dense.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(dense, dim=1).nan_to_num(0.0)
        out[:, h] = (weights * mask).sum(dim=0)
    return out


@settings(max_examples=30, deadline=None)
@given(num_nodes=st.integers(1, 12), num_edges=st.integers(0, 40),
       heads=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_matches_dense_masked_softmax(num_nodes, num_edges, heads, seed):
    gen = torch.Generator().manual_seed(seed)
    index = torch.randint(0, num_nodes, (num_edges, ), generator=gen)
    scores = torch.randn(num_edges, heads, generator=gen, dtype=torch.float64)
    out = edge_softmax(scores, index, num_nodes)
    torch.testing.assert_close(out, dense_reference(scores, index, num_nodes))


def test_large_logits_are_stable():
    index = torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([[1e4], [1e4 - 1.0], [-1e4], [5e3]])
    out = edge_softmax(scores, index, 3)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:2, 0].sum(), torch.tensor(1.0))
    torch.testing.assert_close(out[2:, 0], torch.tensor([0.0, 1.0]))


def test_empty_and_fully_masked_targets_give_no_nan():
    index = torch.tensor([1, 1])
    scores = torch.full((2, 2), float("-inf"), requires_grad=True)
    out = edge_softmax(scores, index, num_nodes=4)
    assert torch.equal(out, torch.zeros(2, 2))
    out.sum().backward()
    assert torch.isfinite(scores.grad).all()
    empty = edge_softmax(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long),
                         num_nodes=5)
    assert empty.shape == (0, 3)


def test_gradient_matches_autograd_of_reference():
    torch.manual_seed(1)
    index = torch.randint(0, 5, (20, ))
    scores = torch.randn(20, 2, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda s: edge_softmax(s, index, 5), (scores, ))
