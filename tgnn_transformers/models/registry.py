"""The model registry: every model name the package knows, the layer behind
it, and the options it takes, with types, defaults and allowed values.

This is the one place a model is described.  The task models
(:func:`~tgnn_transformers.models.build_model`), the ``tgnn`` command line
(choices, flags and ``tgnn models``), the configuration files, the benchmark
lists and the documentation's table of models all read it.  Adding a model means
adding one :class:`ModelSpec` to :data:`MODELS`; adding an option means one
:class:`Option` in :data:`OPTIONS` and its name in the specs that take it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch_geometric.nn import (MLP, GATConv, GCNConv, GINConv, SAGEConv,
                                TransformerConv)

from ..functional import (PATTERNS, REDUCTIONS, SCORE_NORMALIZATIONS,
                          THRESHOLD_MODES, ScoreOptions)
from ..functional._checks import check_choice
from torch_geometric.nn.dense.linear import Linear

from ..nn import (GINAttentionConv, GPSConv, GraphTransformer,
                  MultiHeadAttentionConv, PNAAttentionConv)
from ..adapters.classifier import PretrainedClassifier
from ..nn.gin_attention_conv import GIN_FORMS
from ..nn.headwise import MLP_NORMS, MLP_ROUNDINGS
from ..nn.pna_attention_conv import SCALERS
from ..nn.positional import POSITIONAL_ENCODINGS
from ..options import (AT_LEAST_ONE, POSITIVE, PROBABILITY, Option,
                       OptionValues, Range, resolve_options)


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------

def _options(*options: Option) -> Dict[str, Option]:
    return {o.name: o for o in options}


#: The attention graph of a token sequence (``--pattern``): the token
#: patterns of :data:`~tgnn_transformers.functional.PATTERNS` with hyphens,
#: but the random one (its edges would differ between the splits' builds).
#: The language model takes the causal ones (``causal``, and the causal
#: halves of ``window`` and ``dilated``).
TEXT_PATTERNS = tuple(p.replace("_", "-") for p in PATTERNS
                      if p != "global_random")


#: Every model and task-head option, by name.
OPTIONS: Dict[str, Option] = _options(
    Option("hidden", int, 64, "hidden width (all heads together)",
           range=AT_LEAST_ONE),
    Option("heads", int, 8, "attention heads of the hidden layers",
           range=AT_LEAST_ONE),
    Option("out_heads", int, 1, "heads of the last layer (averaged)",
           range=AT_LEAST_ONE),
    Option("num_layers", int, 2, "number of layers", range=AT_LEAST_ONE),
    Option("dropout", float, 0.5, "feature dropout", range=PROBABILITY),
    Option("attention_dropout", float, 0.0,
           "dropout on the attention weights", range=PROBABILITY),
    Option("root_weight", bool, True,
           "add a separate map of each node's own features, W_root x_i, "
           "to the aggregate of its neighbours (the ego embedding of "
           "Platonov et al.'s '-sep' models; with self_loops off the "
           "aggregate excludes the node)"),
    Option("mlp_multiplier", float, 0.5,
           "GIN-Attention: hidden width of each head's MLP relative to the "
           "head width (gamma)", range=POSITIVE),
    Option("mlp_norm", str, "layer",
           "GIN-/PNA-Attention: norm inside each head's MLP (LayerNorm, "
           "RMSNorm or none)", choices=MLP_NORMS),
    Option("mlp_dropout", float, 0.0,
           "GIN-Attention: dropout inside each head's MLP",
           range=PROBABILITY),
    Option("mlp_rounding", str, "round",
           "GIN-/PNA-Attention: the MLP hidden width multiplier x head width"
           " rounded to the nearest int, or down (the paper's code)",
           choices=MLP_ROUNDINGS),
    Option("gin_form", str, "one-plus-eps",
           "GIN-Attention: the node's own term, (1 + eps) v_i (GIN) or "
           "eps v_i (the paper's code)", choices=GIN_FORMS),
    Option("value_proj", bool, True,
           "GIN-/PNA-Attention: project the values (off: the messages are "
           "the features, one slice per head; needs in = heads x head "
           "width)"),
    Option("normalization", str, "softmax",
           "GIN-/PNA-Attention scores: softmax, non-normalised ReLU "
           "(sum-like, keeps degree information) or the raw scores",
           choices=SCORE_NORMALIZATIONS),
    Option("threshold", float, None,
           "GIN-/PNA-Attention: threshold of the attention weights "
           "(see threshold_mode)"),
    Option("top_k", int, None,
           "GIN-/PNA-Attention: keep the top_k largest weights per node and"
           " head (threshold_mode drop)", range=AT_LEAST_ONE),
    Option("threshold_mode", str, "drop",
           "GIN-/PNA-Attention: drop weights below threshold / outside "
           "top_k, or the paper's relu(w - threshold), 1[w > threshold], or"
           " 1 on the top_k_fraction largest (after attention dropout)",
           choices=THRESHOLD_MODES),
    Option("top_k_fraction", float, None,
           "GIN-/PNA-Attention: fraction of each node's in-degree kept by "
           "threshold_mode top-k-fraction", range=Range(0, 1,
                                                        open_low=True)),
    Option("aggregators", str, ("mean", "max", "min", "std"),
           "PNA-Attention: attention-weighted aggregators",
           choices=REDUCTIONS, many=True, unique=True),
    Option("scalers", str, SCALERS, "PNA-Attention: degree scalers",
           choices=SCALERS, many=True, unique=True),
    Option("mixer", str, "linear", "PNA-Attention: per-head map of the "
           "aggregates", choices=("linear", "mlp")),
    Option("mixer_multiplier", float, 1.0,
           "PNA-Attention: hidden width of the MLP mixer relative to the "
           "head width", range=POSITIVE),
    Option("include_self", bool, True,
           "PNA-Attention: the node's own value enters the mixer"),
    Option("attention", str, "mha",
           "graph-transformer, gps: the attention conv of each block",
           choices=("mha", "gin-attention", "pna-attention")),
    Option("attention_graph", str, "complete",
           "gps: what the attention attends over: the complete graph of "
           "each graph of the batch (global), or the input graph's edges "
           "(sparse)", choices=("complete", "local")),
    Option("ffn_multiplier", float, 2.0,
           "width of the feed-forward block relative to the model width: "
           "after each attention (graph-transformer, gps) or each conv of "
           "a residual conv stack; 0: no feed-forward block",
           range=Range(0)),
    Option("norm", str, "layer",
           "norm of each block: graph-transformer (pre-norm), gps (after "
           "each residual sum), conv stacks (on each residual branch and "
           "before the head with residual, else after each hidden conv)",
           choices=("layer", "rms", "batch", None)),
    Option("output_layer", str, "same",
           "GIN-/PNA-Attention conv stacks (plain form): the last layer, "
           "which maps to the outputs (class logits): a conv of the model "
           "itself (same), or a plain multi-head attention conv (mha), so "
           "the outputs are an attention-weighted average of linear maps "
           "of the neighbours, as in GAT, instead of a per-head MLP of the "
           "aggregate (benchmarks/results/ablation.md)",
           choices=("same", "mha")),
    Option("residual", bool, False,
           "conv stacks: Platonov et al.'s residual form, an input linear "
           "layer, x + FFN(conv(norm(x))) per layer, a final norm and a "
           "linear head (GELU; out_heads does not apply)"),
    Option("edge_dim", int, None, "width of the edge features attended with",
           range=AT_LEAST_ONE, user=False),
    Option("delta", float, None,
           "PNA: mean log(in-degree + 1) of the training graphs",
           range=POSITIVE, user=False),
    # task heads
    Option("pool", str, "add", "graph task: global pooling",
           choices=("add", "mean")),
    Option("readout", str, "last",
           "graph task: classify the pooled last layer, or sum one linear "
           "head per layer as in GIN", choices=("last", "layers")),
    Option("decoder", str, "dot", "link task: edge decoder",
           choices=("dot", "mlp")),
    Option("pos", str, "sinusoidal",
           "text task: token positions (added sinusoidal or learned "
           "encodings, rotary queries/keys, T5 relative bias, or none)",
           choices=POSITIONAL_ENCODINGS),
    Option("pooling", str, "auto", "text and finetune tasks: classify the "
           "[CLS] token, or the mean or the feature-wise maximum of the "
           "tokens; auto: [CLS] where the attention pattern lets it hear "
           "every token within the model's layers (full, global-window), "
           "the mean otherwise (and for pretrained encoders)",
           choices=("auto", "cls", "mean", "max")),
    Option("pattern", str, "full", "text and lm tasks: attention graph of "
           "the tokens (lm: causal, or the causal half of window or "
           "dilated)", choices=TEXT_PATTERNS),
    Option("window", int, 2, "text and lm tasks: half width of the window, "
           "dilated, global-window and binary-partition patterns (lm: the "
           "tokens back each token sees)", range=Range(0)),
    Option("block_size", int, 64, "lm task: tokens per training block, and "
           "the longest context the model reads", range=AT_LEAST_ONE),
    Option("bias", bool, True, "lm task: biases in the linear maps and "
           "norms (nanoGPT's Shakespeare runs: none)"),
    Option("pe", str, None,
           "node and graph tasks: graph positional encoding of every node, "
           "Laplacian eigenvectors (lap; random signs in training) or "
           "random-walk return probabilities (rw), computed once per data "
           "set and cached in the data root", choices=("lap", "rw", None)),
    Option("pe_dim", int, 8, "node and graph tasks: eigenvectors (lap) or "
           "random-walk steps (rw) of --pe", range=AT_LEAST_ONE),
    Option("pe_mode", str, "concat",
           "node and graph tasks: concatenate the encoding to the input "
           "features, or add a learned linear map of it to them (sparse "
           "features are densified)", choices=("concat", "add")),
    # pretrained encoders (finetune task)
    Option("adapter", str, "sparse-gin",
           "finetune task: what trains besides the head (Sparse GIN "
           "adapter, LoRA at its budget, the head alone, everything)",
           choices=("sparse-gin", "lora", "head", "full")),
    Option("adapter_hidden", int, 8,
           "finetune task: width of each layer's Sparse GIN MLP",
           range=AT_LEAST_ONE),
    Option("adapter_top_k", int, 4,
           "finetune task: keys kept per query in the adapter's graph",
           range=AT_LEAST_ONE),
)


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------

ConvFactory = Callable[..., torch.nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """A model name and everything the package needs to build and call it.

    Conv-stack models (all but ``graph-transformer`` and ``gps``) are built
    by ``make_conv(in_channels, out_channels, heads, concat, **options)``
    one layer at a time; its output width is ``heads * out_channels`` with
    ``concat`` else ``out_channels``.
    """
    name: str
    layer: type
    summary: str
    family: str
    """``"attention"`` (this package) or ``"baseline"`` (PyG's own)"""
    options: Tuple[str, ...]
    make_conv: Optional[ConvFactory] = None
    forward_args: Tuple[str, ...] = ()
    """which of ``edge_attr``, ``batch`` the layer's forward takes"""
    sparse_features: bool = True
    """accepts sparse CSR input features (projects before aggregating)"""
    bipartite: bool = True
    """its convs take ``(x_src, x_dst)`` pairs, so sampled mini-batches run
    layer by layer on bipartite blocks"""
    multi_head: bool = True
    compared_on: Tuple[str, ...] = ("node", "graph")
    """tasks on which the accuracy report runs it (a baseline is run where
    its paper reports the published anchor)"""
    tasks: Tuple[str, ...] = ("node", "graph", "link")
    """the tasks whose heads can run it (the text and lm tasks hold an
    attention conv in transformer blocks: only the attention convs name
    them)"""
    presets: Mapping[str, Mapping[str, Any]] = field(
        default_factory=dict, hash=False, compare=False)
    """named option sets (``tgnn train --preset NAME``), e.g. ``"paper"``:
    the published code's configuration; explicit options override them"""
    encoder: str = "conv"
    """the node encoder the task models build: ``"conv"`` (a stack of
    ``make_conv`` layers), ``"transformer"`` (graph-transformer blocks) or
    ``"gps"`` (GPS layers)"""
    defaults: Mapping[str, Any] = field(default_factory=dict, hash=False,
                                        compare=False)
    """this model's defaults where they differ from the option table's
    (one option, one idea, but e.g. ``norm`` is ``"layer"`` in a graph
    transformer, none between the layers of a conv stack)"""

    @property
    def edge_features(self) -> bool:
        return "edge_dim" in self.options

    def default(self, name: str) -> Any:
        """The default of option ``name`` for this model."""
        return self.defaults.get(name, OPTIONS[name].default)

    def check_block_attention(self, task: str,
                              options: Mapping[str, Any] = {}) -> None:
        """Raises a ``ValueError`` unless this model is an attention conv a
        transformer block can hold (what the ``text`` and ``lm`` tasks
        build), with ``options`` that do not shape a conv stack."""
        if self.family != "attention" or self.make_conv is None:
            from ..nn.graph_transformer import ATTENTION_CONVS
            raise ValueError(f"the {task} task runs an attention conv "
                             f"inside transformer blocks: model must be one"
                             f" of {', '.join(ATTENTION_CONVS)}; got "
                             f"{self.name!r}")
        if options.get("output_layer", "same") != "same":
            raise ValueError(f"output_layer chooses the last conv of a conv "
                             f"stack; the {task} task's transformer blocks "
                             f"end in the task's own head: it needs "
                             f"output_layer='same', got "
                             f"{options['output_layer']!r}")

    def accepted(self, options: Mapping[str, Any] = {}) -> Tuple[str, ...]:
        """The option names this model takes, given the options chosen so
        far (a graph transformer also takes its attention conv's options; a
        gps model those of its attention conv and of its local conv)."""
        names = self.options
        for owner in ("attention", "local"):
            if owner not in names:
                continue
            inner = options.get(owner, self.default(owner))
            if inner is None:
                continue
            names = names + tuple(n for n in MODELS[inner].options
                                  if n in VARIANT_OPTIONS
                                  and n not in names)
        return names

    def preset(self, name: str,
               options: Mapping[str, Any] = {}) -> Dict[str, Any]:
        """The options of preset ``name`` (a graph transformer takes its
        attention conv's, given the options chosen so far); a
        ``ValueError`` names the presets the model has."""
        presets = dict(self.presets)
        if "attention" in self.options:
            inner = MODELS[options.get("attention",
                                       self.default("attention"))]
            for key, values in inner.presets.items():
                presets.setdefault(key, {k: v for k, v in values.items()
                                         if k in VARIANT_OPTIONS})
        if name not in presets:
            raise ValueError(
                f"preset must be one of the presets of model {self.name!r}"
                f" ({', '.join(map(repr, presets)) or 'it has none'}), got "
                f"{name!r}")
        return dict(presets[name])

    def conv_preset(self, name: str) -> Dict[str, Any]:
        """The options preset ``name`` gives the conv itself, as keyword
        arguments of its class (those of the stack around it, such as
        ``output_layer``, left out)."""
        return {k: v for k, v in self.preset(name).items()
                if k in VARIANT_OPTIONS}

    def resolve(self, options: Mapping[str, Any],
                head: Tuple[str, ...] = (),
                task: Optional[str] = None) -> "ModelOptions":
        """``options`` checked against this model (and the names in
        ``head`` against the task model's head, ``task`` naming it in
        messages), with the registry default of every option not given:
        the :class:`ModelOptions` the task models are built from.  Raises
        on an option the model does not take, naming the option, the model
        and what it takes.  Resolved options come back unchanged."""
        if isinstance(options, ModelOptions):
            if options.model != self.name:
                raise ValueError(f"options resolved for model "
                                 f"{options.model!r} given to model "
                                 f"{self.name!r}")
            return options
        options = dict(options)
        given_head = {k: options.pop(k) for k in head if k in options}
        owner = f"model {self.name!r}"
        resolved = resolve_options(options, OPTIONS,
                                   self.accepted(options), owner,
                                   self.defaults)
        heads = resolved.get("heads", 1)
        if resolved.get("hidden", heads) % heads:
            raise ValueError(f"option 'heads' of {owner} must divide "
                             f"hidden={resolved['hidden']}, got "
                             f"heads={heads}")
        if self.encoder == "conv" and resolved.get("ffn_multiplier") and \
                not resolved.get("residual"):
            raise ValueError(
                f"option 'ffn_multiplier' of {owner} adds a feed-forward "
                f"block to each layer of a residual stack: it needs "
                f"residual=True (or ffn_multiplier=0), got ffn_multiplier="
                f"{resolved['ffn_multiplier']} with residual=False")
        if resolved.get("output_layer", "same") != "same" and \
                resolved.get("residual"):
            raise ValueError(
                f"option 'output_layer' of {owner} chooses the last conv of"
                f" a plain stack; a residual stack ends in a linear head: "
                f"it needs residual=False (or output_layer='same'), got "
                f"output_layer={resolved['output_layer']!r} with "
                f"residual=True")
        if "threshold_mode" in resolved:
            try:
                ScoreOptions(**{k: resolved[k] for k in SCORES})
            except ValueError as exc:
                raise ValueError(f"{owner}: {exc}") from None
        head_values = resolve_options(given_head, OPTIONS, head,
                                      f"the {task or 'task'} model's head")
        return ModelOptions(self.name, resolved, head_values)


class ModelOptions(OptionValues):
    """A model's checked options (a ``Mapping``), with its task model's
    head options in :attr:`head`: what :meth:`ModelSpec.resolve` returns
    and the task models are built from."""

    def __init__(self, model: str, values: Mapping[str, Any],
                 head: Mapping[str, Any] = {}):
        super().__init__(values)
        self.model = model
        self.head = OptionValues(head)

    @property
    def spec(self) -> ModelSpec:
        return MODELS[self.model]

    def variant(self) -> Dict[str, Any]:
        """The options of the attention variant (those a graph
        transformer hands to its attention conv)."""
        return {k: v for k, v in self.items() if k in VARIANT_OPTIONS}

    def __repr__(self) -> str:
        return (f"ModelOptions({self.model!r}, {dict(self)!r}, head="
                f"{dict(self.head)!r})")


SHARED = ("hidden", "num_layers", "dropout")
MULTI_HEAD = SHARED + ("heads", "out_heads")
ATTENTION_SHARED = MULTI_HEAD + ("attention_dropout", "root_weight",
                                 "edge_dim")
#: What every conv stack takes besides its convs' options: the residual
#: form of Platonov et al. (ICLR 2023) and its norm and feed-forward block.
STACK = ("residual", "norm", "ffn_multiplier")
#: The stack option of the convs whose own last layer is a per-head MLP of
#: the aggregate (GIN-, PNA-Attention): which conv maps to the outputs.
OUTPUT_LAYER = ("output_layer", )
#: A conv stack has no norm and no feed-forward block unless asked; PyG's
#: GCN, GAT and GIN have no root weight unless asked.
_STACK_DEFAULTS = {"norm": None, "ffn_multiplier": 0.0}
_NO_ROOT = {**_STACK_DEFAULTS, "root_weight": False}
#: What the graph-aware convs share: the score modes and sparsification.
SCORES = ScoreOptions.field_names()

#: The published code's ("xgpt", Graph-Aware-Transformers) configuration of
#: each graph-aware conv, as far as it differs from the defaults or matters;
#: ``tgnn train --preset paper`` applies it under the explicit flags (with
#: the conv itself as a stack's last layer, whatever a data set's defaults
#: say: :func:`_paper`).
PAPER_PRESETS: Dict[str, Dict[str, Any]] = {
    # GINLayer: eps x + A x, Linear -> Dropout(0.1) -> RMSNorm -> SiLU ->
    # Linear of width int(0.5 C), values = the hidden states' head slices,
    # softmax of the sharpened scores (its README's GIN-Transformer).
    "gin-attention": dict(gin_form="eps", mlp_multiplier=0.5,
                          mlp_norm="rms", mlp_dropout=0.1,
                          mlp_rounding="floor", value_proj=False,
                          normalization="softmax", threshold_mode="drop"),
    # LlamaAttentionPNA: [sum, mean, max, var] -> Linear -> SiLU -> Linear
    # of width int(2 C) per head; no scalers, no own term.
    "pna-attention": dict(aggregators=("sum", "mean", "max", "var"),
                          scalers=("identity", ), mixer="mlp",
                          mixer_multiplier=2.0, mlp_norm=None,
                          mlp_rounding="floor", include_self=False,
                          normalization="softmax", threshold_mode="drop"),
}


def _paper(model: str) -> Dict[str, Dict[str, Any]]:
    """The ``paper`` preset of a graph-aware conv model: the conv options
    of :data:`PAPER_PRESETS` and the conv itself as the last layer."""
    return {"paper": {**PAPER_PRESETS[model], "output_layer": "same"}}


def _attention_conv(cls: type, **fixed) -> ConvFactory:
    """Factory of one of the package's convs from registry options."""
    def make(in_channels, out_channels, heads, concat, *,
             attention_dropout=0.0, **options):
        return cls(in_channels, out_channels, heads=heads, concat=concat,
                   dropout=attention_dropout, **fixed, **options)
    return make


class WithRootWeight(torch.nn.Module):
    r"""A PyG conv without a root weight, plus one:
    :math:`\mathbf{x}'_i = \mathrm{conv}(\mathbf{x}, \mathcal{E})_i +
    \mathbf{W}_{\mathrm{root}} \mathbf{x}_i` (the ego embedding of the
    '-sep' models of Platonov et al., ICLR 2023: the node's own features
    enter apart from the aggregate of its neighbours).  Takes ``(x_src,
    x_dst)`` pairs where the conv does."""

    def __init__(self, conv: torch.nn.Module, in_channels: int,
                 out_channels: int):
        super().__init__()
        self.conv = conv
        self.lin_root = Linear(in_channels, out_channels, bias=False)

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()
        self.lin_root.reset_parameters()

    def forward(self, x, edge_index, *args, **kwargs):
        x_dst = x[1] if isinstance(x, tuple) else x
        return self.conv(x, edge_index, *args, **kwargs) + \
            self.lin_root(x_dst)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.conv})"


