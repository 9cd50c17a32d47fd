"""Sparse and dense paths agree; attention is permutation equivariant;
graphs of a batch do not interact."""
import pytest
import torch
from torch_geometric.data import Batch, Data

from tgnn_transformers import MultiHeadAttentionConv
from tgnn_transformers.functional import edge_attention
from tgnn_transformers.transforms import SequenceToGraph


def token_batch(pattern, lengths, dim=16):
    t = SequenceToGraph(pattern)
    return Batch.from_data_list([t(Data(x=torch.randn(n, dim)))
                                 for n in lengths])


@pytest.mark.parametrize("pattern", ["full", "causal"])
@pytest.mark.parametrize("lengths", [[5, 5, 5], [1, 9, 3, 0, 4]])
def test_dense_equals_sparse_outputs_and_gradients(pattern, lengths):
    lengths = [n for n in lengths]
    batch = token_batch(pattern, lengths)
    q = torch.randn(batch.num_nodes, 2, 8, dtype=torch.float64,
                    requires_grad=True)
    k = torch.randn_like(q, requires_grad=True)
    v = torch.randn_like(q, requires_grad=True)
    results = {}
    for backend in ["sparse", "dense"]:
        out = edge_attention(q, k, v, batch.edge_index, batch=batch.batch,
                             backend=backend).out
        grads = torch.autograd.grad((out * out).sum(), (q, k, v))
        results[backend] = (out, grads)
    torch.testing.assert_close(results["dense"][0], results["sparse"][0])
    for a, b in zip(results["dense"][1], results["sparse"][1]):
        torch.testing.assert_close(a, b)


def test_dense_backend_refuses_what_it_cannot_do():
    batch = token_batch("window", [6, 6])
    q = torch.randn(12, 2, 4)
    with pytest.raises(ValueError, match="not a batch of complete"):
        edge_attention(q, q, q, batch.edge_index, batch=batch.batch,
                       backend="dense")
    full = token_batch("full", [6, 6])
    with pytest.raises(ValueError, match="need_weights"):
        edge_attention(q, q, q, full.edge_index, batch=full.batch,
                       backend="dense", need_weights=True)


def test_auto_returns_weights_when_asked():
    conv = MultiHeadAttentionConv(16, 4, heads=2)
    batch = token_batch("full", [3, 4])
    out, (ei, alpha) = conv(batch.x, batch.edge_index,
                            return_attention_weights=True, batch=batch.batch)
    assert alpha.shape == (25, 2)
    torch.testing.assert_close(out, conv(batch.x, batch.edge_index,
                                         batch=batch.batch))


