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
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.dense.linear import Linear as PyGLinear

from ..functional._checks import check_choice
from ..functional.patterns import complete_edge_index, sequence_edge_index
from ..nn import GraphTransformer
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
#: Most (B, T, device) graphs kept per model, least recently used dropped.
#: Training and evaluation use one shape each, generation the full block
#: once the context is cropped; the growing contexts before that are used
#: once each, and keeping all of them would hold O(block_size^3) edges.
GRAPH_CACHE_SIZE = 8


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
        h = self.token_embedding(idx.reshape(-1))  # [B * T, d] node features
        if self.position is not None:
            h = self.position(h, graph.position)
        h = F.dropout(h, self.dropout, self.training)
        extra = {"pos": graph.position} if self.pos_kind == "rope" else {}
        h = self.encoder(h, graph.edge_index, None, graph.batch, **extra)
        return h.view(batch_size, length, -1)

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
                 temperature: float = 1.0, top_k: Optional[int] = None, *,
                 generator: Optional[torch.Generator] = None) -> Tensor:
        r"""Continues every prompt of ``idx`` ``[B, T_0]`` by
        ``max_new_tokens`` tokens, each drawn from the model's next-token
        distribution at ``temperature`` (0: greedy), among the ``top_k``
        most likely when given, and fed back.  The context of each step is
        the last ``block_size`` tokens (longer prompts are cropped).
        Returns ``[B, T_0 + max_new_tokens]``, the prompt first.

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
        was_training = self.training
        self.eval()
        try:
            for _ in range(max_new_tokens):
                context = idx[:, -self.block_size:]
                logits = self.next_token_logits(context)
                token = self.sample_next(logits, temperature, top_k,
                                         generator)
                idx = torch.cat([idx, token.to(idx.dtype)], dim=1)
        finally:
            self.train(was_training)
        return idx

    def extra_repr(self) -> str:
        window = (f", window={self.window}, dilation={self.dilation}"
                  if self.pattern != "causal" else "")
        return (f"vocab_size={self.vocab_size}, block_size="
                f"{self.block_size}, attention={self.attention!r}, pos="
                f"{self.pos_kind!r}, pattern={self.pattern!r}{window}")


__all__ = ["CausalLanguageModel", "TokenGraph", "LM_PATTERNS",
           "LM_POSITIONS", "LM_INITS", "causal_edge_index",
           "causal_token_graph"]