def _gat(in_channels, out_channels, heads, concat, *, attention_dropout=0.0,
         edge_dim=None, root_weight=False):
    # GATConv's own ``residual`` is a root weight: a bias-free linear map of
    # x_i added to the output.
    return GATConv(in_channels, out_channels, heads=heads, concat=concat,
                   dropout=attention_dropout, edge_dim=edge_dim,
                   residual=root_weight)


def _transformer_conv(in_channels, out_channels, heads, concat, *,
                      attention_dropout=0.0, edge_dim=None,
                      root_weight=True):
    return TransformerConv(in_channels, out_channels, heads=heads,
                           concat=concat, dropout=attention_dropout,
                           edge_dim=edge_dim, root_weight=root_weight)


def _gin(in_channels, out_channels, heads, concat, *, root_weight=False):
    # The GIN paper's layer: a 2-layer MLP with batch norm, trainable eps.
    conv = GINConv(MLP([in_channels, out_channels, out_channels]),
                   train_eps=True)
    return WithRootWeight(conv, in_channels, out_channels) if root_weight \
        else conv


def _gcn(in_channels, out_channels, heads, concat, *, root_weight=False):
    conv = GCNConv(in_channels, out_channels)
    return WithRootWeight(conv, in_channels, out_channels) if root_weight \
        else conv


