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

from ..functional import feature_dropout, hstack_features, leading_rows
from ..nn import GPSConv, GraphTransformer
from ..nn.graph_transformer import FeedForward, make_norm
from .registry import ModelOptions, ModelSpec, get_model

ModelArg = Union[str, ModelOptions]

#: The options a conv stack uses itself; the rest go to every conv.
STACK_OPTIONS = ("hidden", "num_layers", "dropout", "heads", "out_heads",
                 "residual", "norm", "ffn_multiplier", "output_layer")


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


def _conv_options(options: ModelOptions) -> Dict[str, Any]:
    """The options of ``options`` that go to each conv of its model."""
    return {k: v for k, v in options.items() if k not in STACK_OPTIONS}


def _output_conv(conv_options: Dict[str, Any]):
    """The factory and options of a plain ``mha`` conv as a stack's last
    layer: the options of ``conv_options`` that ``mha`` takes."""
    mha = get_model("mha")
    return mha.make_conv, {k: v for k, v in conv_options.items()
                           if k in mha.options}


class ConvStack(torch.nn.Module):
    r"""``num_layers`` convs of one registry model.

    Plain (``residual=False``): the convs with feature dropout before each
    and, between them, a norm (``norm``, none by default) and ELU.  Hidden
    layers of multi-head models concatenate ``heads`` heads of
    ``hidden // heads`` channels; the last layer maps to ``out_channels``
    (averaging ``out_heads`` heads), as in the GAT paper's Cora model.
    With ``output_layer="mha"`` (GIN-, PNA-Attention) that last layer is a
    plain :class:`~tgnn_transformers.nn.MultiHeadAttentionConv` (the same
    ``attention_dropout``, ``root_weight`` and ``edge_dim``) instead of
    one of the model's own convs, whose per-head MLP of the aggregate
    would produce the outputs.

    Residual (``residual=True``), the form of Platonov et al. (ICLR 2023,
    "A critical look at the evaluation of GNNs under heterophily"): every
    conv maps ``hidden`` to ``hidden`` inside a pre-norm residual branch,

    .. math::
        \mathbf{h}^{0} = \mathrm{GELU}(\mathrm{Drop}(\mathbf{W}_{in}
        \mathbf{x})), \qquad
        \mathbf{h}^{l} = \mathbf{h}^{l-1} + \mathrm{Drop}(\mathrm{FFN}(
        \mathrm{conv}_l(\mathrm{Norm}_l(\mathbf{h}^{l-1}), \mathcal{E}))),
        \qquad \mathbf{y} = \mathbf{W}_{out} \mathrm{Norm}(\mathbf{h}^{L})

    with :math:`\mathrm{FFN}(\mathbf{h}) = \mathbf{W}_2 \mathrm{Drop}(
    \mathrm{GELU}(\mathbf{W}_1 \mathbf{h}))` of width ``ffn_multiplier *
    hidden`` (``ffn_multiplier=0``: GELU alone).  With ``root_weight``
    (their "-sep") each conv adds a separate map of the node's own state
    to the aggregate of its neighbours, so residual stacks keep the ego
    signal apart from the neighbourhood and do not over-smooth early.
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
        self.residual = options.get("residual", False)
        norm = options.get("norm")
        heads = options.get("heads", 1)
        out_heads = options.get("out_heads", 1)
        conv_options = _conv_options(options)
        self.convs = torch.nn.ModuleList()
        self.norms = torch.nn.ModuleList()
        self.ffns = torch.nn.ModuleList()
        self.input = self.final_norm = self.head = None
        if self.residual:
            self.input = torch.nn.Linear(in_channels, hidden)
            multiplier = options.get("ffn_multiplier") or 0.0
            for _ in range(num_layers):
                self.norms.append(make_norm(norm, hidden) or
                                  torch.nn.Identity())
                self.convs.append(self.spec.make_conv(
                    hidden, hidden // heads, heads, True, **conv_options))
                if multiplier > 0:
                    self.ffns.append(FeedForward(
                        hidden, max(1, round(multiplier * hidden)), "gelu",
                        self.dropout))
            self.final_norm = make_norm(norm, hidden) or torch.nn.Identity()
            self.head = torch.nn.Linear(hidden, out_channels)
        else:
            width = in_channels
            for layer in range(num_layers):
                last = layer == num_layers - 1
                if last:
                    layer_heads, out = out_heads, out_channels
                else:  # heads is 1 for single-head models
                    layer_heads, out = heads, hidden // heads
                    self.norms.append(make_norm(norm, hidden) or
                                      torch.nn.Identity())
                make_conv, layer_options = self.spec.make_conv, conv_options
                if last and options.get("output_layer", "same") == "mha":
                    make_conv, layer_options = _output_conv(conv_options)
                self.convs.append(make_conv(
                    width, out, layer_heads, not last, **layer_options))
                width = hidden
        self.out_channels = out_channels

    def _extra(self, edge_attr, batch) -> Dict[str, Any]:
        extra: Dict[str, Any] = {}
        if "edge_attr" in self.spec.forward_args and edge_attr is not None:
            extra["edge_attr"] = edge_attr
        if "batch" in self.spec.forward_args:
            extra["batch"] = batch
        return extra

    def _branch(self, i: int, h: Tensor) -> Tensor:
        """The residual branch of layer ``i`` after its conv."""
        if self.ffns:
            h = self.ffns[i](h)
        else:
            h = F.gelu(h)
        return F.dropout(h, self.dropout, self.training)

    def _input(self, x: Tensor) -> Tensor:
        return F.gelu(F.dropout(self.input(x), self.dropout, self.training))

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_attr: Optional[Tensor] = None,
                batch: Optional[Tensor] = None,
                return_layers: bool = False):
        """The last layer's output, or with ``return_layers`` the input
        and every layer's output, in order (residual: the states after
        each layer, the last one through the final norm and head)."""
        extra = self._extra(edge_attr, batch)
        layers = [x]
        if self.residual:
            h = self._input(x)
            for i, conv in enumerate(self.convs):
                h = h + self._branch(i, conv(self.norms[i](h), edge_index,
                                              **extra))
                layers.append(h)
            layers[-1] = self.head(self.final_norm(h))
            return layers if return_layers else layers[-1]
        for i, conv in enumerate(self.convs):
            # feature_dropout: the input features may be a sparse tensor.
            x = feature_dropout(x, self.dropout, self.training)
            x = conv(x, edge_index, **extra)
            if i < len(self.convs) - 1:
                x = F.elu(self.norms[i](x))
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
        if self.residual:
            h = self._input(x)
            for i, (conv, (edge_index, targets)) in enumerate(
                    zip(self.convs, blocks)):
                normed = self.norms[i](h)
                h = h[:targets] + self._branch(i, conv(
                    (normed, normed[:targets]), edge_index, **extra))
            return self.head(self.final_norm(h))
        for i, (conv, (edge_index, targets)) in enumerate(
                zip(self.convs, blocks)):
            x = feature_dropout(x, self.dropout, self.training)
            x = conv((x, leading_rows(x, targets)), edge_index, **extra)
            if i < len(self.convs) - 1:
                x = F.elu(self.norms[i](x))
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
            attention_kwargs={**options.variant(),
                              "root_weight": options["root_weight"]},
            dropout=self.dropout,
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


class GPSStack(torch.nn.Module):
    """Input projection -> ``num_layers`` :class:`~tgnn_transformers.nn.
    GPSConv` layers -> linear head (the ``gps`` model): each layer's local
    conv is the registry conv model ``local`` (``hidden`` to ``hidden``,
    with its own defaults and the variant options it takes), its attention
    the conv ``attention`` over ``attention_graph``."""

    def __init__(self, in_channels: int, out_channels: int,
                 options: Optional[ModelOptions] = None, **kwargs):
        super().__init__()
        options = model_options(options or "gps", kwargs)
        hidden, heads = options["hidden"], options["heads"]
        self.dropout = options["dropout"]
        self.input = torch.nn.Linear(in_channels, hidden)
        local = options["local"]
        self.local_spec = None if local is None else get_model(local)
        attention = get_model(options["attention"])
        # The variant options go to whichever of the two convs takes them.
        attention_kwargs = {k: v for k, v in options.variant().items()
                            if k in attention.options}
        self.layers = torch.nn.ModuleList()
        for _ in range(options["num_layers"]):
            conv = None
            if self.local_spec is not None:
                conv = self._local_conv(self.local_spec, options, hidden,
                                        heads)
            self.layers.append(GPSConv(
                hidden, conv, heads, self.dropout, "relu", options["norm"],
                attention=options["attention"],
                attention_kwargs=attention_kwargs,
                attention_graph=options["attention_graph"],
                attention_dropout=options["attention_dropout"],
                ffn_multiplier=options["ffn_multiplier"]))
        self.head = torch.nn.Linear(hidden, out_channels)
        self.out_channels = out_channels

    @staticmethod
    def _local_conv(spec: ModelSpec, options: ModelOptions, hidden: int,
                    heads: int) -> torch.nn.Module:
        """A ``hidden``-to-``hidden`` conv of ``spec``: the options of the
        gps model it takes (``edge_dim``, ``attention_dropout``, variant
        options), its own defaults for the rest."""
        given = {k: v for k, v in options.items()
                 if k in spec.accepted() and k not in STACK_OPTIONS}
        own = spec.resolve(given)
        layer_heads = heads if spec.multi_head else 1
        return spec.make_conv(hidden, hidden // layer_heads, layer_heads,
                              True, **_conv_options(own))

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_attr: Optional[Tensor] = None,
                batch: Optional[Tensor] = None) -> Tensor:
        extra: Dict[str, Any] = {}
        if self.local_spec is not None and edge_attr is not None and \
                "edge_attr" in self.local_spec.forward_args:
            extra["edge_attr"] = edge_attr
        h = self.input(feature_dropout(x, self.dropout, self.training))
        for layer in self.layers:
            h = layer(h, edge_index, batch, **extra)
        return self.head(F.dropout(h, self.dropout, self.training))


def build_encoder(model: ModelArg, in_channels: int, out_channels: int,
                  **options) -> torch.nn.Module:
    """The node encoder of registry model ``model``: the transformer block
    stack for ``graph-transformer``, GPS layers for ``gps``, a
    :class:`ConvStack` otherwise."""
    options = model_options(model, options)
    if options.spec.encoder == "transformer":
        return TransformerStack(in_channels, out_channels, options)
    if options.spec.encoder == "gps":
        return GPSStack(in_channels, out_channels, options)
    return ConvStack(options, in_channels, out_channels)


#: The head options of a graph positional encoding (node and graph tasks).
PE_OPTIONS = ("pe", "pe_dim", "pe_mode")


class PositionalInput(torch.nn.Module):
    r"""The input features with a graph positional encoding ``pe``
    (``[N, pe_dim]``, e.g. from :func:`~tgnn_transformers.transforms.
    graph_positional_encoding`): concatenated, :math:`[\mathbf{x}_i \Vert
    \mathbf{p}_i]` (``mode="concat"``; sparse CSR features stay sparse), or
    added through a learned map, :math:`\mathbf{x}_i + \mathbf{W}
    \mathbf{p}_i` (``mode="add"``; dense features).

    Laplacian eigenvectors (``kind="lap"``) are defined up to their signs,
    so in training every graph of the batch gets a fresh random sign per
    eigenvector at every forward pass (Dwivedi et al.), drawn from the CPU
    generator so that checkpoints resume the same draws.
    """

    def __init__(self, kind: str, dim: int, mode: str, in_channels: int):
        super().__init__()
        if kind not in ("lap", "rw") or mode not in ("concat", "add"):
            raise ValueError(f"PositionalInput: kind must be 'lap' or 'rw' "
                             f"and mode 'concat' or 'add', got kind="
                             f"{kind!r}, mode={mode!r}")
        self.kind, self.dim, self.mode = kind, dim, mode
        self.in_channels = in_channels
        self.proj = torch.nn.Linear(dim, in_channels) \
            if mode == "add" else None

    @property
    def out_channels(self) -> int:
        return self.in_channels + (self.dim if self.mode == "concat" else 0)

    def forward(self, x: Tensor, pe: Optional[Tensor],
                batch: Optional[Tensor] = None) -> Tensor:
        if pe is None or pe.dim() != 2 or pe.size(1) != self.dim or \
                pe.size(0) != x.size(0):
            got = None if pe is None else list(pe.shape)
            raise ValueError(f"pe: this model was built with the {self.kind}"
                             f" positional encoding; forward needs pe of "
                             f"shape [{x.size(0)}, {self.dim}], got {got}")
        if self.kind == "lap" and self.training:
            graphs = 1 if batch is None or batch.numel() == 0 else \
                int(batch.max()) + 1
            signs = (torch.randint(0, 2, (graphs, self.dim)) * 2 - 1).to(
                pe.device, pe.dtype)
            pe = pe * (signs[0] if batch is None else signs[batch])
        if self.mode == "concat":
            return hstack_features(x, pe)
        if x.layout != torch.strided:
            raise ValueError("pe_mode='add' adds to dense input features; "
                             "got a sparse tensor (densify it, or use "
                             "pe_mode='concat', which keeps it sparse)")
        return x + self.proj(pe.to(x.dtype))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.kind!r}, dim={self.dim}, "
                f"mode={self.mode!r})")


def positional_input(head, in_channels: int
                     ) -> Tuple[Optional[PositionalInput], int]:
    """The :class:`PositionalInput` of a task model's head options (``None``
    without ``pe``) and the width of the features it gives."""
    if head.get("pe") is None:
        return None, in_channels
    module = PositionalInput(head["pe"], head.get("pe_dim", 8),
                             head.get("pe_mode", "concat"), in_channels)
    return module, module.out_channels


def _with_encoding(positional: Optional[PositionalInput], x: Tensor,
                   pe: Optional[Tensor], batch: Optional[Tensor]) -> Tensor:
    if positional is not None:
        return positional(x, pe, batch)
    if pe is not None:
        raise ValueError("pe: this model was built without a positional "
                         "encoding (pe=None); build it with pe='lap' or "
                         "'rw' and pe_dim to use one")
    return x


class NodeClassifier(torch.nn.Module):
    """Node classification: the encoder straight to class logits, with a
    graph positional encoding (``pe``, ``pe_dim``, ``pe_mode``, see
    :class:`PositionalInput`) when asked."""

    HEAD_OPTIONS: Tuple[str, ...] = PE_OPTIONS

    def __init__(self, model: ModelArg, in_channels: int, num_classes: int,
                 **options):
        super().__init__()
        options = model_options(model, options, self.HEAD_OPTIONS, "node")
        self.positional, width = positional_input(options.head, in_channels)
        self.encoder = build_encoder(options, width, num_classes)

    @property
    def takes_blocks(self) -> bool:
        """Whether ``forward`` takes sampled ``blocks`` (a conv stack of a
        model whose convs take bipartite input)."""
        return isinstance(self.encoder, ConvStack) and \
            self.encoder.spec.bipartite

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_attr: Optional[Tensor] = None,
                batch: Optional[Tensor] = None, *,
                blocks=None, pe: Optional[Tensor] = None) -> Tensor:
        """Logits of every node; with ``blocks`` (a sampled mini-batch cut
        per layer by
        :func:`~tgnn_transformers.train.sampling.sampled_blocks`, which
        then replaces ``edge_index``) the logits of the leading nodes, each
        layer computed only where the next one reads.  ``pe``: the
        positional encoding of every node of ``x``, for a model built with
        one."""
        x = _with_encoding(self.positional, x, pe, batch)
        if blocks is not None:
            return self.encoder.forward_blocks(x, blocks)
        return self.encoder(x, edge_index, edge_attr, batch)


class GraphClassifier(torch.nn.Module):
    """Graph classification: node encoder, global pooling (``pool``), and
    either an MLP head on the pooled last layer (``readout="last"``) or, as
    in the GIN paper, one linear head per layer on that layer's pooled
    features (input included), summed (``readout="layers"``): shallow layers
    keep the counts of small substructures that deep ones smooth away."""

    HEAD_OPTIONS = ("pool", "readout") + PE_OPTIONS

    def __init__(self, model: ModelArg, in_channels: int, num_classes: int,
                 **options):
        super().__init__()
        options = model_options(model, options, self.HEAD_OPTIONS, "graph")
        self.pool = global_add_pool if options.head["pool"] == "add" else \
            global_mean_pool
        self.readout = options.head["readout"]
        hidden, self.dropout = options["hidden"], options["dropout"]
        self.positional, in_channels = positional_input(options.head,
                                                        in_channels)
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
                batch: Optional[Tensor] = None,
                pe: Optional[Tensor] = None) -> Tensor:
        if batch is None:
            batch = torch.zeros(x.size(0), dtype=torch.long,
                                device=x.device)
        x = _with_encoding(self.positional, x, pe, batch)
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
    ``root_weight`` do not apply (the blocks use the transformer form), nor
    does ``residual`` (which raises).
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
        spec.check_block_attention("text", resolved)
        if resolved.get("residual"):
            raise ValueError("residual=True shapes conv stacks; the text "
                             "task's transformer blocks are residual "
                             "already (their norm and ffn_multiplier are "
                             "the text task's own options)")
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


