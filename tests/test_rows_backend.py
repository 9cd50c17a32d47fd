"""The rows backend (SDPA over each target's gathered sources, for targets
of equal in-degree listed in order) against attention written out per
target, and against the sparse path, values and gradients; what it
refuses; that ``auto`` takes it for the bipartite graphs of decoding."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tgnn_transformers.functional import edge_attention
from tgnn_transformers.functional.backends import (ATTENTION_BACKENDS,
                                                   AttentionCall,
                                                   select_backend)
from tgnn_transformers.functional.backends.rows import uniform_in_degree
from tgnn_transformers.functional.scores import ScoreOptions


def rows_graph(num_dst, k, num_src, gen):
    """``k`` random sources (repeats allowed) for each target in order."""
    sources = torch.randint(0, num_src, (num_dst * k, ), generator=gen)
    targets = torch.arange(num_dst).repeat_interleave(k)
    return torch.stack([sources, targets])


def by_hand(q, k, v, edge_index, scale):
    """Each target's softmax over its list of edges, a loop per target."""
    out = torch.zeros(q.size(0), q.size(1), v.size(-1), dtype=q.dtype)
    for i in range(q.size(0)):
        src = edge_index[0, edge_index[1] == i]
        scores = torch.einsum("hc,ehc->eh", q[i], k[src]) * scale
        alpha = scores.softmax(0)
        out[i] = torch.einsum("eh,ehc->hc", alpha, v[src])
    return out


@given(num_dst=st.integers(1, 5), k=st.integers(1, 6),
       extra=st.integers(0, 6), heads=st.integers(1, 3),
       channels=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_rows_equal_attention_by_hand(num_dst, k, extra, heads, channels,
                                      seed):
    gen = torch.Generator().manual_seed(seed)
    num_src = num_dst + extra
    edge_index = rows_graph(num_dst, k, num_src, gen)
    q = torch.randn(num_dst, heads, channels, generator=gen,
                    dtype=torch.float64)
    key = torch.randn(num_src, heads, channels, generator=gen,
                      dtype=torch.float64)
    value = torch.randn(num_src, heads, channels + 1, generator=gen,
                        dtype=torch.float64)
    out = edge_attention(q, key, value, edge_index, backend="rows").out
    torch.testing.assert_close(out, by_hand(q, key, value, edge_index,
                                            channels**-0.5))


def test_rows_equal_sparse_with_gradients_and_a_tensor_scale():
    gen = torch.Generator().manual_seed(0)
    edge_index = rows_graph(4, 7, 30, gen)
    q = torch.randn(4, 2, 8, generator=gen, dtype=torch.float64,
                    requires_grad=True)
    k = torch.randn(30, 2, 8, generator=gen, dtype=torch.float64,
                    requires_grad=True)
    v = torch.randn(30, 2, 8, generator=gen, dtype=torch.float64,
                    requires_grad=True)
    scale = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    results = {}
    for backend in ("rows", "sparse"):
        out = edge_attention(q, k, v, edge_index, scale=scale,
                             backend=backend).out
        results[backend] = (out, torch.autograd.grad(
            (out * out).sum(), (q, k, v, scale)))
    torch.testing.assert_close(results["rows"][0], results["sparse"][0])
    for a, b in zip(results["rows"][1], results["sparse"][1]):
        torch.testing.assert_close(a, b)


def test_uniform_in_degree_recognition():
    ei = torch.tensor([[0, 3, 1, 2], [0, 0, 1, 1]])
    assert uniform_in_degree(ei, 2) == 2
    assert uniform_in_degree(torch.tensor([[0, 1, 2], [0, 0, 1]]), 2) is None
    # targets out of order, or a target without edges
    assert uniform_in_degree(torch.tensor([[0, 1], [1, 0]]), 2) is None
    assert uniform_in_degree(torch.tensor([[0, 1], [0, 0]]), 2) is None
    assert uniform_in_degree(torch.zeros(2, 0, dtype=torch.long), 2) is None


def _call(q, k, v, edge_index, **changes):
    values = dict(edge_key=None, edge_value=None, bias=None, scale=1.0,
                  scores=ScoreOptions(), dropout_p=0.0, reduce="sum",
                  need_weights=False, batch=None)
    values.update(changes)
    return AttentionCall(q, k, v, edge_index, **values)


def test_auto_takes_rows_for_decoding_steps_only():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 2, 4), torch.randn(9, 2, 4)
    step = rows_graph(2, 5, 9, gen)
    assert select_backend("auto", _call(q, k, k, step)).name == "rows"
    # not bipartite: auto does not try it
    square = rows_graph(9, 2, 9, gen)
    k9 = torch.randn(9, 2, 4)
    assert select_backend("auto", _call(k9, k9, k9, square)).name == \
        "sparse"
    # what it does not compute goes to the sparse path
    for changes in ({"need_weights": True}, {"reduce": ("sum", "max")},
                    {"bias": torch.zeros(10, 2)},
                    {"scores": ScoreOptions(normalization="relu")}):
        assert select_backend("auto", _call(q, k, k, step,
                                            **changes)).name == "sparse"
    ragged = torch.tensor([[0, 1, 2], [0, 0, 1]])
    with pytest.raises(ValueError, match="backend='rows' cannot be used "
                       "here: the targets do not all have the same number"):
        edge_attention(q, k, k, ragged, backend="rows")
    assert "rows" in ATTENTION_BACKENDS


def test_rows_refuse_gathering_beyond_the_memory_limit(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 2, 4), torch.randn(9, 2, 4)
    step = rows_graph(2, 5, 9, gen)
    monkeypatch.setenv("TGNN_DENSE_MAX_BYTES", "100")
    with pytest.raises(ValueError, match="gathered keys and values need"):
        edge_attention(q, k, k, step, backend="rows")
    assert select_backend("auto", _call(q, k, k, step)).name == "sparse"


@given(k=st.integers(1, 6), first=st.integers(0, 4), extra=st.integers(0, 3),
       seed=st.integers(0, 2**16))
def test_one_target_over_consecutive_sources_reads_them_in_place(
        k, first, extra, seed):
    # A sequence decoded alone: one target whose sources are the cached
    # nodes first .. first + k - 1 (read as a slice, not gathered).
    gen = torch.Generator().manual_seed(seed)
    num_src = first + k + extra
    edge_index = torch.stack([torch.arange(first, first + k),
                              torch.zeros(k, dtype=torch.long)])
    q = torch.randn(1, 2, 3, generator=gen, dtype=torch.float64)
    key = torch.randn(num_src, 2, 3, generator=gen, dtype=torch.float64)
    value = torch.randn(num_src, 2, 4, generator=gen, dtype=torch.float64)
    out = edge_attention(q, key, value, edge_index, backend="rows").out
    torch.testing.assert_close(out, by_hand(q, key, value, edge_index,
                                            3**-0.5))
    # Not consecutive (a repeat): gathered, still right.
    if k > 1:
        edge_index[0, -1] = first
        out = edge_attention(q, key, value, edge_index, backend="rows").out
        torch.testing.assert_close(out, by_hand(q, key, value, edge_index,
                                                3**-0.5))