def _sage(in_channels, out_channels, heads, concat):
    # SAGEConv always has its root weight (lin_r): it is '-sep' by design.
    return SAGEConv(in_channels, out_channels)


def _specs(*specs: ModelSpec) -> Dict[str, ModelSpec]:
    return {s.name: s for s in specs}


_OURS = ("edge_attr", "batch")
#: The tasks of the package's attention convs: every one, the language
#: model included (the baselines are not causal attention).
_WITH_LM = ("node", "graph", "link", "text", "lm")

#: Every model, by name: the package's attention models first, then the
#: PyG baselines they are measured against.
MODELS: Dict[str, ModelSpec] = _specs(
    ModelSpec("mha", MultiHeadAttentionConv,
              "multi-head dot-product attention (TransformerConv form)",
              "attention", ATTENTION_SHARED + STACK,
              _attention_conv(MultiHeadAttentionConv, out_proj=False), _OURS,
              tasks=_WITH_LM, defaults=_STACK_DEFAULTS),
    ModelSpec("gin-attention", GINAttentionConv,
              "attention weights as adjacency, GIN update per head",
              "attention", ATTENTION_SHARED + ("mlp_multiplier", "mlp_norm",
                                                "mlp_dropout", "mlp_rounding",
                                                "gin_form", "value_proj")
              + SCORES + STACK + OUTPUT_LAYER,
              _attention_conv(GINAttentionConv, out_proj=False), _OURS,
              tasks=_WITH_LM,
              presets=_paper("gin-attention"),
              defaults=_STACK_DEFAULTS),
    ModelSpec("pna-attention", PNAAttentionConv,
              "attention-weighted PNA aggregators with degree scalers",
              "attention", ATTENTION_SHARED + ("aggregators", "scalers",
                                                "delta", "mixer",
                                                "mixer_multiplier",
                                                "mlp_norm", "mlp_rounding",
                                                "include_self", "value_proj")
              + SCORES + STACK + OUTPUT_LAYER,
              _attention_conv(PNAAttentionConv, out_proj=False), _OURS,
              tasks=_WITH_LM,
              presets=_paper("pna-attention"),
              defaults=_STACK_DEFAULTS),
    ModelSpec("graph-transformer", GraphTransformer,
              "pre-norm transformer blocks around an attention conv",
              "attention",
              ("hidden", "heads", "num_layers", "dropout",
               "attention_dropout", "root_weight", "edge_dim", "attention",
               "ffn_multiplier", "norm"), None, _OURS,
              encoder="transformer", defaults={"root_weight": False}),
    ModelSpec("gps", GPSConv,
              "GraphGPS layers: a local conv and attention in parallel, "
              "norms and a feed-forward block",
              "attention",
              ("hidden", "heads", "num_layers", "dropout",
               "attention_dropout", "edge_dim", "local", "attention",
               "attention_graph", "ffn_multiplier", "norm"), None, _OURS,
              tasks=("node", "graph", "link"), encoder="gps",
              defaults={"norm": "batch"}),
    ModelSpec("gcn", GCNConv, "graph convolution (Kipf & Welling)",
              "baseline", SHARED + ("root_weight", ) + STACK, _gcn,
              multi_head=False, bipartite=False, defaults=_NO_ROOT),
    ModelSpec("gat", GATConv, "graph attention (Velickovic et al.)",
              "baseline", MULTI_HEAD + ("attention_dropout", "edge_dim",
                                        "root_weight") + STACK,
              _gat, ("edge_attr", ), defaults=_NO_ROOT),
    ModelSpec("sage", SAGEConv, "GraphSAGE, mean aggregation", "baseline",
              SHARED + STACK, _sage, sparse_features=False,
              multi_head=False, compared_on=(), defaults=_STACK_DEFAULTS),
    ModelSpec("gin", GINConv, "graph isomorphism network (Xu et al.)",
              "baseline", SHARED + ("root_weight", ) + STACK, _gin,
              sparse_features=False, multi_head=False,
              compared_on=("graph", ), defaults=_NO_ROOT),
    ModelSpec("transformerconv", TransformerConv,
              "PyG's TransformerConv", "baseline",
              ATTENTION_SHARED + STACK, _transformer_conv, ("edge_attr", ),
              compared_on=("node", ), defaults=_STACK_DEFAULTS),
    ModelSpec("minilm", PretrainedClassifier,
              "pretrained all-MiniLM-L6-v2 (6 layers, 384 wide) with an "
              "adapter", "pretrained",
              ("dropout", "adapter", "adapter_hidden", "adapter_top_k"),
              compared_on=("finetune", ), tasks=("finetune", )),
)


