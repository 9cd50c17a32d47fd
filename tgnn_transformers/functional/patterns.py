"""Edge sets of token graphs: full, causal, window, dilated, global + random,
global + window (Longformer/BigBird) and binary partition (BP-Transformer).

All builders follow PyG's convention: ``edge_index[0]`` is the source ``j``,
``edge_index[1]`` the target ``i`` and messages flow ``j -> i``.  Edges are
returned sorted by target, then source (CSR order over targets), which is the
order the attention kernels like best and the order
:func:`recognize_sequence_pattern` checks for.

**Sizes.**  Pattern arguments are integers (``bool`` refused) and are
clamped to what a sequence can use (a window wider than the sequence is the
whole sequence), so a builder costs what the sequence costs whatever the
argument.  Before allocating, every builder counts the edges it will hold
and refuses (:class:`GraphSizeError`, naming the count and the bytes) a
graph above :func:`edge_limit`: ``2**28`` edges (4 GiB as an int64
``edge_index``) unless the environment variable ``TGNN_MAX_EDGES`` says
otherwise.
"""
from __future__ import annotations

import math
import operator
import os
from typing import Any, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from ._cache import cached_on
from ._checks import batch_is_sorted, check_choice

#: The token-graph patterns of :func:`sequence_edge_index` and
#: :class:`~tgnn_transformers.transforms.SequenceToGraph`.
PATTERNS = ("full", "causal", "window", "dilated", "global_random",
            "global_window", "binary_partition")
#: Patterns that add virtual nodes after the tokens.
VIRTUAL_PATTERNS = ("binary_partition", )


#: The environment variable that sets :func:`edge_limit`.
EDGE_LIMIT_ENV = "TGNN_MAX_EDGES"
#: The default :func:`edge_limit`: 2**28 edges, 4 GiB as an int64
#: ``edge_index`` (its builders briefly hold about three times that).
DEFAULT_EDGE_LIMIT = 2**28


class GraphSizeError(ValueError):
    """A token graph above :func:`edge_limit`, refused before it is
    allocated."""


def edge_limit() -> int:
    """The most edges a token-graph builder allocates: ``TGNN_MAX_EDGES``
    when set (a positive integer), else :data:`DEFAULT_EDGE_LIMIT`."""
    text = os.environ.get(EDGE_LIMIT_ENV)
    if text is None or not text.strip():
        return DEFAULT_EDGE_LIMIT
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"environment variable {EDGE_LIMIT_ENV} must be a "
                         f"positive integer (edges), got {text!r}")
    return value


def _bytes(count: int) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:,} bytes"


def check_edge_count(num_edges: int, what: str) -> None:
    """Raises :class:`GraphSizeError` when ``what`` (a description of the
    graph) would allocate more than :func:`edge_limit` edges."""
    limit = edge_limit()
    if num_edges > limit:
        raise GraphSizeError(
            f"{what} has {num_edges:,} edges ({_bytes(16 * num_edges)} as an "
            f"int64 edge_index), above the limit of {limit:,} edges: use a "
            "sparse pattern (window, global_window, binary_partition) or "
            f"shorter sequences, or raise the limit with {EDGE_LIMIT_ENV}")


