"""Task models: a node encoder built from the registry, and the heads of the
node, graph, link and text tasks on top of it.

Every constructor takes a model name and that model's options as keywords
(the registry checks them once -- an option the model does not take, or a
value out of range, raises -- and fills in the defaults), or the
:class:`~tgnn_transformers.models.registry.ModelOptions` that
:meth:`ModelSpec.resolve` made, which is used as it is.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import (global_add_pool, global_max_pool,
                                global_mean_pool)

from ..functional import feature_dropout, leading_rows
from ..nn import GraphTransformer
from .registry import ModelOptions, ModelSpec, get_model

ModelArg = Union[str, ModelOptions]

#: The options a conv stack uses itself; the rest go to every conv.
STACK_OPTIONS = ("hidden", "num_layers", "dropout", "heads", "out_heads")


def model_options(model: ModelArg, options: Dict[str, Any],
                  head: Tuple[str, ...] = (),
                  task: Optional[str] = None) -> ModelOptions:
    """``model`` itself when it is already resolved (then no keyword
    options may come with it), else ``options`` resolved for the registry
    model ``model`` (with the task model's ``head`` options)."""
    if isinstance(model, ModelOptions):
        if options:
            raise TypeError(f"options given twice: resolved ModelOptions "
                            f"and keywords {', '.join(sorted(options))}")
        return model
    return get_model(model).resolve(options, head, task)


class ConvStack(torch.nn.Module):
    """``num_layers`` convs of one registry model with ELU and feature
    dropout between them.

    Hidden layers of multi-head models concatenate ``heads`` heads of
    ``hidden // heads`` channels; the last layer maps to ``out_channels``
    (averaging ``out_heads`` heads), as in the GAT paper's Cora model.
    """

    def __init__(self, model: ModelArg, in_channels: int, out_channels: int,
                 **options):
        super().__init__()
        options = model_options(model, options)
        self.spec: ModelSpec = options.spec
        if self.spec.make_conv is None:
            raise ValueError(f"model {options.model!r} is not a conv stack")
        hidden, num_layers = options["hidden"], options["num_layers"]
        self.dropout = options["dropout"]
        heads = options.get("heads", 1)
        out_heads = options.get("out_heads", 1)
        conv_options = {k: v for k, v in options.items()
                        if k not in STACK_OPTIONS}
        self.convs = torch.nn.ModuleList()
        width = in_channels
        for layer in range(num_layers):
            last = layer == num_layers - 1
            if last:
                layer_heads, out = out_heads, out_channels
            else:  # heads is 1 for single-head models
                layer_heads, out = heads, hidden // heads
            self.convs.append(self.spec.make_conv(
                width, out, layer_heads, not last, **conv_options))
            width = hidden
        self.out_channels = out_channels

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_attr: Optional[Tensor] = None,
                batch: Optional[Tensor] = None,
                return_layers: bool = False):
        """The last layer's output, or with ``return_layers`` the input
        and every layer's output, in order."""
        extra: Dict[str, Any] = {}
        if "edge_attr" in self.spec.forward_args and edge_attr is not None:
            extra["edge_attr"] = edge_attr
        if "batch" in self.spec.forward_args:
            extra["batch"] = batch
        layers = [x]
        for i, conv in enumerate(self.convs):
            # feature_dropout: the input features may be a sparse tensor.
            x = feature_dropout(x, self.dropout, self.training)
            x = conv(x, edge_index, **extra)
            if i < len(self.convs) - 1:
                x = F.elu(x)
            layers.append(x)
        return layers if return_layers else x

    def forward_blocks(self, x: Tensor, blocks) -> Tensor:
        """The outputs of the leading nodes of a sampled subgraph: layer
        ``l`` runs on its block ``(edge_index, num_targets)`` as the
        bipartite pair ``(x_src, x_dst)`` with ``x_dst`` the first
        ``num_targets`` rows of ``x_src`` (see
        :func:`~tgnn_transformers.train.sampling.sampled_blocks`), so each
        layer computes only the nodes the next one reads.  Needs a model
        whose convs take bipartite input (``ModelSpec.bipartite``)."""
        if not self.spec.bipartite:
            raise ValueError(f"model {self.spec.name!r} does not take "
                             "bipartite (x_src, x_dst) input; run the whole "
                             "subgraph with forward()")
        if len(blocks) != len(self.convs):
            raise ValueError(f"blocks: expected one per layer "
                             f"({len(self.convs)}), got {len(blocks)}")
        extra: Dict[str, Any] = {}
        if "batch" in self.spec.forward_args:
            extra["batch"] = None
        for i, (conv, (edge_index, targets)) in enumerate(
                zip(self.convs, blocks)):
            x = feature_dropout(x, self.dropout, self.training)
            x = conv((x, leading_rows(x, targets)), edge_index, **extra)
            if i < len(self.convs) - 1:
                x = F.elu(x)
        return x


