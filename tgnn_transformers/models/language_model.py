r"""A GPT as message passing on the causal graphs of its tokens.

A decoder-only language model reads ``B`` sequences of ``T`` token ids.
Here every sequence is a graph: one node per token, and the edges
:math:`j \to i` of its attention pattern -- the causal graph
(:math:`j \le i`), or a causal window (:math:`i - w \le j \le i`) or a
dilated one (:math:`j = i - k\delta`, :math:`0 \le k \le w`).  The ``B``
graphs form one PyG batch of ``B * T`` nodes, and a pre-norm
:class:`~tgnn_transformers.nn.GraphTransformer` of any of the package's
attention convs runs on it:

.. math::
    \mathbf{h}^{(0)}_i = \mathbf{E}_{x_i} + \mathbf{P}_{p_i}, \qquad
    \mathbf{h}^{(l)} = \mathrm{Block}_l(\mathbf{h}^{(l-1)}, \mathcal{E}),
    \qquad
    \mathrm{logits}_i = \mathbf{E}\, \mathrm{LN}(\mathbf{h}^{(L)}_i)

(:math:`\mathbf{E}` the token embedding, tied to the output head;
:math:`\mathbf{P}` the learned, sinusoidal or no absolute position
encoding; with RoPE the positions rotate every layer's queries and keys
instead).  The loss is the mean next-token cross-entropy
:math:`-\frac{1}{BT}\sum_{b,t} \log \mathrm{softmax}(\mathrm{logits}_{b,t})
_{y_{b,t}}` over the positions whose target is not ``-1``.

On the full causal graph in canonical order the attention convs' automatic
backend recognises the batch and runs
``scaled_dot_product_attention(is_causal=True)`` on the padded layout, so
this model computes nanoGPT's GPT (same architecture: pre-norm blocks,
GELU feed-forward of width 4d, no biases with ``bias=False``, tied head,
GPT-2's initialisation) with the attention written as a graph operation.
The graph tensors (``edge_index``, the ``batch`` vector, positions) are
built once per ``(B, T, device)`` and reused, so the per-graph caches of the
kernels (pattern recognition, padded layout, CSR index) are built once too.

Generation (:meth:`CausalLanguageModel.generate`) is message passing into
one new node per step: with a :class:`~tgnn_transformers.nn.KeyValueCache`
per layer, the token just drawn is the only node whose features are
computed, and its attention reads the cached keys and values of the
tokens before it along the pattern's edges into it.  The context follows
one rule with and without the cache (:func:`generation_context`): a prompt
longer than the block keeps its last ``block_size`` tokens (GPT's crop),
and a context that outgrows the block keeps its last
``block_size // 2`` tokens, which are encoded again at positions
``0 .. block_size // 2 - 1``.  (GPT crops the context to its last
``block_size`` tokens before every step; a cache cannot follow that rule,
since every cached key and value has seen the token that is dropped.)
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.dense.linear import Linear as PyGLinear

from ..functional._checks import check_choice
from ..functional.patterns import complete_edge_index, sequence_edge_index
from ..nn import GraphTransformer, KeyValueCache
from ..nn.graph_transformer import ATTENTION_CONVS
from ..nn.pna_attention_conv import average_log_degree, degree_histogram
from ..nn.positional import (LearnedPositionalEncoding,
                             SinusoidalPositionalEncoding)

#: Attention graphs of the language model, each a causal subgraph of the
#: complete causal graph: ``"causal"`` (every :math:`j \le i`),
#: ``"causal-window"`` (:math:`i - w \le j \le i`) and ``"causal-dilated"``
#: (:math:`j = i - k\delta`, :math:`0 \le k \le w`).
LM_PATTERNS = ("causal", "causal-window", "causal-dilated")
#: Position encodings: added learned (GPT-2, nanoGPT) or sinusoidal
#: encodings, rotary embeddings inside every conv, or none.
LM_POSITIONS = ("learned", "sinusoidal", "rope", None)
#: ``"gpt2"``: every linear map and embedding drawn from N(0, 0.02²), the
#: residual projections (attention output and FFN output) from
#: N(0, 0.02² / (2L)), biases 0 (GPT-2's and nanoGPT's); ``"default"``:
#: each layer's own ``reset_parameters``.
LM_INITS = ("gpt2", "default")
#: The task's ``--pattern`` names the language model takes (the text
#: task's names of the same graphs, cut to their causal half), and the
#: model's pattern and dilation for each (``dilated`` steps by 2, as in the
#: text task).
TASK_PATTERNS: Dict[str, Tuple[str, int]] = {
    "causal": ("causal", 1),
    "window": ("causal-window", 1),
    "dilated": ("causal-dilated", 2),
}
#: The model's head options on the ``lm`` task (the registry's names).
HEAD_OPTIONS = ("block_size", "pos", "pattern", "window", "ffn_multiplier",
                "norm", "bias")
#: Most (B, T, device) graphs kept per model, least recently used dropped.
#: Training and evaluation use one shape each, generation the full block
#: once the context is cropped; the growing contexts before that are used
#: once each, and keeping all of them would hold O(block_size^3) edges.
GRAPH_CACHE_SIZE = 8


def generation_context(length: int, start: int, block_size: int) -> int:
    r"""Where the context of the next generation step starts, given the
    ``length`` tokens so far and the current start ``start``: unchanged
    while :math:`\text{length} - \text{start} \le` ``block_size``, else
    :math:`\text{length} - \lfloor \text{block\_size} / 2 \rfloor`
    (at least one token kept).  A prompt is first cropped to its last
    ``block_size`` tokens (``start = max(0, length - block_size)``).

    Halving the context when it is full lets a key/value cache be rebuilt
    once per ``block_size // 2`` tokens instead of once per token, at the
    price of a context of ``block_size / 2 .. block_size`` tokens instead
    of GPT's ``block_size``; both of :meth:`CausalLanguageModel.generate`'s
    paths follow this rule, so they give the same tokens."""
    if length - start <= block_size:
        return start
    return length - max(1, block_size // 2)


def task_pattern(pattern: str, window: int
                 ) -> Tuple[str, Optional[int], int]:
    """``(pattern, window, dilation)`` of the model for the task's
    ``--pattern`` and ``--window`` (:data:`TASK_PATTERNS`); a non-causal
    pattern, or a windowed one without a window, raises a ``ValueError``
    that says why."""
    if pattern not in TASK_PATTERNS:
        why = (" (full attention would show every token the ones it is "
               "asked to predict)" if pattern == "full" else "")
        raise ValueError(f"the lm task needs a causal attention graph: "
                         f"pattern must be causal, window or dilated (their"
                         f" causal halves), got {pattern!r}{why}")
    kind, dilation = TASK_PATTERNS[pattern]
    if kind == "causal":
        return kind, None, dilation
    if isinstance(window, bool) or not isinstance(window, int) or \
            window < 1:
        raise ValueError(f"pattern {pattern!r} on the lm task needs window "
                         f">= 1 (the tokens back each token sees), got "
                         f"{window!r}")
    return kind, window, dilation


def check_head_options(head: Dict[str, Any]
                       ) -> Tuple[str, Optional[int], int]:
    """The ``lm`` task's head options (``pattern``, ``window``, ``pos``,
    ``norm`` of a configuration) checked for what a causal language model
    can be; returns the model's ``(pattern, window, dilation)``."""
    pattern = task_pattern(head["pattern"], head["window"])
    if head["pos"] not in LM_POSITIONS:
        raise ValueError(f"the lm task takes pos learned, sinusoidal, rope "
                         f"or none, got {head['pos']!r}")
    if head["norm"] not in ("layer", "rms"):
        raise ValueError(f"the lm task takes norm layer or rms (a batch "
                         f"norm would mix the statistics of later tokens "
                         f"into earlier ones), got {head['norm']!r}")
    return pattern


