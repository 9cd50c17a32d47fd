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


@pytest.mark.parametrize("pattern,kwargs", CASES)
def test_flex_matches_sparse_on_token_graphs(pattern, kwargs):
    batch = _batch(pattern, kwargs)
    n = batch.num_nodes
    q, k, v = (torch.randn(n, 2, 8) for _ in range(3))
    with torch.no_grad():
        flex = edge_attention(q, k, v, batch.edge_index, batch=batch.batch,
                              backend="flex").out
        ref = edge_attention(q, k, v, batch.edge_index,
                             backend="sparse").out
    torch.testing.assert_close(flex, ref, atol=1e-5, rtol=1e-5)


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