def _integer(value: Any, name: str) -> int:
    """``value`` as an ``int``; a ``TypeError`` for a bool or a
    non-integer (``2.5``, ``"3"``)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") \
            from None


def binary_partition_spans(length: int) -> List[Tuple[int, int]]:
    """The spans ``[start, end)`` of a balanced binary split of ``length``
    tokens with at least two tokens each (the internal nodes of the
    partition tree, root first, breadth first): ``length - 1`` spans."""
    spans, queue = [], [(0, int(length))]
    while queue:
        start, end = queue.pop(0)
        if end - start >= 2:
            spans.append((start, end))
            mid = (start + end) // 2
            queue += [(start, mid), (mid, end)]
    return spans


def num_virtual_nodes(length: int, pattern: str) -> int:
    """How many virtual nodes ``pattern`` adds after ``length`` tokens."""
    if pattern == "binary_partition":
        return max(int(length) - 1, 0)
    return 0


def lengths_to_ptr(lengths: Tensor) -> Tensor:
    """``[B]`` segment lengths -> ``[B + 1]`` offsets."""
    ptr = lengths.new_zeros(lengths.numel() + 1)
    torch.cumsum(lengths, 0, out=ptr[1:])
    return ptr


def token_positions(lengths: Tensor, num_tokens: Optional[int] = None
                    ) -> Tuple[Tensor, Tensor, Tensor]:
    """``(ptr, graph, position)`` of a batch of sequences: ``[B + 1]``
    offsets, and each token's sequence and position in it.  ``num_tokens``
    (``lengths.sum()``) saves a device sync when the caller knows it."""
    ptr = lengths_to_ptr(lengths)
    graph = torch.repeat_interleave(
        torch.arange(lengths.numel(), device=lengths.device), lengths)
    num_tokens = int(ptr[-1]) if num_tokens is None else num_tokens
    position = torch.arange(num_tokens, device=lengths.device) - ptr[graph]
    return ptr, graph, position


def complete_edge_index(lengths: Tensor, causal: bool = False) -> Tensor:
    """Edges of a batch of complete (or causal) token graphs.

    Args:
        lengths: ``[B]`` number of tokens of each sequence; the nodes of
            sequence ``b`` are ``ptr[b] .. ptr[b] + lengths[b] - 1``.
        causal: if set, keep only ``j -> i`` with ``j <= i``.

    Returns:
        ``[2, E]`` with ``E = sum(L_b^2)`` (or ``sum(L_b (L_b + 1) / 2)``),
        sorted by target then source.
    """
    lengths = lengths.long()
    device = lengths.device
    squares = int((lengths * (lengths + 1) // 2).sum()) if causal else \
        int((lengths * lengths).sum())
    check_edge_count(squares, f"a batch of {lengths.numel()} "
                     f"{'causal' if causal else 'complete'} token graph(s) "
                     f"of up to {int(lengths.max()) if lengths.numel() else 0}"
                     " tokens")
    # Number of edges into each target node: L_b (full) or position + 1.
    ptr, graph_of_node, position = token_positions(lengths)
    in_degree = position + 1 if causal else lengths[graph_of_node]
    target = torch.repeat_interleave(
        torch.arange(position.numel(), device=device), in_degree)
    # Source offset inside the target's run of edges: 0 .. in_degree - 1.
    edge_ptr = lengths_to_ptr(in_degree)
    offset = torch.arange(target.numel(), device=device) - edge_ptr[target]
    source = ptr[graph_of_node][target] + offset
    return torch.stack([source, target])


def _offsets_edge_index(length: int, offsets: Tensor) -> Tensor:
    """Edges ``i + o -> i`` for every offset ``o`` that stays in range."""
    target = torch.arange(length).repeat_interleave(offsets.numel())
    source = target + offsets.repeat(length)
    keep = (source >= 0) & (source < length)
    return torch.stack([source[keep], target[keep]])


def _sorted_unique(edge_index: Tensor, num_nodes: int) -> Tensor:
    key = torch.unique(edge_index[1] * max(num_nodes, 1) + edge_index[0])
    return torch.stack([key % max(num_nodes, 1), key // max(num_nodes, 1)])


def check_pattern_arguments(pattern: str, *, window: int = 1,
                            dilation: int = 1, num_global: int = 1,
                            num_random: int = 2, seed: int = 0) -> None:
    """Raises ``ValueError`` for an unknown pattern or a bad argument, a
    ``TypeError`` for an argument that is not an integer (a bool
    included)."""
    check_choice("pattern", pattern, PATTERNS)
    window = _integer(window, "window")
    dilation = _integer(dilation, "dilation")
    num_global = _integer(num_global, "num_global")
    num_random = _integer(num_random, "num_random")
    _integer(seed, "seed")
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    if num_global < 0 or num_random < 0:
        raise ValueError("num_global and num_random must be >= 0, got "
                         f"{num_global} and {num_random}")


def pattern_edge_count(length: int, pattern: str, *, window: int = 1,
                       dilation: int = 1, num_global: int = 1,
                       num_random: int = 2) -> int:
    """How many edges :func:`sequence_edge_index` allocates for one
    sequence (before duplicates are merged), with the arguments already
    clamped to ``length``."""
    L = length
    if pattern == "full":
        return L * L
    if pattern == "causal":
        return L * (L + 1) // 2
    band = L * (2 * window + 1)
    if pattern in ("window", "dilated"):
        return band
    if pattern == "global_window":
        return band + 2 * num_global * L
    if pattern == "binary_partition":
        depth = max(1, math.ceil(math.log2(max(L, 2))))
        return band + (2 * depth + 1) * L
    return L + 2 * num_global * L + L * num_random  # global_random


def clamp_pattern_arguments(length: int, pattern: str, *, window: int = 1,
                            dilation: int = 1, num_global: int = 1,
                            num_random: int = 2) -> dict:
    """The arguments cut to what a sequence of ``length`` tokens can use:
    a (dilated) window no wider than the sequence, at most ``length``
    global tokens and ``length`` random draws per token (the edges are the
    same, the cost that of the sequence)."""
    reach = max(length - 1, 0)
    step = dilation if pattern == "dilated" else 1
    return dict(window=min(window, reach // step),
                dilation=min(dilation, max(reach, 1)),
                num_global=min(num_global, length),
                num_random=min(num_random, length))


def sequence_edge_index(length: int, pattern: str = "full", *,
                        window: int = 1, dilation: int = 1,
                        num_global: int = 1, num_random: int = 2,
                        seed: int = 0) -> Tensor:
    """Edges of one token graph of ``length`` tokens.

    Args:
        length: number of tokens ``L`` (0 gives an empty ``[2, 0]`` tensor).
        pattern: ``"full"`` (every ``j -> i``), ``"causal"`` (``j <= i``),
            ``"window"`` (``|i - j| <= window``), ``"dilated"``
            (``i - j = k * dilation`` with ``|k| <= window``) or
            ``"global_random"`` (self-loops; the first ``num_global`` tokens
            attend to and are attended by every token; each token receives
            ``num_random`` further edges from uniformly drawn sources),
            ``"global_window"`` (Longformer/BigBird: ``|i - j| <= window``
            plus the first ``num_global`` tokens, e.g. ``[CLS]``, attending
            to and attended by every token) or ``"binary_partition"``
            (BP-Transformer: ``L - 1`` virtual span nodes ``L .. 2L - 2``
            over a balanced binary split (:func:`binary_partition_spans`);
            tokens ``|i - j| <= window``, every token to and from each span
            covering it, span self-loops: O(L log L) edges).
        window: half width of the ``window`` and ``dilated`` patterns.
        dilation: stride of the ``dilated`` pattern.
        num_global: number of global tokens of ``global_random``.
        num_random: random incoming edges per token of ``global_random``
            (drawn with replacement, duplicates merged; at most ``L``
            draws).
        seed: seed of the random edges (the result is a function of its
            arguments).

    The arguments are integers, clamped to what ``length`` tokens can use
    (:func:`clamp_pattern_arguments`); a graph of more than
    :func:`edge_limit` edges raises :class:`GraphSizeError` before it is
    allocated.
    """
    check_pattern_arguments(pattern, window=window, dilation=dilation,
                            num_global=num_global, num_random=num_random,
                            seed=seed)
    length = _integer(length, "length")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    clamped = clamp_pattern_arguments(
        length, pattern, window=_integer(window, "window"),
        dilation=_integer(dilation, "dilation"),
        num_global=_integer(num_global, "num_global"),
        num_random=_integer(num_random, "num_random"))
    window, dilation = clamped["window"], clamped["dilation"]
    num_global, num_random = clamped["num_global"], clamped["num_random"]
    check_edge_count(pattern_edge_count(length, pattern, **clamped),
                     f"the {pattern} pattern on a sequence of {length:,} "
                     "tokens")
    seed = _integer(seed, "seed")
    if pattern in ("full", "causal"):
        return complete_edge_index(torch.tensor([length]),
                                   causal=pattern == "causal")
    if pattern in ("window", "dilated"):
        step = dilation if pattern == "dilated" else 1
        offsets = torch.arange(-window, window + 1) * step
        return _offsets_edge_index(length, offsets)
    tokens = torch.arange(length)
    if pattern == "global_window":
        g = min(num_global, length)
        glob = torch.arange(g)
        parts = [_offsets_edge_index(length, torch.arange(-window,
                                                          window + 1)),
                 torch.stack([glob.repeat(length),
                              tokens.repeat_interleave(g)]),
                 torch.stack([tokens.repeat(g),
                              glob.repeat_interleave(length)])]
        return _sorted_unique(torch.cat(parts, dim=1), length)
    if pattern == "binary_partition":
        parts = [_offsets_edge_index(length, torch.arange(-window,
                                                          window + 1))]
        for k, (start, end) in enumerate(binary_partition_spans(length)):
            covered = torch.arange(start, end)
            span = torch.full_like(covered, length + k)
            parts += [torch.stack([covered, span]),
                      torch.stack([span, covered]),
                      torch.tensor([[length + k], [length + k]])]
        total = length + num_virtual_nodes(length, pattern)
        return _sorted_unique(torch.cat(parts, dim=1), total)
    # global_random
    tokens = torch.arange(length)
    g = min(num_global, length)
    parts = [torch.stack([tokens, tokens])]
    glob = torch.arange(g)
    parts.append(torch.stack([glob.repeat(length),
                              tokens.repeat_interleave(g)]))  # global -> all
    parts.append(torch.stack([tokens.repeat(g),
                              glob.repeat_interleave(length)]))  # all -> global
    if num_random > 0 and length > 0:
        gen = torch.Generator().manual_seed(seed)
        source = torch.randint(0, length, (length * num_random, ),
                               generator=gen)
        parts.append(torch.stack([source,
                                  tokens.repeat_interleave(num_random)]))
    return _sorted_unique(torch.cat(parts, dim=1), length)


# --------------------------------------------------------------------------
# Recognising token graphs (for the dense and FlexAttention backends)
# --------------------------------------------------------------------------

class TokenPattern(NamedTuple):
    """A batch of token graphs of one known pattern, as
    :func:`recognize_token_pattern` finds it."""
    kind: str
    """``"full"``, ``"causal"`` or ``"window"``"""
    lengths: Tensor
    """``[B]`` tokens of each sequence"""
    window: int = 0
    """half width of a window (in steps of ``dilation``)"""
    dilation: int = 1
    ordered: bool = True
    """the edges are in the canonical order the builders give (sorted by
    target, then source)"""


def graph_lengths(batch: Optional[Tensor], num_nodes: int,
                  device: torch.device) -> Tensor:
    """``[B]`` nodes of each graph of a batch vector (one graph of
    ``num_nodes`` nodes without one)."""
    if batch is None:
        return torch.tensor([num_nodes], device=device)
    if batch.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    return torch.bincount(batch.long())


def window_edge_index(lengths: Tensor, window: int,
                      dilation: int = 1) -> Tensor:
    """Edges ``i + k * dilation -> i``, ``|k| <= window``, in range, of a
    batch of sequences (node ids offset per sequence), sorted by target
    then source."""
    longest = int(lengths.max()) if lengths.numel() else 0
    window = min(int(window), max(longest - 1, 0) // max(int(dilation), 1))
    check_edge_count(int(lengths.sum()) * (2 * window + 1),
                     f"a batch of {lengths.numel()} window token graph(s) "
                     f"of up to {longest} tokens")
    ptr, graph, position = token_positions(lengths)
    target = torch.arange(position.numel(), device=lengths.device)
    offsets = torch.arange(-window, window + 1,
                           device=lengths.device) * dilation
    src_pos = position.view(-1, 1) + offsets.view(1, -1)
    keep = (src_pos >= 0) & (src_pos < lengths[graph].view(-1, 1))
    source = (src_pos + ptr[graph].view(-1, 1))[keep]
    target = target.view(-1, 1).expand_as(src_pos)[keep]
    return torch.stack([source, target])


def pattern_edge_index(pattern: TokenPattern) -> Tensor:
    """The canonical edges of a recognised pattern."""
    if pattern.kind == "window":
        return window_edge_index(pattern.lengths, pattern.window,
                                 pattern.dilation)
    return complete_edge_index(pattern.lengths,
                               causal=pattern.kind == "causal")


def _pattern_degree(pattern: TokenPattern, num_nodes: int) -> Tensor:
    """In-degree of every token under ``pattern``."""
    lengths = pattern.lengths.long()
    _, graph, position = token_positions(lengths, num_nodes)
    length = lengths[graph]
    if pattern.kind == "full":
        return length
    if pattern.kind == "causal":
        return position + 1
    w, d = pattern.window, pattern.dilation
    after = torch.clamp((length - 1 - position) // d, max=w)
    before = torch.clamp(position // d, max=w)
    return before + after + 1


def _sorted_keys(edge_index: Tensor, num_nodes: int) -> Tensor:
    return torch.sort(edge_index[1].long() * max(num_nodes, 1) +
                      edge_index[0].long()).values


def _in_runs(edge_index: Tensor, degree: Tensor, first_source: Tensor
             ) -> bool:
    """Whether ``edge_index`` is, in this order, for each target ``i =
    0, 1, ...`` a run of ``degree[i] >= 1`` edges from the sources
    ``first_source[i], first_source[i] + 1, ...`` (the canonical order of
    complete and causal graphs; ``degree.sum() == E`` is the caller's).

    Checked without building the expected edges: the targets never
    decrease and each run begins and ends on its own target (so holds only
    it), each run begins on its first source and steps by one.  Three
    integer passes over the edges; a miss usually shows in the first
    ``O(N)`` gathers."""
    source, target = edge_index[0], edge_index[1]
    start = lengths_to_ptr(degree)
    first, last = start[:-1], start[1:] - 1
    node = torch.arange(degree.numel(), device=degree.device,
                        dtype=target.dtype)
    if not (torch.equal(target[first], node) and torch.equal(
            target[last], node) and torch.equal(
                source[first], first_source.to(source.dtype))):
        return False
    if target.numel() < 2:
        return True
    if not bool((target[1:] >= target[:-1]).all()):
        return False
    step = source[1:] - source[:-1]
    step[first[1:] - 1] = 1  # where a new run begins, any step will do
    return bool((step == 1).all())


def _window_candidate(edge_index: Tensor, lengths: Tensor,
                      longest: int) -> Optional[TokenPattern]:
    delta = (edge_index[0] - edge_index[1]).long()
    positive = delta[delta > 0]
    if not positive.numel():
        return None
    dilation = int(positive.min())
    # no wider than the longest sequence: the window's edge list is built
    # for the comparison and must stay within the batch's size
    window = min(int(delta.abs().max()) // dilation,
                 (longest - 1) // dilation)
    return TokenPattern("window", lengths, window, dilation)


def _recognize(edge_index: Tensor, batch: Optional[Tensor],
               num_nodes: int) -> Optional[TokenPattern]:
    if batch is not None and not batch_is_sorted(batch):
        return None  # sequences must be contiguous blocks of nodes
    lengths = graph_lengths(batch, num_nodes, edge_index.device)
    sizes = lengths.tolist()
    num_edges = edge_index.size(1)
    in_degree = None

    def match(candidate: TokenPattern, degree: Tensor
              ) -> Optional[TokenPattern]:
        # equal in-degrees first (O(E)), then the edges themselves: in the
        # canonical order, or in another (equal sorted keys, which also
        # rule out duplicate edges, which would weigh differently)
        nonlocal in_degree
        if in_degree is None:
            in_degree = torch.bincount(edge_index[1].long(),
                                       minlength=num_nodes)
        if not torch.equal(degree, in_degree):
            return None
        expected = pattern_edge_index(candidate).to(edge_index.device)
        if torch.equal(expected, edge_index.to(expected.dtype)):
            return candidate
        if torch.equal(_sorted_keys(expected, num_nodes),
                       _sorted_keys(edge_index, num_nodes)):
            return candidate._replace(ordered=False)
        return None

    # Complete and causal batches: the edge count alone turns most other
    # graphs away, and the canonical order is checked without building it.
    for kind, count in (("full", sum(n * n for n in sizes)),
                        ("causal", sum(n * (n + 1) // 2 for n in sizes))):
        if count != num_edges:
            continue
        ptr, graph, position = token_positions(lengths.long(), num_nodes)
        degree = lengths.long()[graph] if kind == "full" else position + 1
        if _in_runs(edge_index, degree, ptr[graph]):
            return TokenPattern(kind, lengths)
        found = match(TokenPattern(kind, lengths), degree)
        if found is not None:
            return found
    if num_edges == 0:
        return None
    candidate = _window_candidate(edge_index, lengths, max(sizes, default=0))
    if candidate is None:
        return None
    degree = _pattern_degree(candidate, num_nodes)
    if int(degree.sum()) != num_edges:
        return None
    return match(candidate, degree)


def recognize_token_pattern(edge_index: Tensor, batch: Optional[Tensor],
                            num_nodes: int) -> Optional[TokenPattern]:
    """The :class:`TokenPattern` of a batch of token graphs -- complete,
    causal or a (dilated) window, ragged lengths allowed, edges in any
    order -- or ``None`` for any other graph.

    Each target's sources must be exactly those of the pattern inside its
    own sequence (``batch`` gives the sequences; without it the graph is one
    sequence), so a recognised graph gives the same attention as its edges.
    The check costs O(E) integer work and is cached per ``edge_index``
    tensor (keyed on identity and in-place version), so the layers of one
    model and the epochs of a training run pay it once.  An edit the
    version counter does not see (through a NumPy view or ``.data``) needs
    :func:`~tgnn_transformers.functional.clear_graph_cache` afterwards.
    """
    return cached_on(edge_index, "token_pattern",
                     lambda: _recognize(edge_index, batch, num_nodes), batch,
                     num_nodes)


def recognize_sequence_pattern(
        edge_index: Tensor, batch: Optional[Tensor],
        num_nodes: int) -> Tuple[Optional[str], Optional[Tensor]]:
    """Tells whether ``edge_index`` is a batch of complete or causal token
    graphs in canonical order (as :func:`complete_edge_index` builds them).

    Returns ``(pattern, lengths)`` with ``pattern`` ``"full"``, ``"causal"``
    or ``None`` (:func:`recognize_token_pattern`, cached likewise).
    """
    pattern = recognize_token_pattern(edge_index, batch, num_nodes)
    if pattern is None or pattern.kind == "window" or not pattern.ordered:
        return None, None
    return pattern.kind, pattern.lengths