#: Options that belong to one attention variant, beyond what every
#: attention conv takes (a graph transformer takes those of the attention
#: conv it is built with).
VARIANT_OPTIONS: Tuple[str, ...] = tuple(dict.fromkeys(
    name for spec in MODELS.values()
    if spec.family == "attention" and spec.make_conv is not None
    for name in spec.options
    if name not in ATTENTION_SHARED + STACK + OUTPUT_LAYER))

#: The local convs of a gps model: every conv-stack model (or none).
OPTIONS["local"] = Option(
    "local", str, "gin", "gps: the local message-passing conv beside the "
    "attention (a conv model of the registry; none: attention only)",
    choices=tuple(n for n, s in MODELS.items() if s.encoder == "conv"
                  and "node" in s.tasks) + (None, ))


def preset_names() -> List[str]:
    """Every preset name some model has (the ``--preset`` choices)."""
    return sorted({p for s in MODELS.values() for p in s.presets})


def get_model(name: str) -> ModelSpec:
    """The spec of model ``name``; a ``ValueError`` lists the known ones."""
    return MODELS[check_choice("model", name, MODELS)]


def model_names(family: Optional[str] = None,
                compared_on: Optional[str] = None) -> List[str]:
    """Model names in registry order, optionally of one family or only
    those the accuracy report runs on task ``compared_on``."""
    return [n for n, s in MODELS.items() if family in (None, s.family)
            and (compared_on is None or compared_on in s.compared_on)]