class TransformerStack(torch.nn.Module):
    """Input projection -> pre-norm :class:`GraphTransformer` -> linear
    head (the ``graph-transformer`` model)."""

    def __init__(self, in_channels: int, out_channels: int,
                 options: Optional[ModelOptions] = None, **kwargs):
        super().__init__()
        options = model_options(options or "graph-transformer", kwargs)
        hidden = options["hidden"]
        self.dropout = options["dropout"]
        self.input = torch.nn.Linear(in_channels, hidden)
        self.encoder = GraphTransformer(
            hidden, options["heads"], options["num_layers"],
            attention=options["attention"],
            attention_kwargs=options.variant(), dropout=self.dropout,
            attention_dropout=options["attention_dropout"],
            edge_dim=options["edge_dim"],
            ffn_multiplier=options["ffn_multiplier"], norm=options["norm"],
            norm_first=True)
        self.head = torch.nn.Linear(hidden, out_channels)
        self.out_channels = out_channels

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_attr: Optional[Tensor] = None,
                batch: Optional[Tensor] = None) -> Tensor:
        x = self.input(feature_dropout(x, self.dropout, self.training))
        x = self.encoder(x, edge_index, edge_attr, batch)
        return self.head(F.dropout(x, self.dropout, self.training))


def build_encoder(model: ModelArg, in_channels: int, out_channels: int,
                  **options) -> torch.nn.Module:
    """The node encoder of registry model ``model``: the transformer block
    stack for ``graph-transformer``, a :class:`ConvStack` otherwise."""
    options = model_options(model, options)
    if options.spec.make_conv is None:
        return TransformerStack(in_channels, out_channels, options)
    return ConvStack(options, in_channels, out_channels)


class NodeClassifier(torch.nn.Module):
    """Node classification: the encoder straight to class logits."""

    HEAD_OPTIONS: Tuple[str, ...] = ()

    def __init__(self, model: ModelArg, in_channels: int, num_classes: int,
                 **options):
        super().__init__()
        self.encoder = build_encoder(model_options(model, options),
                                     in_channels, num_classes)

    @property
    def takes_blocks(self) -> bool:
        """Whether ``forward`` takes sampled ``blocks`` (a conv stack of a
        model whose convs take bipartite input)."""
        return isinstance(self.encoder, ConvStack) and \
            self.encoder.spec.bipartite

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_attr: Optional[Tensor] = None,
                batch: Optional[Tensor] = None, *,
                blocks=None) -> Tensor:
        """Logits of every node; with ``blocks`` (a sampled mini-batch cut
        per layer by
        :func:`~tgnn_transformers.train.sampling.sampled_blocks`, which
        then replaces ``edge_index``) the logits of the leading nodes, each
        layer computed only where the next one reads."""
        if blocks is not None:
            return self.encoder.forward_blocks(x, blocks)
        return self.encoder(x, edge_index, edge_attr, batch)


