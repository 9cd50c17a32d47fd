import pytest
import torch
import torch_geometric.typing
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.utils import softmax as pyg_softmax

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
    out = edge_softmax(scores, index=index, num_nodes=num_nodes)
    torch.testing.assert_close(out, dense_reference(scores, index, num_nodes))


def test_large_logits_are_stable():
    index = torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([[1e4], [1e4 - 1.0], [-1e4], [5e3]])
    out = edge_softmax(scores, index=index, num_nodes=3)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:2, 0].sum(), torch.tensor(1.0))
    torch.testing.assert_close(out[2:, 0], torch.tensor([0.0, 1.0]))


def test_empty_and_fully_masked_targets_give_no_nan():
    index = torch.tensor([1, 1])
    scores = torch.full((2, 2), float("-inf"), requires_grad=True)
    out = edge_softmax(scores, index=index, num_nodes=4)
    assert torch.equal(out, torch.zeros(2, 2))
    out.sum().backward()
    assert torch.isfinite(scores.grad).all()
    empty = edge_softmax(torch.zeros(0, 3),
                         index=torch.zeros(0, dtype=torch.long),
                         num_nodes=5)
    assert empty.shape == (0, 3)


def test_gradient_matches_autograd_of_reference():
    torch.manual_seed(1)
    index = torch.randint(0, 5, (20, ))
    scores = torch.randn(20, 2, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(
        lambda s: edge_softmax(s, index=index, num_nodes=5), (scores, ))


# --------------------------------------------------------------------------
# Same arguments and results as torch_geometric.utils.softmax
# --------------------------------------------------------------------------

def _ptr(counts):
    """CSR pointers of segments with the given sizes."""
    counts = torch.as_tensor(counts, dtype=torch.long)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _segments(counts):
    counts = torch.as_tensor(counts, dtype=torch.long)
    return torch.repeat_interleave(torch.arange(counts.numel()), counts)


def test_signature_is_pygs():
    import inspect
    ours = inspect.signature(edge_softmax).parameters
    theirs = inspect.signature(pyg_softmax).parameters
    assert list(ours) == list(theirs)
    assert ([p.default for p in ours.values()] ==
            [p.default for p in theirs.values()])


def test_matches_pyg_with_index():
    gen = torch.Generator().manual_seed(0)
    index = torch.randint(0, 7, (60, ), generator=gen)  # unsorted
    src = torch.randn(60, 4, generator=gen, dtype=torch.float64) * 5
    torch.testing.assert_close(edge_softmax(src, index=index),
                               pyg_softmax(src, index))
    # positional arguments in PyG's order
    torch.testing.assert_close(edge_softmax(src, index, None, 7, 0),
                               pyg_softmax(src, index, None, 7, 0))
    # 1-D scores and int32 indices
    torch.testing.assert_close(
        edge_softmax(src[:, 0], index=index.int()),
        pyg_softmax(src[:, 0], index))


def test_matches_pyg_with_ptr():
    counts = [3, 0, 1, 5, 0, 2]
    ptr, index = _ptr(counts), _segments(counts)
    src = torch.randn(11, 3, dtype=torch.float64)
    expected = pyg_softmax(src, index)
    torch.testing.assert_close(pyg_softmax(src, ptr=ptr), expected)
    torch.testing.assert_close(edge_softmax(src, ptr=ptr), expected)
    torch.testing.assert_close(edge_softmax(src, None, ptr), expected)
    # ptr is used instead of index/num_nodes when both are given (as in PyG)
    torch.testing.assert_close(
        edge_softmax(src, index=index, ptr=ptr, num_nodes=99), expected)


@pytest.mark.parametrize("dim", [1, -1])
def test_matches_pyg_along_other_dims_of_3d_input(dim):
    counts = [2, 0, 4, 1, 3]
    ptr, index = _ptr(counts), _segments(counts)
    shape = [2, 10, 3] if dim == 1 else [2, 3, 10]
    src = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    expected = pyg_softmax(src, index, dim=dim)
    by_index = edge_softmax(src, index=index, dim=dim)
    by_ptr = edge_softmax(src, ptr=ptr, dim=dim)
    torch.testing.assert_close(by_index, expected)
    torch.testing.assert_close(by_ptr, expected)
    assert by_index.is_contiguous() and by_ptr.is_contiguous()
    if torch_geometric.typing.WITH_TORCH_SCATTER:
        # PyG's own ptr route in dims other than 0 needs torch-scatter
        torch.testing.assert_close(pyg_softmax(src, ptr=ptr, dim=dim),
                                   expected)
    grad = torch.randn(shape, dtype=torch.float64)
    g_ref, = torch.autograd.grad(expected, src, grad)
    g_index, = torch.autograd.grad(by_index, src, grad)
    g_ptr, = torch.autograd.grad(by_ptr, src, grad)
    torch.testing.assert_close(g_index, g_ref)
    torch.testing.assert_close(g_ptr, g_ref)


def test_num_nodes_larger_than_max_index():
    index = torch.tensor([3, 0, 3, 1, 0])
    src = torch.randn(5, 2, dtype=torch.float64)
    expected = pyg_softmax(src, index, num_nodes=10)
    out = edge_softmax(src, index=index, num_nodes=10)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out, edge_softmax(src, index=index))
    # the same with trailing empty segments in ptr
    ptr = _ptr([2, 1, 0, 2, 0, 0, 0, 0, 0, 0])
    order = torch.argsort(index, stable=True)
    torch.testing.assert_close(edge_softmax(src[order], ptr=ptr),
                               expected[order])


