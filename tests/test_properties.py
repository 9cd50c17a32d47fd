"""Properties checked by ``hypothesis`` on small random graphs (at most 9
nodes, 24 edges, 4 sequences of at most 6 tokens; single sequences of up
to 32 tokens for the patterns), deterministic in CI
(the ``ci`` profile of ``conftest.py``, selected when ``CI`` is set, sets
``derandomize=True``).

=====================================  =========  ==========================
property                               examples   against
=====================================  =========  ==========================
permutation equivariance (4 layers)    4 x 50     the layer on the permuted
                                                  nodes and shuffled edges
graphs of a batch never interact       4 x 50     each graph run alone
(4 layers; token graphs take the
dense path, random graphs the sparse)
sparse = dense = dense reference       100 + 100  ``dense_reference.py``
(token batches; any graph: sparse =                (masked dense softmax
reference, every reduction)                        and aggregation)
every SequenceToGraph pattern has      120 + 80   the pattern's definition
exactly its edges (full, causal,       + 100      written out per pair
window, dilated, global_window;                   ``(j, i)``; the span tree
global_random's seeding and degree                 of binary_partition by its
rules; binary_partition's spans)                   halving rule
=====================================  =========  ==========================
"""
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch, Data

from dense_reference import (adjacency, dense_aggregate,
                             dense_attention_weights)
from tgnn_transformers import (GINAttentionConv, MultiHeadAttentionConv,
                               PNAAttentionConv)
from tgnn_transformers.functional import REDUCTIONS, edge_attention
from tgnn_transformers.nn import GraphTransformerLayer
from tgnn_transformers.transforms import SequenceToGraph

F_IN, H = 4, 2


def _layers():
    torch.manual_seed(0)
    layers = {
        "mha": MultiHeadAttentionConv(F_IN, 3, heads=H, beta=True),
        "gin-attention": GINAttentionConv(F_IN, 3, heads=H),
        "pna-attention": PNAAttentionConv(F_IN, 3, heads=H, delta=1.0,
                                          aggregators=REDUCTIONS),
        "transformer": GraphTransformerLayer(F_IN, H, "mha"),
    }
    return {name: layer.double().eval() for name, layer in layers.items()}


LAYERS = _layers()


@st.composite
def graphs(draw, max_nodes=9, max_edges=24, min_nodes=0):
    """``(x [N, F_IN] float64, edge_index [2, E])``; duplicates, self-loops
    and nodes without incoming edges all occur."""
    n = draw(st.integers(min_nodes, max_nodes))
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1),
                                    st.integers(0, n - 1)),
                          max_size=max_edges)) if n else []
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, F_IN, generator=gen, dtype=torch.float64)
    edge_index = torch.tensor(pairs, dtype=torch.long).view(-1, 2).t()
    return x, edge_index


def token_batch(lengths, pattern, seed, **kwargs):
    to_graph = SequenceToGraph(pattern, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    return Batch.from_data_list([
        to_graph(Data(x=torch.randn(n, F_IN, generator=gen,
                                    dtype=torch.float64)))
        for n in lengths])


LENGTHS = st.lists(st.integers(0, 6), min_size=1, max_size=4)


# --------------------------------------------------------------------------
# permutation equivariance
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(LAYERS))
@settings(max_examples=50, deadline=None)
@given(graph=graphs(), data=st.data())
def test_permutation_equivariance(name, graph, data):
    x, edge_index = graph
    n, e = x.size(0), edge_index.size(1)
    perm = torch.tensor(data.draw(st.permutations(range(n))),
                        dtype=torch.long)
    edge_perm = torch.tensor(data.draw(st.permutations(range(e))),
                             dtype=torch.long)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(n)
    layer = LAYERS[name]
    out = layer(x, edge_index)
    # node perm[i] of the permuted graph is node i of the original
    out_p = layer(x[perm], inverse[edge_index][:, edge_perm])
    torch.testing.assert_close(out_p, out[perm])


# --------------------------------------------------------------------------
# graphs of a batch never interact
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(LAYERS))
@settings(max_examples=50, deadline=None)
@given(parts=st.lists(graphs(max_nodes=5, max_edges=10), min_size=1,
                      max_size=4),
       tokens=st.booleans(), lengths=LENGTHS,
       pattern=st.sampled_from(["full", "causal"]),
       seed=st.integers(0, 2**16))
def test_graphs_in_a_batch_never_interact(name, parts, tokens, lengths,
                                          pattern, seed):
    layer = LAYERS[name]
    if tokens:  # complete / causal token graphs: the dense path
        batch = token_batch(lengths, pattern, seed)
        singles = batch.to_data_list()
    else:
        singles = [Data(x=x, edge_index=ei) for x, ei in parts]
        batch = Batch.from_data_list(singles)
    out = layer(batch.x, batch.edge_index, batch=batch.batch)
    alone = [layer(g.x, g.edge_index) for g in singles]
    torch.testing.assert_close(out, torch.cat(alone))


# --------------------------------------------------------------------------
# sparse = dense = dense reference
# --------------------------------------------------------------------------

def reference(q, k, v, edge_index, reduce="sum"):
    n = q.size(0)
    adj = adjacency(edge_index, n, k.size(0))
    weights = dense_attention_weights(q, k, adj, q.size(-1)**-0.5)
    return dense_aggregate(v, weights, adj, reduce)


def qkv(n, seed, channels=3):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, H, channels, generator=gen, dtype=torch.float64)
            for _ in range(3)]


@settings(max_examples=100, deadline=None)
@given(lengths=LENGTHS, pattern=st.sampled_from(["full", "causal"]),
       reduce=st.sampled_from(["sum", "mean"]), seed=st.integers(0, 2**16))