class TokenGraph(NamedTuple):
    """A batch of ``B`` token graphs of ``T`` nodes each."""
    edge_index: Tensor
    """``[2, E]`` edges ``j -> i``, sorted by target then source."""
    batch: Tensor
    """``[B * T]`` sequence of every node."""
    position: Tensor
    """``[B * T]`` position of every node in its sequence."""


def causal_edge_index(length: int, pattern: str = "causal", *,
                      window: Optional[int] = None,
                      dilation: int = 1) -> Tensor:
    r"""Edges of one causal token graph of ``length`` tokens, sorted by
    target then source: ``"causal"`` :math:`\{j \to i : j \le i\}`,
    ``"causal-window"`` :math:`\{j \to i : i - w \le j \le i\}`,
    ``"causal-dilated"`` :math:`\{i - k\delta \to i : 0 \le k \le w,
    i - k\delta \ge 0\}` (:math:`w` = ``window``, :math:`\delta` =
    ``dilation``)."""
    check_choice("pattern", pattern, LM_PATTERNS)
    if pattern == "causal":
        return complete_edge_index(torch.tensor([int(length)]), causal=True)
    _check_window(pattern, window, dilation)
    # The symmetric pattern, cut to its causal half; cutting keeps the
    # builder's target-then-source order.
    edges = sequence_edge_index(
        length, "window" if pattern == "causal-window" else "dilated",
        window=window, dilation=dilation)
    return edges[:, edges[0] <= edges[1]]


