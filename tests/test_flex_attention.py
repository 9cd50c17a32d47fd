"""``backend="flex"``: FlexAttention on batches of full, causal and
(dilated) window token graphs gives the sparse path's result (forward; torch
runs FlexAttention's backward only on GPUs)."""
import pytest
import torch
from torch_geometric.data import Batch, Data

from tgnn_transformers import MultiHeadAttentionConv
from tgnn_transformers.functional import edge_attention
from tgnn_transformers.transforms import SequenceToGraph

pytest.importorskip("torch.nn.attention.flex_attention")

CASES = [("full", {}), ("causal", {}), ("window", {"window": 3}),
         ("dilated", {"window": 2, "dilation": 3})]


def _batch(pattern, kwargs, lengths=(20, 7, 33)):
    to_graph = SequenceToGraph(pattern, **kwargs)
    return Batch.from_data_list([to_graph(Data(x=torch.randn(n, 16)))
                                 for n in lengths])


def _assert_flex_matches_sparse(batch):
    q, k, v = (torch.randn(batch.num_nodes, 2, 8) for _ in range(3))
    with torch.no_grad():
        flex = edge_attention(q, k, v, batch.edge_index, batch=batch.batch,
                              backend="flex").out
        ref = edge_attention(q, k, v, batch.edge_index,
                             backend="sparse").out
    torch.testing.assert_close(flex, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pattern,kwargs", CASES)
def test_flex_matches_sparse_on_token_graphs(pattern, kwargs):
    _assert_flex_matches_sparse(_batch(pattern, kwargs))


def test_flex_in_a_layer_and_shuffled_edges():
    batch = _batch("window", {"window": 2})
    perm = torch.randperm(batch.edge_index.size(1))
    edge_index = batch.edge_index[:, perm]
    conv = MultiHeadAttentionConv(16, 8, heads=2).eval()
    with torch.no_grad():
        conv.backend = "flex"
        flex = conv(batch.x, edge_index, batch=batch.batch)
        conv.backend = "sparse"
        ref = conv(batch.x, edge_index)
    torch.testing.assert_close(flex, ref, atol=1e-5, rtol=1e-5)


def test_flex_refuses_what_it_cannot_do():
    batch = _batch("window", {"window": 2})
    n = batch.num_nodes
    q, k, v = (torch.randn(n, 2, 8) for _ in range(3))
    with torch.no_grad():
        with pytest.raises(ValueError, match="need_weights"):
            edge_attention(q, k, v, batch.edge_index, batch=batch.batch,
                           backend="flex", need_weights=True)
        other = batch.edge_index[:, :-1]  # one edge missing: no pattern
        with pytest.raises(ValueError, match="not a batch of full"):
            edge_attention(q, k, v, other, batch=batch.batch,
                           backend="flex")
    q.requires_grad_()
    with pytest.raises(ValueError, match="backward only on GPUs"):
        edge_attention(q, k, v, batch.edge_index, batch=batch.batch,
                       backend="flex")


@pytest.fixture
def flex_spy(monkeypatch):
    """``backend="auto"`` prefers FlexAttention as on CUDA, and the padded
    FlexAttention calls are counted."""
    from tgnn_transformers.functional.backends import flex
    calls = []
    real = flex.flex_attention_padded

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)
    monkeypatch.setattr(flex, "flex_preferred", lambda query: True)
    monkeypatch.setattr(flex, "flex_attention_padded", spy)
    return calls


@pytest.mark.parametrize("pattern,kwargs", CASES[2:])
def test_auto_takes_flex_for_window_graphs_where_preferred(pattern, kwargs,
                                                           flex_spy):
    batch = _batch(pattern, kwargs)
    q, k, v = (torch.randn(batch.num_nodes, 2, 8) for _ in range(3))
    with torch.no_grad():
        auto = edge_attention(q, k, v, batch.edge_index, batch=batch.batch)
        ref = edge_attention(q, k, v, batch.edge_index, backend="sparse")
    assert len(flex_spy) == 1
    torch.testing.assert_close(auto.out, ref.out, atol=1e-5, rtol=1e-5)


def test_auto_leaves_flex_for_other_graphs_and_options(flex_spy):
    # a large graph whose widest edge spans 40k tokens: the window test
    # must not build a 40k-token window graph (3.2G edges) to say no
    n = 40_000
    edge_index = torch.tensor([[0, n - 1, 5, 7], [n - 1, 0, 6, 7]])
    q, k, v = (torch.randn(n, 2, 8) for _ in range(3))
    with torch.no_grad():
        auto = edge_attention(q, k, v, edge_index)
        ref = edge_attention(q, k, v, edge_index, backend="sparse")
        torch.testing.assert_close(auto.out, ref.out)
        batch = _batch("window", {"window": 2})
        m = batch.num_nodes
        q, k, v = (torch.randn(m, 2, 8) for _ in range(3))
        bias = torch.randn(batch.edge_index.size(1), 2)
        auto = edge_attention(q, k, v, batch.edge_index, batch=batch.batch,
                              bias=bias, need_weights=True)
        ref = edge_attention(q, k, v, batch.edge_index, bias=bias,
                             backend="sparse", need_weights=True)
    assert flex_spy == []
    torch.testing.assert_close(auto.out, ref.out)
    torch.testing.assert_close(auto.alpha, ref.alpha)


def test_padded_layout_rounded_to_a_block_round_trips():
    from tgnn_transformers.functional.layout import PaddedLayout
    lengths = torch.tensor([5, 130, 1])
    layout = PaddedLayout(lengths, 136, multiple=128)
    assert layout.max_len == 256 and layout.ragged
    x = torch.randn(136, 2, 3)
    padded = layout.pad(x)
    assert padded.shape == (3, 2, 256, 3)
    # a padding row repeats its sequence's last token (finite, and never
    # seen: its key is masked, its query's output dropped)
    assert torch.equal(padded[0, :, 5:], x[4].unsqueeze(1).expand(2, 251, 3))
    assert torch.equal(padded[2, :, 1:], x[135].unsqueeze(1).expand(2, 255,
                                                                    3))
    assert torch.equal(layout.unpad(padded), x)


def test_bucketed_shapes_give_the_same_result(monkeypatch):
    """CUDA's padding (length to the 128 block, batch to a power of two
    with empty sequences) forced on the CPU: the same numbers."""
    from tgnn_transformers.functional.backends import flex
    monkeypatch.setattr(flex, "flex_padding", lambda query: (128, True))
    # 3 sequences -> 4 (one empty), lengths 20, 7, 33 -> 128
    _assert_flex_matches_sparse(_batch("window", {"window": 3}))


def test_recognition_turns_away_near_misses():
    from tgnn_transformers.functional import (
        recognize_token_pattern as recognize_flex_pattern)
    batch = _batch("window", {"window": 1}, lengths=(10, 10))
    edge_index, graph = batch.edge_index, batch.batch
    assert recognize_flex_pattern(edge_index, graph, 20).kind == "window"
    # the same in-degrees, one edge moved (4 -> 5 becomes 8 -> 5)
    moved = edge_index.clone()
    hit = (moved[0] == 4) & (moved[1] == 5)
    moved[0, hit] = 8
    assert recognize_flex_pattern(moved, graph, 20) is None
    # an edge between the two sequences (and one less inside)
    across = edge_index.clone()
    hit = (across[0] == 8) & (across[1] == 9)
    across[0, hit] = 10
    assert recognize_flex_pattern(across, graph, 20) is None