def test_sparse_equals_dense_equals_reference_on_token_graphs(
        lengths, pattern, reduce, seed):
    batch = token_batch(lengths, pattern, seed)
    q, k, v = qkv(batch.num_nodes, seed)
    sparse, dense = (edge_attention(q, k, v, batch.edge_index,
                                    batch=batch.batch, reduce=reduce,
                                    backend=b).out
                     for b in ("sparse", "dense"))
    expected = reference(q, k, v, batch.edge_index, reduce)
    torch.testing.assert_close(sparse, expected)
    torch.testing.assert_close(dense, expected)


@settings(max_examples=100, deadline=None)
@given(graph=graphs(min_nodes=1), reduce=st.sampled_from(REDUCTIONS),
       seed=st.integers(0, 2**16))
def test_sparse_equals_reference_on_any_simple_graph(graph, reduce, seed):
    x, edge_index = graph
    # the dense reference has one entry per (i, j): no duplicate edges
    edge_index = torch.unique(edge_index, dim=1) if edge_index.numel() \
        else edge_index
    q, k, v = qkv(x.size(0), seed)
    out = edge_attention(q, k, v, edge_index, reduce=reduce,
                         backend="sparse").out
    torch.testing.assert_close(out, reference(q, k, v, edge_index, reduce))


# --------------------------------------------------------------------------
# sequence -> graph patterns
# --------------------------------------------------------------------------

RULES = {  # (target i, source j, window, dilation, global tokens)
    "full": lambda i, j, w, d, g: True,
    "causal": lambda i, j, w, d, g: j <= i,
    "window": lambda i, j, w, d, g: abs(i - j) <= w,
    "dilated": lambda i, j, w, d, g: abs(i - j) <= w * d and
    (i - j) % d == 0,
    "global_window": lambda i, j, w, d, g: abs(i - j) <= w or i < g or
    j < g,
}


def edge_list(edge_index):
    return [tuple(e) for e in edge_index.t().tolist()]


@settings(max_examples=120, deadline=None)
@given(length=st.integers(0, 12), pattern=st.sampled_from(list(RULES)),
       window=st.integers(0, 4), dilation=st.integers(1, 4),
       num_global=st.integers(0, 3))
def test_patterns_have_exactly_their_edges(length, pattern, window,
                                           dilation, num_global):
    data = SequenceToGraph(pattern, window=window, dilation=dilation,
                           num_global=num_global)(
        Data(x=torch.zeros(length, 1)))
    edges = edge_list(data.edge_index)
    rule = RULES[pattern]
    g = min(num_global, length)
    expected = [(j, i) for i, j in itertools.product(range(length),
                                                     repeat=2)
                if rule(i, j, window, dilation, g)]
    assert edges == expected  # the same set, sorted by target then source


@settings(max_examples=100, deadline=None)
@given(length=st.integers(0, 32), window=st.integers(0, 3))
def test_binary_partition_has_exactly_its_edges(length, window):
    """Tokens ``|i - j| <= window``; ``L - 1`` virtual span nodes after the
    tokens, one per span of the balanced binary split of ``[0, L)`` with at
    least two tokens; each span node has a self-loop and edges to and from
    exactly the tokens of its span."""
    data = SequenceToGraph("binary_partition", window=window)(
        Data(x=torch.zeros(length, 1)))
    num_spans = max(length - 1, 0)
    assert data.num_nodes == length + num_spans
    edges = edge_list(data.edge_index)
    assert edges == sorted(set(edges), key=lambda e: (e[1], e[0]))
    tokens = [(j, i) for j, i in edges if i < length and j < length]
    assert tokens == [(j, i) for i, j in itertools.product(range(length),
                                                           repeat=2)
                      if abs(i - j) <= window]
    spans = set()
    for v in range(length, length + num_spans):
        into = sorted(j for j, i in edges if i == v and j != v)
        out_of = sorted(i for j, i in edges if j == v and i != v)
        assert (v, v) in edges and into == out_of
        assert all(u < length for u in into)  # no span-to-span edges
        assert len(into) >= 2 and into == list(range(into[0],
                                                     into[-1] + 1))
        spans.add((into[0], into[-1] + 1))
    assert len(spans) == num_spans
    if length >= 2:  # the root and, under every span, its halves
        assert (0, length) in spans
        for start, end in spans:
            mid = (start + end) // 2
            for half in ((start, mid), (mid, end)):
                assert half in spans or half[1] - half[0] < 2


@settings(max_examples=80, deadline=None)
@given(length=st.integers(0, 14), num_global=st.integers(0, 3),
       num_random=st.integers(0, 4), seed=st.integers(0, 2**16))
def test_global_random_is_seeded_and_keeps_its_degree_rules(
        length, num_global, num_random, seed):
    kwargs = dict(num_global=num_global, num_random=num_random, seed=seed)
    make = SequenceToGraph("global_random", **kwargs)
    data = make(Data(x=torch.zeros(length, 1)))
    again = make(Data(x=torch.ones(length, 1)))
    assert torch.equal(data.edge_index, again.edge_index)  # a function of
    edges = edge_list(data.edge_index)                     # its arguments
    assert edges == sorted(set(edges), key=lambda e: (e[1], e[0]))
    g = min(num_global, length)
    required = {(i, i) for i in range(length)}
    required |= {(t, i) for t in range(g) for i in range(length)}
    required |= {(i, t) for t in range(g) for i in range(length)}
    assert required <= set(edges)
    extra = [(j, i) for j, i in set(edges) - required]
    per_target = torch.bincount(torch.tensor([i for _, i in extra],
                                             dtype=torch.long),
                                minlength=max(length, 1))
    assert int(per_target.max()) <= num_random