class GraphClassifier(torch.nn.Module):
    """Graph classification: node encoder, global pooling (``pool``), and
    either an MLP head on the pooled last layer (``readout="last"``) or, as
    in the GIN paper, one linear head per layer on that layer's pooled
    features (input included), summed (``readout="layers"``): shallow layers
    keep the counts of small substructures that deep ones smooth away."""

    HEAD_OPTIONS = ("pool", "readout")

    def __init__(self, model: ModelArg, in_channels: int, num_classes: int,
                 **options):
        super().__init__()
        options = model_options(model, options, self.HEAD_OPTIONS, "graph")
        self.pool = global_add_pool if options.head["pool"] == "add" else \
            global_mean_pool
        self.readout = options.head["readout"]
        hidden, self.dropout = options["hidden"], options["dropout"]
        self.encoder = build_encoder(options, in_channels, hidden)
        if self.readout == "layers":
            if not isinstance(self.encoder, ConvStack):
                raise ValueError(f"readout='layers' needs a conv stack; "
                                 f"{options.model!r} is a transformer block "
                                 "stack")
            widths = [in_channels] + [hidden] * len(self.encoder.convs)
            self.head = torch.nn.ModuleList(
                torch.nn.Linear(w, num_classes) for w in widths)
        else:
            self.head = torch.nn.Sequential(
                torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                torch.nn.Dropout(self.dropout),
                torch.nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_attr: Optional[Tensor] = None,
                batch: Optional[Tensor] = None) -> Tensor:
        if batch is None:
            batch = x.new_zeros(x.size(0), dtype=torch.long)
        if self.readout == "last":
            h = F.elu(self.encoder(x, edge_index, edge_attr, batch))
            return self.head(self.pool(h, batch))
        layers = self.encoder(x, edge_index, edge_attr, batch,
                              return_layers=True)
        layers[-1] = F.elu(layers[-1])
        return sum(head(F.dropout(self.pool(h, batch), self.dropout,
                                  self.training))
                   for head, h in zip(self.head, layers))


class LinkPredictor(torch.nn.Module):
    """Link prediction: node encoder and a dot-product or MLP decoder
    (``decoder``); ``forward`` scores the node pairs ``pairs`` (``[2, P]``)
    on the graph ``edge_index``."""

    HEAD_OPTIONS = ("decoder", )

    def __init__(self, model: ModelArg, in_channels: int, **options):
        super().__init__()
        options = model_options(model, options, self.HEAD_OPTIONS, "link")
        self.decoder = options.head["decoder"]
        hidden = options["hidden"]
        self.encoder = build_encoder(options, in_channels, hidden)
        if self.decoder == "mlp":
            self.mlp = torch.nn.Sequential(torch.nn.Linear(hidden, hidden),
                                           torch.nn.ReLU(),
                                           torch.nn.Linear(hidden, 1))

    def encode(self, x: Tensor, edge_index: Tensor,
               edge_attr: Optional[Tensor] = None) -> Tensor:
        return self.encoder(x, edge_index, edge_attr)

    def decode(self, z: Tensor, pairs: Tensor) -> Tensor:
        h = z[pairs[0]] * z[pairs[1]]
        return h.sum(-1) if self.decoder == "dot" else self.mlp(h).squeeze(-1)

    def forward(self, x: Tensor, edge_index: Tensor, pairs: Tensor,
                edge_attr: Optional[Tensor] = None) -> Tensor:
        return self.decode(self.encode(x, edge_index, edge_attr), pairs)