def test_permutation_equivariance():
    conv = MultiHeadAttentionConv(8, 4, heads=2, edge_dim=3, beta=True).eval()
    x = torch.randn(10, 8)
    edge_index = torch.randint(0, 10, (2, 40))
    edge_attr = torch.randn(40, 3)
    perm = torch.randperm(10)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(10)
    out = conv(x, edge_index, edge_attr)
    edge_perm = torch.randperm(40)
    out_p = conv(x[perm], inv[edge_index][:, edge_perm], edge_attr[edge_perm])
    torch.testing.assert_close(out_p, out[perm], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pattern", ["full", "causal", "window"])
def test_graphs_in_a_batch_do_not_interact(pattern):
    conv = MultiHeadAttentionConv(16, 4, heads=2, out_proj=True,
                                  root_weight=False).eval()
    batch = token_batch(pattern, [4, 7, 2])
    out = conv(batch.x, batch.edge_index, batch=batch.batch)
    x2 = batch.x.clone()
    x2[batch.batch == 1] += 10.0  # change only the second graph
    out2 = conv(x2, batch.edge_index, batch=batch.batch)
    same = batch.batch != 1
    torch.testing.assert_close(out[same], out2[same])
    assert not torch.allclose(out[~same], out2[~same])


def test_attention_dropout_only_in_training():
    conv = MultiHeadAttentionConv(8, 4, heads=2, dropout=0.5)
    x, edge_index = torch.randn(6, 8), torch.randint(0, 6, (2, 20))
    conv.eval()
    torch.testing.assert_close(conv(x, edge_index), conv(x, edge_index))
    conv.train()
    assert not torch.allclose(conv(x, edge_index), conv(x, edge_index))


def test_gradcheck_sparse_kernel_with_edge_terms():
    torch.manual_seed(3)
    edge_index = torch.randint(0, 5, (2, 14))
    args = [torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
            for _ in range(3)]
    edge_key = torch.randn(14, 2, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(14, 2, dtype=torch.float64, requires_grad=True)

    def f(q, k, v, ek, b):
        return edge_attention(q, k, v, edge_index, edge_key=ek,
                              edge_value=ek, bias=b, backend="sparse").out

    torch.autograd.gradcheck(f, (*args, edge_key, bias))


def test_dense_falls_back_when_masked_scores_would_not_fit(monkeypatch):
    from tgnn_transformers.functional.backends import dense
    monkeypatch.setattr(dense, "DENSE_MASKED_MAX_BYTES", 100)
    batch = token_batch("full", [6, 3])
    q = torch.randn(9, 2, 4)
    with pytest.raises(ValueError, match="TGNN_DENSE_MAX_BYTES"):
        edge_attention(q, q, q, batch.edge_index, batch=batch.batch,
                       backend="dense")
    auto = edge_attention(q, q, q, batch.edge_index, batch=batch.batch)
    sparse = edge_attention(q, q, q, batch.edge_index, backend="sparse")
    torch.testing.assert_close(auto.out, sparse.out)
    # equal lengths need no mask: still dense
    equal = token_batch("full", [5, 5])
    q = torch.randn(10, 2, 4)
    edge_attention(q, q, q, equal.edge_index, batch=equal.batch,
                   backend="dense")


def test_graph_index_cache_follows_in_place_edits():
    from tgnn_transformers.functional.sparse_ops import graph_index
    edge_index = torch.tensor([[0, 1, 2], [2, 0, 1]])
    a = graph_index(edge_index, 3, 3)
    assert graph_index(edge_index, 3, 3) is a
    edge_index[1, 0] = 0
    b = graph_index(edge_index, 3, 3)
    assert b is not a and b.dst.tolist() == [0, 0, 1]


def test_dense_gradients_pass_gradcheck_on_ragged_batches():
    """The padding's own backward (a row gather each way) against finite
    differences, with an empty sequence and one of a single token."""
    from tgnn_transformers.functional import complete_edge_index
    lengths = torch.tensor([3, 0, 1, 4])
    batch = torch.repeat_interleave(torch.arange(4), lengths)
    for causal in (False, True):
        edge_index = complete_edge_index(lengths, causal=causal)
        args = [torch.randn(8, 2, 3, dtype=torch.float64, requires_grad=True)
                for _ in range(3)]

        def f(q, k, v):
            return edge_attention(q, k, v, edge_index, batch=batch,
                                  backend="dense").out

        torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("pattern", ["full", "causal"])
def test_non_finite_values_stay_in_their_sequence(pattern):
    """A padding row repeats a real row of its own sequence, so a NaN in
    one sequence reaches no other (nor an empty one's neighbours)."""
    batch = token_batch(pattern, [3, 0, 4, 2])
    q, k, v = (torch.randn(9, 2, 4, requires_grad=True) for _ in range(3))
    poisoned = [t.detach().clone() for t in (q, k, v)]
    for t in poisoned:
        t[2] = float("nan")  # the last token of the first sequence
    poisoned = [t.requires_grad_() for t in poisoned]
    clean = batch.batch != 0
    dense = edge_attention(*poisoned, batch.edge_index, batch=batch.batch,
                           backend="dense").out
    sparse = edge_attention(q, k, v, batch.edge_index, batch=batch.batch,
                            backend="sparse").out
    assert torch.isnan(dense[~clean]).all()
    torch.testing.assert_close(dense[clean], sparse[clean])
    grads = torch.autograd.grad(dense[clean].sum(), poisoned)
    expected = torch.autograd.grad(sparse[clean].sum(), (q, k, v))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got[clean], want[clean])


def test_padded_layout_is_kept_by_lengths():
    """A new graph of lengths seen before reuses their layout (its index
    tensors), and the layout pads and unpads exactly."""
    from tgnn_transformers.functional import layout as layouts
    lengths = torch.tensor([2, 5, 0, 3])
    first = layouts.padded_layout(lengths, 10)
    assert layouts.padded_layout(lengths.clone(), 10) is first
    assert layouts.padded_layout(lengths, 10, multiple=4) is not first
    assert first.max_len == 5 and first.ragged
    x = torch.randn(10, 2, 3)
    padded = first.pad(x)
    assert padded.shape == (4, 2, 5, 3)
    assert torch.equal(first.unpad(padded), x)
    # every padding row repeats a row of its own sequence (the empty one:
    # the sequence before it)
    rows = padded.transpose(1, 2)
    assert torch.equal(rows[0, 2:], x[1].expand(3, 2, 3))
    assert torch.equal(rows[2], x[6].expand(5, 2, 3))
    equal = layouts.padded_layout(torch.tensor([3, 3]), 6)
    y = torch.randn(6, 2, 3)
    assert equal.pad(y)._base is y  # a view, no copy

    batch = token_batch("full", [4, 6])
    q = torch.randn(10, 2, 4)
    edge_attention(q, q, q, batch.edge_index, batch=batch.batch)
    kept = dict(layouts._LAYOUTS)
    again = edge_attention(q, q, q, batch.edge_index.clone(),
                           batch=batch.batch)
    assert dict(layouts._LAYOUTS) == kept
    torch.testing.assert_close(again.out, edge_attention(
        q, q, q, batch.edge_index, backend="sparse").out)