def causal_token_graph(batch_size: int, length: int,
                       pattern: str = "causal", *,
                       window: Optional[int] = None, dilation: int = 1,
                       device: Optional[torch.device] = None) -> TokenGraph:
    """``batch_size`` copies of :func:`causal_edge_index` as one batch
    (sequence ``b`` holds nodes ``b * length`` to ``(b + 1) * length - 1``), with
    its ``batch`` vector and node positions.  The full causal batch is
    exactly :func:`complete_edge_index` of the lengths, the canonical order
    the dense attention path recognises."""
    lengths = torch.full((batch_size, ), length, dtype=torch.long)
    if pattern == "causal":
        edge_index = complete_edge_index(lengths, causal=True)
    else:
        one = causal_edge_index(length, pattern, window=window,
                                dilation=dilation)
        offsets = torch.arange(batch_size).repeat_interleave(one.size(1))
        edge_index = one.repeat(1, batch_size) + offsets * length
    batch = torch.arange(batch_size).repeat_interleave(length)
    position = torch.arange(length).repeat(batch_size)
    return TokenGraph(edge_index.to(device), batch.to(device),
                      position.to(device))


def _check_window(pattern: str, window: Optional[int],
                  dilation: int) -> None:
    if pattern == "causal":
        return
    if isinstance(window, bool) or not isinstance(window, int) or \
            window < 1:
        raise ValueError(f"pattern={pattern!r} needs window, an integer >= "
                         f"1 (tokens back each token sees), got {window!r}")
    if isinstance(dilation, bool) or not isinstance(dilation, int) or \
            dilation < 1:
        raise ValueError(f"dilation must be an integer >= 1, got "
                         f"{dilation!r}")


def _check_ids(name: str, ids: Tensor, vocab_size: int) -> None:
    """``ids`` must be a ``[B, T]`` integer tensor with values in
    ``[0, vocab_size)``."""
    if not isinstance(ids, Tensor):
        raise TypeError(f"{name} must be a [B, T] tensor of token ids, got "
                        f"{type(ids).__name__}")
    if ids.dim() != 2 or ids.is_floating_point() or ids.is_complex() or \
            ids.dtype == torch.bool:
        raise ValueError(f"{name} must be a [B, T] integer tensor of token "
                         f"ids, got {ids.dtype} of shape {list(ids.shape)}")
    if ids.numel() == 0:
        raise ValueError(f"{name} must hold at least one token, got shape "
                         f"{list(ids.shape)}")
    low, high = (int(v) for v in torch.stack(torch.aminmax(ids)).tolist())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"{name} holds the token id {bad}, outside the "
                         f"vocabulary [0, {vocab_size})")