def test_gradcheck_with_ptr_along_dim_1():
    ptr = _ptr([2, 0, 3])
    src = torch.randn(2, 5, 2, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda s: edge_softmax(s, ptr=ptr, dim=1),
                             (src, ))


def test_fully_masked_segment_with_ptr_gives_zeros():
    ptr = _ptr([2, 1])
    src = torch.tensor([[float("-inf")], [float("-inf")], [0.5]],
                       requires_grad=True)
    out = edge_softmax(src, ptr=ptr)
    assert torch.equal(out, torch.tensor([[0.0], [0.0], [1.0]]))
    out.sum().backward()
    assert torch.isfinite(src.grad).all()


@settings(max_examples=80, deadline=None)
@given(counts=st.lists(st.integers(0, 5), min_size=1, max_size=10),
       extra_nodes=st.integers(0, 3), lead=st.integers(0, 2),
       trail=st.integers(0, 2), negative_dim=st.booleans(),
       seed=st.integers(0, 2**16))
def test_matches_pyg_on_random_segment_layouts(counts, extra_nodes, lead,
                                               trail, negative_dim, seed):
    """Random segment sizes (empty segments included), edges along any
    dimension, unsorted indices: index and ptr give PyG's softmax."""
    gen = torch.Generator().manual_seed(seed)
    num_edges = sum(counts)
    shape = [2] * lead + [num_edges] + [3] * trail
    dim = lead - len(shape) if negative_dim else lead
    # integer-valued scores give ties; the scale gives large logits
    src = torch.randint(-4, 5, shape, generator=gen).double() * 7.5
    num_nodes = len(counts) + extra_nodes
    index = _segments(counts)
    ptr = _ptr(list(counts) + [0] * extra_nodes)
    expected = pyg_softmax(src, index, num_nodes=num_nodes, dim=dim)
    torch.testing.assert_close(
        edge_softmax(src, index=index, num_nodes=num_nodes, dim=dim),
        expected)
    torch.testing.assert_close(edge_softmax(src, ptr=ptr, dim=dim),
                               expected)
    # any order of the entries: the result follows them
    perm = torch.randperm(num_edges, generator=gen)
    torch.testing.assert_close(
        edge_softmax(src.index_select(dim, perm), index=index[perm],
                     num_nodes=num_nodes, dim=dim),
        expected.index_select(dim, perm))


def test_argument_errors_name_argument_expected_and_received():
    src = torch.randn(4, 2)
    index = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="index.*ptr.*got neither"):
        edge_softmax(src)
    with pytest.raises(ValueError, match=r"index must have shape \[4\].*"
                       r"got \[3\]"):
        edge_softmax(src, index=index[:3])
    with pytest.raises(ValueError, match=r"index must have shape \[2\].*"
                       r"dim 1.*got \[4\]"):
        edge_softmax(src, index=index, dim=1)
    with pytest.raises(TypeError, match="index must hold integers.*float"):
        edge_softmax(src, index=index.float())
    with pytest.raises(TypeError, match="src must be floating point.*int64"):
        edge_softmax(index, index=index)
    with pytest.raises(ValueError, match=r"dim must be in \[-2, 1\].*"
                       r"\[4, 2\].*got 2"):
        edge_softmax(src, index=index, dim=2)
    with pytest.raises(ValueError, match=r"ptr must have shape "
                       r"\[num_segments \+ 1\].*got \[1, 3\]"):
        edge_softmax(src, ptr=torch.tensor([[0, 2, 4]]))
    with pytest.raises(ValueError, match=r"ptr must start at 0 and end at "
                       r"src.size\(0\) = 4, got ptr\[0\] = 0 and "
                       r"ptr\[-1\] = 3"):
        edge_softmax(src, ptr=torch.tensor([0, 2, 3]))
    with pytest.raises(ValueError, match="ptr must be non-decreasing"):
        edge_softmax(src, ptr=torch.tensor([0, 3, 1, 4]))
    with pytest.raises(TypeError, match="ptr must hold integers"):
        edge_softmax(src, ptr=torch.tensor([0.0, 4.0]))
    with pytest.raises(ValueError, match="num_nodes must be >= 0, got -1"):
        edge_softmax(src, index=index, num_nodes=-1)
