import itertools
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch, Data

from tgnn_transformers.functional import (complete_edge_index,
                                          recognize_sequence_pattern,
                                          recognize_token_pattern,
                                          sequence_edge_index)
from tgnn_transformers.functional.patterns import window_edge_index
from tgnn_transformers.transforms import (SequenceToGraph, from_padded,
                                          sequence_to_graph, to_padded)


def edge_set(edge_index):
    return set(map(tuple, edge_index.t().tolist()))


def expected_edges(length, rule):
    return {(j, i) for i, j in itertools.product(range(length), repeat=2)
            if rule(i, j)}


@pytest.mark.parametrize("length", [0, 1, 2, 9])
def test_patterns_match_their_definition(length):
    cases = {
        "full": (dict(), lambda i, j: True),
        "causal": (dict(), lambda i, j: j <= i),
        "window": (dict(window=2), lambda i, j: abs(i - j) <= 2),
        "dilated": (dict(window=2, dilation=3),
                    lambda i, j: abs(i - j) <= 6 and (i - j) % 3 == 0),
    }
    for pattern, (kwargs, rule) in cases.items():
        ei = sequence_edge_index(length, pattern, **kwargs)
        assert edge_set(ei) == expected_edges(length, rule), pattern
        assert ei.size(1) == len(edge_set(ei)), "no duplicate edges"


def test_edges_sorted_by_target_then_source():
    for pattern in ["full", "causal", "window", "dilated", "global_random"]:
        ei = sequence_edge_index(11, pattern, window=2, dilation=2)
        key = ei[1] * 11 + ei[0]
        assert torch.equal(key, key.sort().values), pattern