class CausalLanguageModel(torch.nn.Module):
    r"""A decoder-only language model whose attention is message passing
    on causal token graphs (see the module docstring for the formulas).

    Args:
        vocab_size: number of token ids :math:`V`.
        block_size: longest context :math:`T_{\max}` (learned positions
            exist for ``0 .. block_size - 1``; longer prompts are cropped
            by :meth:`generate`).
        attention: ``"mha"``, ``"gin-attention"`` or ``"pna-attention"``,
            built in the transformer form (``out_proj=True,
            root_weight=False``).
        hidden: model width :math:`d`.
        heads: attention heads (must divide ``hidden``).
        num_layers: transformer blocks :math:`L`.
        pos: ``"learned"``, ``"sinusoidal"``, ``"rope"`` or ``None``.
        pattern: ``"causal"``, ``"causal-window"`` or ``"causal-dilated"``
            (:data:`LM_PATTERNS`); the latter two need ``window``.
        window, dilation: the windowed patterns' :math:`w` and
            :math:`\delta`.
        dropout: dropout on the embeddings, both residual branches and
            inside the feed-forward network.
        attention_dropout: dropout on the attention weights.
        bias: biases in every linear map and LayerNorm (nanoGPT's CPU run:
            ``False``).
        ffn_multiplier: feed-forward width relative to ``hidden`` (4).
        activation: feed-forward activation (``"gelu"``, as GPT-2).
        norm: ``"layer"`` or ``"rms"``.
        init: ``"gpt2"`` (:data:`LM_INITS`) or ``"default"``.  ``"gpt2"``
            draws every ``Linear`` (torch's and PyG's) and embedding from
            :math:`\mathcal{N}(0, 0.02^2)` and the residual projections from
            :math:`\mathcal{N}(0, 0.02^2 / 2L)`; the graph-aware convs' own
            per-head MLPs, mixers, :math:`\epsilon` and sharpening keep
            their layers' initialisation.
        attention_kwargs: further options of the attention conv (e.g.
            ``mlp_multiplier`` for GIN-Attention, ``aggregators`` for
            PNA-Attention).  PNA-Attention's degree scalers default to the
            mean log-degree of the training graph (``pattern`` at
            ``block_size`` tokens) when neither ``deg`` nor ``delta`` is
            given.

    ``forward(idx, targets=None)`` returns ``(logits, loss)``;
    :meth:`generate` samples continuations.
    """

    def __init__(self, vocab_size: int, block_size: int = 64, *,
                 attention: str = "mha", hidden: int = 128, heads: int = 4,
                 num_layers: int = 4, pos: Optional[str] = "learned",
                 pattern: str = "causal", window: Optional[int] = None,
                 dilation: int = 1, dropout: float = 0.0,
                 attention_dropout: float = 0.0, bias: bool = False,
                 ffn_multiplier: float = 4.0, activation: str = "gelu",
                 norm: str = "layer", init: str = "gpt2",
                 attention_kwargs: Optional[Dict[str, Any]] = None):
        super().__init__()
        for name, value in (("vocab_size", vocab_size),
                            ("block_size", block_size), ("hidden", hidden),
                            ("heads", heads), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or \
                    value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got "
                                 f"{value!r}")
        if hidden % heads:
            raise ValueError(f"heads={heads} must divide hidden={hidden}")
        check_choice("attention", attention, ATTENTION_CONVS)
        check_choice("pos", pos, LM_POSITIONS)
        check_choice("pattern", pattern, LM_PATTERNS)
        check_choice("norm", norm, ("layer", "rms"))
        check_choice("init", init, LM_INITS)
        _check_window(pattern, window, dilation)
        self.vocab_size, self.block_size = vocab_size, block_size
        self.attention, self.pos_kind = attention, pos
        self.pattern, self.window, self.dilation = pattern, window, dilation
        self.hidden, self.num_layers = hidden, num_layers
        self.dropout = dropout

        kwargs = dict(attention_kwargs or {})
        if pos == "rope":
            if kwargs.get("rope") is False:
                raise ValueError("pos='rope' rotates the queries and keys; "
                                 "attention_kwargs has rope=False")
            kwargs["rope"] = True
        if attention == "pna-attention" and "deg" not in kwargs and \
                "delta" not in kwargs:
            kwargs["delta"] = self.training_graph_delta()
        self.attention_kwargs = kwargs

        self.token_embedding = torch.nn.Embedding(vocab_size, hidden)
        if pos == "learned":
            self.position = LearnedPositionalEncoding(hidden, block_size)
        elif pos == "sinusoidal":
            self.position = SinusoidalPositionalEncoding(hidden)
        else:
            self.position = None
        self.encoder = GraphTransformer(
            hidden, heads, num_layers, attention,
            attention_kwargs=kwargs, ffn_multiplier=ffn_multiplier,
            activation=activation, norm=norm, norm_first=True,
            dropout=dropout, attention_dropout=attention_dropout, bias=bias,
            final_norm=norm)
        self.head = torch.nn.Linear(hidden, vocab_size, bias=False)
        # Weight tying (Press & Wolf, 2017), as GPT-2: one [V, d] matrix
        # embeds the tokens and scores them.
        self.head.weight = self.token_embedding.weight
        self.init = init
        self.reset_parameters()
        # (B, T, device) -> TokenGraph, least recently used first; plain
        # attribute, not buffers: graphs are derived, never saved.
        self._graphs: "OrderedDict[tuple, TokenGraph]" = OrderedDict()
        # (sources, ptr) of the pattern on block_size tokens, by target.
        self._pattern_csr: Optional[Tuple[Tensor, List[int]]] = None

    @classmethod
    def from_options(cls, options, vocab_size: int
                     ) -> "CausalLanguageModel":
        """The model of the ``lm`` task: registry options (a resolved
        :class:`~tgnn_transformers.models.ModelOptions` of ``mha``,
        ``gin-attention`` or ``pna-attention``, with the head options of
        :data:`HEAD_OPTIONS`) over ``vocab_size`` tokens.  ``hidden``,
        ``heads``, ``num_layers``, ``dropout``, ``attention_dropout`` and
        the variant's options apply (``root_weight`` and ``out_heads`` do
        not: the blocks use the transformer form); ``pattern`` is one of
        :data:`TASK_PATTERNS`."""
        spec, head = options.spec, options.head
        spec.check_block_attention("lm", options)
        pattern, window, dilation = check_head_options(head)
        kwargs = options.variant()
        if kwargs.get("delta") is None:  # PNA: the training graph's
            kwargs.pop("delta", None)
        return cls(vocab_size, head["block_size"], attention=spec.name,
                   hidden=options["hidden"], heads=options["heads"],
                   num_layers=options["num_layers"], pos=head["pos"],
                   pattern=pattern, window=window, dilation=dilation,
                   dropout=options["dropout"],
                   attention_dropout=options["attention_dropout"],
                   bias=head["bias"], ffn_multiplier=head["ffn_multiplier"],
                   norm=head["norm"], attention_kwargs=kwargs)

    # ------------------------------------------------------------------
    # Parameters
    # ------------------------------------------------------------------
    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        if self.position is not None and hasattr(self.position,
                                                 "reset_parameters"):
            self.position.reset_parameters()
        self.token_embedding.reset_parameters()
        if self.init == "gpt2":
            self._gpt2_init()

    def _gpt2_init(self) -> None:
        for module in self.modules():
            if isinstance(module, (torch.nn.Linear, PyGLinear)):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
            elif isinstance(module, torch.nn.Embedding):
                torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
        # GPT-2: the projections that write into the residual stream are
        # scaled by 1/sqrt(2L), so the stream's variance does not grow with
        # the 2L branches added to it.
        std = 0.02 / math.sqrt(2 * self.num_layers)
        for layer in self.encoder.layers:
            for linear in (layer.attention.out_proj, layer.ffn.lin2):
                if linear is not None:
                    torch.nn.init.normal_(linear.weight, mean=0.0, std=std)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Number of (distinct) parameters; ``non_embedding`` leaves out the
        learned position table (nanoGPT's count; the token embedding stays
        in, as it is the output head too)."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding and isinstance(self.position,
                                        LearnedPositionalEncoding):
            total -= self.position.embedding.weight.numel()
        return total

    def training_graph_delta(self) -> float:
        r"""PNA's :math:`\delta`, the mean :math:`\log(d + 1)` of the
        in-degrees of one training graph (``pattern`` at ``block_size``
        tokens; a batch of copies has the same mean)."""
        one = causal_edge_index(self.block_size, self.pattern,
                                window=self.window, dilation=self.dilation)
        return average_log_degree(degree_histogram([one],
                                                   [self.block_size]))

    # ------------------------------------------------------------------
    # Graphs
    # ------------------------------------------------------------------
    def token_graph(self, batch_size: int, length: int,
                    device: torch.device) -> TokenGraph:
        """The batch of ``batch_size`` attention graphs of ``length`` tokens
        on ``device``, built once and then reused (so are the kernels'
        per-graph caches, which are keyed on these tensors)."""
        key = (batch_size, length, torch.device(device))
        graph = self._graphs.get(key)
        if graph is not None:
            self._graphs.move_to_end(key)
            return graph
        # Normal tensors even under torch.inference_mode(): a cached
        # inference tensor could not be saved for a later backward.
        with torch.inference_mode(False):
            graph = causal_token_graph(batch_size, length, self.pattern,
                                       window=self.window,
                                       dilation=self.dilation, device=device)
        self._graphs[key] = graph
        while len(self._graphs) > GRAPH_CACHE_SIZE:
            self._graphs.popitem(last=False)
        return graph

    def in_neighbours(self, position: int) -> Tensor:
        """Positions ``j`` with an edge ``j -> position`` in the attention
        pattern, ascending (the last is ``position`` itself).  A causal
        pattern's in-neighbours of a position do not depend on the length
        of the sequence, so one graph of ``block_size`` tokens, built once,
        answers for every length."""
        if self._pattern_csr is None:
            with torch.inference_mode(False):
                edges = causal_edge_index(self.block_size, self.pattern,
                                          window=self.window,
                                          dilation=self.dilation)
                counts = torch.bincount(edges[1], minlength=self.block_size)
                ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
            self._pattern_csr = (edges[0], ptr.tolist())
        sources, ptr = self._pattern_csr
        return sources[ptr[position]:ptr[position + 1]]

    # ------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------
    def hidden_states(self, idx: Tensor) -> Tensor:
        """``idx`` ``[B, T]`` -> the final normed hidden states
        ``[B, T, hidden]`` (before the head)."""
        _check_ids("idx", idx, self.vocab_size)
        batch_size, length = idx.shape
        if length > self.block_size:
            raise ValueError(f"idx has {length} tokens per sequence but the "
                             f"model's block_size is {self.block_size}; crop"
                             f" the context to its last {self.block_size} "
                             "tokens")
        graph = self.token_graph(batch_size, length, idx.device)
        h = self._encode(idx.reshape(-1), graph.position, graph.edge_index,
                         graph.batch)
        return h.view(batch_size, length, -1)

    def _encode(self, tokens: Tensor, position: Tensor, edge_index: Tensor,
                batch: Optional[Tensor],
                cache: Optional[List[KeyValueCache]] = None) -> Tensor:
        """Token ids ``[N]`` at ``position`` ``[N]`` -> final normed node
        states ``[N, hidden]`` on the attention graph ``edge_index`` (with
        ``cache``, one :class:`KeyValueCache` per layer: the nodes are new
        ones, and ``edge_index`` runs from the cached and new nodes to
        them)."""
        h = self.token_embedding(tokens)  # [N, d] node features
        if self.position is not None:
            h = self.position(h, position)
        h = F.dropout(h, self.dropout, self.training)
        extra = {"pos": position} if self.pos_kind == "rope" else {}
        return self.encoder(h, edge_index, None, batch, cache=cache,
                            **extra)

    def forward(self, idx: Tensor, targets: Optional[Tensor] = None
                ) -> Tuple[Tensor, Optional[Tensor]]:
        """``idx`` ``[B, T]`` token ids (``T <= block_size``) -> ``(logits
        [B, T, V], loss)``; ``loss`` is the mean cross-entropy of
        ``targets`` ``[B, T]`` (positions with target ``-1`` left out), or
        ``None`` without targets."""
        logits = self.head(self.hidden_states(idx))
        if targets is None:
            return logits, None
        if not isinstance(targets, Tensor) or targets.shape != idx.shape \
                or targets.is_floating_point():
            raise ValueError(
                f"targets must be an integer tensor of the shape of idx "
                f"{list(idx.shape)}, got "
                f"{getattr(targets, 'dtype', type(targets).__name__)} of "
                f"shape {list(getattr(targets, 'shape', []))}")
        loss = F.cross_entropy(logits.view(-1, self.vocab_size),
                               targets.reshape(-1), ignore_index=-1)
        return logits, loss

    # ------------------------------------------------------------------
    # Sampling
    # ------------------------------------------------------------------
    def next_token_logits(self, context: Tensor) -> Tensor:
        """Logits ``[B, V]`` of the token after ``context`` ``[B, T]``
        (``T <= block_size``): the whole context is recomputed (no
        key/value cache); only the last position goes through the head."""
        return self.head(self.hidden_states(context)[:, -1])

    @staticmethod
    def sample_next(logits: Tensor, temperature: float = 1.0,
                    top_k: Optional[int] = None,
                    generator: Optional[torch.Generator] = None) -> Tensor:
        r"""``[B, 1]`` ids drawn from ``softmax(logits / temperature)``,
        restricted to the ``top_k`` largest logits when given;
        ``temperature=0`` takes the arg-max (greedy)."""
        if temperature == 0:
            return logits.argmax(dim=-1, keepdim=True)
        logits = logits / temperature
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.size(-1))).values
            logits = logits.masked_fill(logits < kth[:, [-1]],
                                        float("-inf"))
        probs = F.softmax(logits, dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator)

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int,
                 temperature: float = 1.0, top_k: Optional[int] = None,
                 cache: bool = True, *,
                 generator: Optional[torch.Generator] = None) -> Tensor:
        r"""Continues every prompt of ``idx`` ``[B, T_0]`` by
        ``max_new_tokens`` tokens, each drawn from the model's next-token
        distribution at ``temperature`` (0: greedy), among the ``top_k``
        most likely when given, and fed back.  Returns
        ``[B, T_0 + max_new_tokens]``, the prompt first.

        The context of each step follows :func:`generation_context`: the
        prompt's last ``block_size`` tokens, and once the context outgrows
        the block, its last ``block_size // 2`` tokens, encoded again.

        With ``cache=True`` every layer keeps the keys and values of the
        context's tokens (:class:`~tgnn_transformers.nn.KeyValueCache`): a
        new token is one new node whose attention reads them along the
        pattern's edges into it, so a step costs one token's projections
        and feed-forward and one row of attention, instead of the whole
        context's.  ``cache=False`` recomputes the context at every step;
        both give the same tokens (to float round-off in the logits).

        Runs in eval mode (dropout off; the previous mode is restored).
        Sampling draws from ``generator`` (default: torch's global
        generator), so a seeded generator gives the same text every time.
        """
        _check_ids("idx", idx, self.vocab_size)
        if isinstance(max_new_tokens, bool) or not isinstance(
                max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an integer >= 0, got "
                             f"{max_new_tokens!r}")
        if isinstance(temperature, bool) or not isinstance(
                temperature, (int, float)) or not temperature >= 0:
            raise ValueError(f"temperature must be a number >= 0 (0: "
                             f"greedy), got {temperature!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(
                top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be an integer >= 1 or None, got "
                             f"{top_k!r}")
        if not isinstance(cache, bool):
            raise TypeError(f"cache must be a bool, got {cache!r}")
        if max_new_tokens == 0:
            return idx
        was_training = self.training
        self.eval()
        try:
            context = _CachedContext(self) if cache else \
                _RecomputedContext(self)
            start = max(0, idx.size(1) - self.block_size)
            logits = context.restart(idx[:, start:])
            tokens = [idx]
            length = idx.size(1)
            for step in range(max_new_tokens):
                token = self.sample_next(logits, temperature, top_k,
                                         generator).to(idx.dtype)
                tokens.append(token)
                length += 1
                if step == max_new_tokens - 1:
                    break
                new_start = generation_context(length, start,
                                               self.block_size)
                if new_start != start:
                    start = new_start
                    whole = torch.cat(tokens, dim=1)
                    tokens = [whole]
                    logits = context.restart(whole[:, start:])
                else:
                    logits = context.append(token)
        finally:
            self.train(was_training)
        return torch.cat(tokens, dim=1)

    def extra_repr(self) -> str:
        window = (f", window={self.window}, dilation={self.dilation}"
                  if self.pattern != "causal" else "")
        return (f"vocab_size={self.vocab_size}, block_size="
                f"{self.block_size}, attention={self.attention!r}, pos="
                f"{self.pos_kind!r}, pattern={self.pattern!r}{window}")