class TextClassifier(torch.nn.Module):
    r"""Sentence classification on token graphs: word embeddings, a
    position encoding (``pos``), a pre-norm
    :class:`~tgnn_transformers.nn.GraphTransformer` whose attention is the
    registry model ``model`` (``mha``, ``gin-attention``,
    ``pna-attention``), pooling of the ``[CLS]`` token, or the mean or the
    feature-wise maximum of the real tokens (``pooling``), and a linear
    head.  ``pooling="auto"`` is resolved by the text recipe from the
    attention pattern (:func:`~tgnn_transformers.train.recipes.text_pooling`:
    ``[CLS]`` only where it hears every token); a model built directly does
    not know its graphs and takes the mean.

    ``pos``: ``"sinusoidal"`` / ``"learned"`` encodings added to the
    embeddings (positions below 512), ``"rope"`` rotating every layer's
    queries and keys, ``"relative"`` a T5 bias (32 buckets, distance 128)
    computed once and added to every layer's scores, or ``None``.

    ``in_channels`` is the vocabulary size (id 0 the padding).  The model's
    ``hidden``, ``heads``, ``num_layers``, ``dropout`` (embeddings, blocks,
    head), ``attention_dropout`` and its variant options apply;
    ``ffn_multiplier`` and ``norm`` shape the blocks; ``out_heads`` and
    ``root_weight`` do not apply (the blocks use the transformer form).
    ``forward(x, edge_index, batch, position, virtual=None)`` takes a batch
    of :class:`~tgnn_transformers.data.SentenceGraphDataset` graphs.
    """

    HEAD_OPTIONS = ("pos", "pooling", "ffn_multiplier", "norm")
    MAX_POSITIONS = 512

    def __init__(self, model: ModelArg, in_channels: int, num_classes: int,
                 **options):
        super().__init__()
        from ..nn.positional import (LearnedPositionalEncoding,
                                     RelativePositionBias,
                                     SinusoidalPositionalEncoding)
        resolved = model_options(model, options, self.HEAD_OPTIONS, "text")
        spec, head = resolved.spec, resolved.head
        if spec.family != "attention" or spec.make_conv is None:
            raise ValueError(f"the text task runs an attention conv inside "
                             f"transformer blocks: model must be one of mha,"
                             f" gin-attention, pna-attention; got "
                             f"{spec.name!r}")
        hidden, heads = resolved["hidden"], resolved["heads"]
        self.pos_kind, self.pooling = head["pos"], head["pooling"]
        if self.pooling == "auto":
            self.pooling = "mean"  # the safe choice on any pattern
        self.dropout = resolved["dropout"]
        self.embedding = torch.nn.Embedding(in_channels, hidden,
                                            padding_idx=0)
        self.position = None
        self.relative = None
        attention_kwargs = resolved.variant()
        if self.pos_kind == "sinusoidal":
            self.position = SinusoidalPositionalEncoding(hidden)
        elif self.pos_kind == "learned":
            self.position = LearnedPositionalEncoding(hidden,
                                                      self.MAX_POSITIONS)
        elif self.pos_kind == "rope":
            attention_kwargs["rope"] = True
        elif self.pos_kind == "relative":
            self.relative = RelativePositionBias(heads)
        self.encoder = GraphTransformer(
            hidden, heads, resolved["num_layers"], attention=spec.name,
            attention_kwargs=attention_kwargs, dropout=self.dropout,
            attention_dropout=resolved["attention_dropout"],
            ffn_multiplier=head["ffn_multiplier"], norm=head["norm"],
            norm_first=True)
        self.head = torch.nn.Linear(hidden, num_classes)
        self.scale = hidden**0.5
        torch.nn.init.normal_(self.embedding.weight, std=hidden**-0.5)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def forward(self, x: Tensor, edge_index: Tensor,
                batch: Optional[Tensor] = None,
                position: Optional[Tensor] = None,
                virtual: Optional[Tensor] = None) -> Tensor:
        if batch is None:
            batch = x.new_zeros(x.size(0))
        if position is None:
            if self.pos_kind is not None:
                raise ValueError(f"pos={self.pos_kind!r} needs the token "
                                 "positions (data.position)")
        h = self.embedding(x) * self.scale
        if self.position is not None:
            h = self.position(h, position)
        h = F.dropout(h, self.dropout, self.training)
        extra: Dict[str, Any] = {}
        if self.pos_kind == "rope":
            extra["pos"] = position
        if self.relative is not None:
            extra["attn_bias"] = self.relative(edge_index, position)
        h = self.encoder(h, edge_index, None, batch, **extra)
        if self.pooling == "cls":
            counts = torch.bincount(batch)
            first = torch.cumsum(counts, 0) - counts
            pooled = h[first[counts > 0]]
        else:
            keep = torch.ones_like(batch, dtype=torch.bool) \
                if virtual is None else ~virtual
            pool = global_mean_pool if self.pooling == "mean" else \
                global_max_pool
            pooled = pool(h[keep], batch[keep])
        return self.head(F.dropout(pooled, self.dropout, self.training))