def test_global_random_is_seeded_and_has_global_tokens():
    a = sequence_edge_index(30, "global_random", num_global=2, num_random=3,
                            seed=7)
    b = sequence_edge_index(30, "global_random", num_global=2, num_random=3,
                            seed=7)
    c = sequence_edge_index(30, "global_random", num_global=2, num_random=3,
                            seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    edges = edge_set(a)
    for i in range(30):
        assert (i, i) in edges
        for g in range(2):
            assert (g, i) in edges and (i, g) in edges
    # every token receives at most num_random non-global, non-self edges
    extra = [(j, i) for j, i in edges if j >= 2 and i >= 2 and i != j]
    per_target = torch.bincount(torch.tensor([i for _, i in extra]),
                                minlength=30)
    assert int(per_target.max()) <= 3


def test_transform_keeps_positions_and_attributes():
    data = Data(x=torch.tensor([5, 3, 9]), y=torch.tensor([1]))
    out = SequenceToGraph("causal")(data)
    assert torch.equal(out.position, torch.arange(3))
    assert torch.equal(out.y, data.y) and torch.equal(out.x, data.x)
    assert out.edge_index.tolist() == [[0, 0, 1, 0, 1, 2], [0, 1, 1, 2, 2, 2]]
    assert "edge_index" not in data  # the input is not modified


def test_empty_sequence_gives_empty_graph():
    out = sequence_to_graph(torch.zeros(0, 4), "full")
    assert out.edge_index.shape == (2, 0) and out.num_nodes == 0


def test_batching_and_back_to_padded():
    transform = SequenceToGraph("full")
    seqs = [torch.randn(n, 3) for n in (4, 1, 6)]
    batch = Batch.from_data_list([transform(Data(x=s)) for s in seqs])
    assert torch.equal(batch.edge_index,
                       complete_edge_index(torch.tensor([4, 1, 6])))
    padded, mask = to_padded(batch.x, batch.batch)
    assert padded.shape == (3, 6, 3) and mask.sum() == 11
    torch.testing.assert_close(padded[2], seqs[2])
    assert torch.equal(from_padded(padded, mask), batch.x)
    assert torch.equal(batch.position, torch.cat([torch.arange(n)
                                                  for n in (4, 1, 6)]))


def test_recognizer():
    lengths = torch.tensor([3, 5])
    batch = torch.repeat_interleave(torch.arange(2), lengths)
    full = complete_edge_index(lengths)
    causal = complete_edge_index(lengths, causal=True)
    assert recognize_sequence_pattern(full, batch, 8)[0] == "full"
    assert recognize_sequence_pattern(causal, batch, 8)[0] == "causal"
    shuffled = full[:, torch.randperm(full.size(1))]
    assert recognize_sequence_pattern(shuffled, batch, 8)[0] is None
    # Same edge count as a full graph, other edges.
    other = full.clone()
    other[0, 0] = 1
    assert recognize_sequence_pattern(other, batch, 8)[0] is None
    # A single graph without batch vector.
    assert recognize_sequence_pattern(sequence_edge_index(4), None, 4)[0] \
        == "full"
    # The cache sees in-place edits.
    assert recognize_sequence_pattern(full, batch, 8)[0] == "full"
    full[0, 0] = 1
    assert recognize_sequence_pattern(full, batch, 8)[0] is None


def _pattern_pairs(lengths, kind, window=0, dilation=1):
    """The edges ``(j, i)`` of a token batch, written out from the
    pattern's definition, sequence by sequence."""
    pairs, start = set(), 0
    for n in lengths:
        for i, j in itertools.product(range(n), repeat=2):
            if kind == "full" or (kind == "causal" and j <= i) or (
                    kind == "window" and abs(i - j) <= window * dilation
                    and (i - j) % dilation == 0):
                pairs.add((start + j, start + i))
        start += n
    return pairs


def _reference_pattern(pairs, lengths):
    """The kind recognition must report for the multiset ``pairs``, by
    brute force: full, then causal, then any window (one with an edge
    ``j > i``: a window of self-loops alone is not looked for)."""
    if any(count > 1 for count in pairs.values()):
        return None
    edges = set(pairs)
    for kind in ("full", "causal"):
        if edges == _pattern_pairs(lengths, kind):
            return kind
    longest = max(lengths, default=0)
    for dilation in range(1, longest + 1):
        for window in range(1, longest + 1):
            candidate = _pattern_pairs(lengths, "window", window, dilation)
            if any(j > i for j, i in candidate) and edges == candidate:
                return "window"
    return None


MUTATIONS = ("none", "shuffle", "swap", "move", "duplicate", "drop",
             "across", "reverse")


@settings(max_examples=300)
@given(lengths=st.lists(st.integers(0, 6), min_size=1, max_size=4),
       kind=st.sampled_from(["full", "causal", "window"]),
       window=st.integers(1, 3), dilation=st.integers(1, 2),
       mutation=st.sampled_from(MUTATIONS), seed=st.integers(0, 1000),
       int32=st.booleans())
def test_recognition_matches_the_pattern_definitions(
        lengths, kind, window, dilation, mutation, seed, int32):
    """recognize_token_pattern against the edge multiset compared with
    every pattern's definition: the kind, the edges of what it reports,
    and whether the edges come in the canonical order."""
    sizes = torch.tensor(lengths)
    num_nodes = int(sizes.sum())
    edges = (window_edge_index(sizes, window, dilation) if kind == "window"
             else complete_edge_index(sizes, causal=kind == "causal"))
    gen = torch.Generator().manual_seed(seed)
    num_edges = edges.size(1)
    pick = (lambda: int(torch.randint(0, num_edges, (1, ),
                                      generator=gen)))  # noqa: E731
    if mutation == "shuffle":
        edges = edges[:, torch.randperm(num_edges, generator=gen)]
    elif mutation == "swap" and num_edges > 1:
        a, b = pick(), pick()
        edges[:, [a, b]] = edges[:, [b, a]]
    elif mutation == "move" and num_edges and num_nodes > 1:
        e = pick()
        edges[0, e] = (edges[0, e] + 1) % num_nodes
    elif mutation == "duplicate" and num_edges > 1:
        edges[:, pick()] = edges[:, pick()].clone()
    elif mutation == "drop" and num_edges:
        e = pick()
        edges = torch.cat([edges[:, :e], edges[:, e + 1:]], dim=1)
    elif mutation == "across" and len(lengths) > 1 and num_nodes > 1:
        edges = torch.cat([edges, torch.tensor([[0], [num_nodes - 1]])],
                          dim=1)
    elif mutation == "reverse":
        edges = edges.flip(0)
    edges = edges.to(torch.int32 if int32 else torch.long)
    batch = torch.repeat_interleave(torch.arange(len(lengths)), sizes)
    found = recognize_token_pattern(edges, batch, num_nodes)
    pairs = Counter(map(tuple, edges.t().tolist()))
    expected = _reference_pattern(pairs, lengths)
    if expected is None:
        assert found is None
        return
    assert found is not None and found.kind == expected
    assert set(pairs) == _pattern_pairs(lengths, found.kind, found.window,
                                        found.dilation)
    canonical = sorted(pairs, key=lambda p: (p[1], p[0]))
    assert found.ordered == (list(map(tuple, edges.t().tolist())) ==
                             canonical)
    # the lengths come from the batch vector (trailing empty sequences
    # leave no trace in it)
    assert torch.equal(found.lengths, torch.bincount(batch))


def test_recognition_turns_away_other_graphs_by_their_edge_count():
    """A graph whose edge count is no complete or causal batch's is not
    compared edge by edge with either."""
    lengths = torch.tensor([4, 3])
    batch = torch.repeat_interleave(torch.arange(2), lengths)
    full = complete_edge_index(lengths)
    assert recognize_token_pattern(full, batch, 7).kind == "full"
    assert recognize_token_pattern(full[:, 1:], batch, 7) is None
    # one sequence without a batch vector
    assert recognize_token_pattern(complete_edge_index(
        torch.tensor([5]), causal=True), None, 5).kind == "causal"


@pytest.mark.parametrize("kwargs, match", [
    (dict(pattern="spiral"), "unknown pattern"),
    (dict(pattern="window", window=-1), "window must be >= 0"),
    (dict(pattern="dilated", dilation=0), "dilation must be >= 1"),
])
def test_bad_pattern_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SequenceToGraph(**kwargs)
    with pytest.raises(ValueError, match=match):
        sequence_edge_index(4, **kwargs)


def test_bad_sequence_shape():
    with pytest.raises(ValueError, match="token ids"):
        sequence_to_graph(torch.zeros(2, 3, 4))