class _RecomputedContext:
    """Generation without a cache: every step runs the whole context."""

    def __init__(self, model: CausalLanguageModel):
        self.model = model
        self.context: Optional[Tensor] = None

    def restart(self, context: Tensor) -> Tensor:
        """Logits ``[B, V]`` after ``context`` ``[B, L]``, a new context."""
        self.context = context
        return self.model.next_token_logits(context)

    def append(self, token: Tensor) -> Tensor:
        """Logits after the context extended by ``token`` ``[B, 1]``."""
        self.context = torch.cat([self.context, token], dim=1)
        return self.model.next_token_logits(self.context)


class _CachedContext:
    """Generation with one :class:`KeyValueCache` per layer.

    The caches hold the context's nodes in the order they were encoded:
    the ``B * L`` nodes of :meth:`restart` as the token graph numbers them
    (``b * L + t``), then the ``B`` nodes of every :meth:`append` (node
    ``size + b`` for sequence ``b``).  :attr:`nodes` maps ``(b, position)``
    to that number, which is what a step's edges need."""

    def __init__(self, model: CausalLanguageModel):
        self.model = model
        self.caches: List[KeyValueCache] = []
        self.nodes: Optional[Tensor] = None  # [B, L] cache index of tokens

    def restart(self, context: Tensor) -> Tensor:
        model = self.model
        batch_size, length = context.shape
        self.caches = [KeyValueCache() for _ in model.encoder.layers]
        graph = model.token_graph(batch_size, length, context.device)
        # The whole context is new: its token graph, sources numbered as
        # its nodes (the caches are empty).
        h = model._encode(context.reshape(-1), graph.position,
                          graph.edge_index, graph.batch, self.caches)
        self.nodes = torch.arange(batch_size * length,
                                  device=context.device).view(batch_size,
                                                              length)
        return model.head(h.view(batch_size, length, -1)[:, -1])

    def append(self, token: Tensor) -> Tensor:
        model = self.model
        batch_size, position = self.nodes.shape
        device = token.device
        size = self.caches[0].size
        new = size + torch.arange(batch_size, device=device)
        self.nodes = torch.cat([self.nodes, new[:, None]], dim=1)
        # Edges j -> new token of every sequence: its in-neighbours in the
        # pattern, as cache indices (ascending; the last is the token).
        sources = self.nodes[:, model.in_neighbours(position).to(device)]
        targets = torch.arange(batch_size, device=device).repeat_interleave(
            sources.size(1))
        edge_index = torch.stack([sources.reshape(-1), targets])
        positions = torch.full((batch_size, ), position, device=device)
        h = model._encode(token.reshape(-1), positions, edge_index, None,
                          self.caches)
        return model.head(h)


__all__ = ["CausalLanguageModel", "TokenGraph", "LM_PATTERNS",
           "LM_POSITIONS", "LM_INITS", "causal_edge_index",
           "causal_token_graph", "generation_context", "task_pattern",
           "check_head_options", "TASK_PATTERNS"]