def _default_text(option: Option, spec: ModelSpec) -> str:
    value = spec.default(option.name)
    if option.many:
        return ",".join(value)
    return "none" if value is None else str(value)


def models_table() -> str:
    """The markdown table of models printed by ``tgnn models`` and kept in
    ``docs/guides/command-line.md``: name, layer, what it is, and its own options (beyond
    ``hidden``, ``num_layers``, ``dropout``) with defaults."""
    lines = ["| model | layer | what it is | options (default) |",
             "|---|---|---|---|"]
    for spec in MODELS.values():
        own = [n for n in spec.options if n not in SHARED]
        text = ", ".join(f"`{n}`" if not OPTIONS[n].user or
                         spec.default(n) is None else
                         f"`{n}`={_default_text(OPTIONS[n], spec)}"
                         for n in own)
        if spec.family == "baseline":
            layer = f"PyG `{spec.layer.__name__}`"
        else:
            layer = f"`{spec.layer.__name__}`"
        if spec.presets:
            text += "; presets: " + ", ".join(f"`{p}`" for p in spec.presets)
        lines.append(f"| `{spec.name}` | {layer} | {spec.summary} | "
                     f"{text or '-'} |")
    return "\n".join(lines)


__all__ = ["Option", "Range", "ModelSpec", "ModelOptions", "OPTIONS",
           "MODELS", "get_model", "model_names", "models_table",
           "preset_names", "PAPER_PRESETS"]
