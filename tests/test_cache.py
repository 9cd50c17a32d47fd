"""The per-graph caches (CSR index, token-graph pattern, padded layout,
adjacency conversion) live exactly as long as their graph: a training loop
that makes new batches every step must not accumulate them."""
import gc

import pytest
import torch

from tgnn_transformers import MultiHeadAttentionConv, PNAAttentionConv
from tgnn_transformers.functional import _cache
from tgnn_transformers.functional.patterns import (complete_edge_index,
                                                   sequence_edge_index)


def _graph(kind: str):
    """(x, graph, kwargs) for one forward of a 2-head conv."""
    torch.manual_seed(0)
    if kind == "token batch":  # dense path: pattern + padded layout
        lengths = torch.tensor([3, 5])
        batch = torch.repeat_interleave(torch.arange(2), lengths)
        return (torch.randn(8, 8), complete_edge_index(lengths),
                dict(batch=batch))
    if kind == "window (flex)":
        edge_index = sequence_edge_index(12, "window", window=2)
        return torch.randn(12, 8), edge_index, {}
    edge_index = torch.randint(0, 10, (2, 40))
    if kind == "sorted":  # edges already in CSR order
        edge_index = edge_index[:, torch.argsort(edge_index[1])]
    if kind == "sparse adjacency":
        adj = torch.sparse_coo_tensor(edge_index.flip(0), torch.ones(40),
                                      (10, 10),
                                      check_invariants=False).coalesce()
        return torch.randn(10, 8), adj.to_sparse_csr(), {}
    return torch.randn(10, 8), edge_index, {}


@pytest.mark.parametrize("kind", ["unsorted", "sorted", "token batch",
                                  "window (flex)", "sparse adjacency"])
@pytest.mark.parametrize("conv_type", [MultiHeadAttentionConv,
                                       PNAAttentionConv])
def test_cache_entries_die_with_their_graph(kind, conv_type):
    if kind == "window (flex)" and conv_type is PNAAttentionConv:
        pytest.skip("PNA-Attention has no FlexAttention path")
    options = {} if conv_type is MultiHeadAttentionConv else dict(
        scalers=("identity",))
    if kind == "window (flex)":
        options["backend"] = "flex"
    conv = conv_type(8, 4, heads=2, **options)
    gc.collect()
    before = set(_cache._CACHE)
    x, graph, kwargs = _graph(kind)
    x.requires_grad_()
    if kind == "window (flex)":  # forward only on the CPU
        with torch.no_grad():
            conv(x, graph, **kwargs)
    else:
        conv(x, graph, **kwargs).sum().backward()
    assert set(_cache._CACHE) - before, "nothing was cached"
    del x, graph, kwargs
    gc.collect()
    assert set(_cache._CACHE) == before


def test_cache_keeps_the_most_recently_used_entries(monkeypatch):
    monkeypatch.setattr(_cache, "_CACHE", {})
    monkeypatch.setattr(_cache, "MAX_ENTRIES", 3)
    anchors = [torch.zeros(1) for _ in range(4)]
    builds = []

    def cached(i):
        return _cache.cached_on(anchors[i], "t", lambda: builds.append(i)
                                or i)

    for i in range(3):
        cached(i)
    cached(0)  # a hit: 0 becomes the most recently used
    cached(3)  # evicts 1, the least recently used
    assert [k[0] for k in _cache._CACHE] == [id(anchors[i])
                                             for i in (2, 0, 3)]
    assert cached(1) == 1 and builds == [0, 1, 2, 3, 1]
    assert len(_cache._CACHE) == 3


@pytest.mark.parametrize("kind", ["unsorted", "sorted", "token batch",
                                  "sparse adjacency"])
def test_graphs_made_under_inference_mode(kind):
    """Inference tensors keep no version counter (reading it raises): they
    are cached by identity, and the result is the graph-mode one."""
    conv = MultiHeadAttentionConv(8, 4, heads=2).eval()
    x, graph, kwargs = _graph(kind)
    with torch.no_grad():
        want = conv(x, graph, **kwargs)
    with torch.inference_mode():
        x, graph, kwargs = _graph(kind)
        got = [conv(x, graph, **kwargs) for _ in range(2)]  # miss, then hit
    for out in got:
        torch.testing.assert_close(out, want)
