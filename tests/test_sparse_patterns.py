"""The binary-partition (BP-Transformer) and global + window
(Longformer/BigBird) patterns: edge sets and counts against their
definitions written out here."""
import math

import pytest
import torch
from torch_geometric.data import Batch

from tgnn_transformers import MultiHeadAttentionConv
from tgnn_transformers.functional import (binary_partition_spans,
                                          sequence_edge_index)
from tgnn_transformers.transforms import SequenceToGraph, sequence_to_graph


def edge_set(edge_index):
    return set(map(tuple, edge_index.t().tolist()))


def spans_by_definition(lo, hi):
    """Recursive balanced halving; spans of >= 2 tokens."""
    if hi - lo < 2:
        return []
    mid = (lo + hi) // 2
    return [(lo, hi)] + spans_by_definition(lo, mid) + \
        spans_by_definition(mid, hi)


@pytest.mark.parametrize("length", [0, 1, 2, 3, 7, 8, 13, 64])
@pytest.mark.parametrize("window", [0, 1, 2])
def test_global_window_edges(length, window):
    g = 2
    ei = sequence_edge_index(length, "global_window", window=window,
                             num_global=g)
    expected = {(j, i) for i in range(length) for j in range(length)
                if abs(i - j) <= window or i < g or j < g}
    assert edge_set(ei) == expected and ei.size(1) == len(expected)
    # closed-form count: window edges + global rows/columns - overlap
    gg = min(g, length)
    win = sum(min(length - 1, i + window) - max(0, i - window) + 1
              for i in range(length))
    overlap = sum(1 for i in range(length) for j in range(length)
                  if abs(i - j) <= window and (i < gg or j < gg))
    assert ei.size(1) == win + 2 * gg * length - gg * gg - overlap
    # sorted by target, then source
    key = ei[1] * max(length, 1) + ei[0]
    assert torch.equal(key, key.sort().values)


@pytest.mark.parametrize("length", [1, 2, 3, 5, 8, 13, 100])
@pytest.mark.parametrize("window", [0, 1])
def test_binary_partition_edges(length, window):
    spans = binary_partition_spans(length)
    assert sorted(spans) == sorted(spans_by_definition(0, length))
    assert len(spans) == length - 1
    ei = sequence_edge_index(length, "binary_partition", window=window)
    expected = {(j, i) for i in range(length) for j in range(length)
                if abs(i - j) <= window}
    for k, (a, b) in enumerate(spans):
        node = length + k
        expected |= {(t, node) for t in range(a, b)}
        expected |= {(node, t) for t in range(a, b)}
        expected.add((node, node))
    assert edge_set(ei) == expected and ei.size(1) == len(expected)
    # each token lies in at most ceil(log2 L) spans: O(L log L) edges
    win = sum(min(length - 1, i + window) - max(0, i - window) + 1
              for i in range(length))
    covered = sum(b - a for a, b in spans)
    assert ei.size(1) == win + 2 * covered + len(spans)
    if length > 1:
        assert covered <= length * math.ceil(math.log2(length))


def test_binary_partition_graph_has_virtual_nodes():
    ids = torch.arange(10, 15)
    g = sequence_to_graph(ids, "binary_partition", virtual_token=99)
    assert g.num_nodes == 9 and g.x[5:].eq(99).all()
    assert g.virtual.tolist() == [False] * 5 + [True] * 4
    # spans (0,5),(0,2),(2,5),(3,5): middle-token positions
    assert g.position.tolist() == [0, 1, 2, 3, 4, 2, 0, 3, 3]
    feats = sequence_to_graph(torch.randn(5, 8), "binary_partition")
    assert feats.x.shape == (9, 8) and feats.x[5:].eq(0).all()
    batch = Batch.from_data_list([feats, sequence_to_graph(
        torch.randn(3, 8), "binary_partition")])
    out = MultiHeadAttentionConv(8, 4, heads=2)(batch.x, batch.edge_index)
    assert out.shape == (14, 8) and batch.virtual.sum() == 6
    assert "binary_partition" in repr(SequenceToGraph("binary_partition"))


def test_global_window_has_no_virtual_nodes():
    g = SequenceToGraph("global_window", window=1, num_global=1)(
        sequence_to_graph(torch.randn(6, 4)))
    assert g.num_nodes == 6 and "virtual" not in g
