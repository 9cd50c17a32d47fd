r"""What every attention conv of the package shares: the constructor
arguments, the query, key, value and edge projections, the input checks,
the call (``forward``), and the output stage (head concatenation or
averaging, output projection, root weight and gate).

Subclasses differ only in their own keyword-only options, how the scores
become weights (:attr:`AttentionConvBase.scores`,
:meth:`AttentionConvBase.score_scale`), how values are reduced
(:meth:`AttentionConvBase.reduction`), and how they turn the kernel's
per-head aggregate into the new per-head node state
(:meth:`AttentionConvBase._update_heads`); they never compute attention
themselves.  The signature and docstring machinery lives in
:mod:`._signature`, the route through PyG's ``propagate`` (explain tools,
hooks) in :mod:`._explain`.
"""
from __future__ import annotations

import inspect
from typing import Any, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import SparseTensor
from torch_geometric.utils import is_sparse

from ..functional import (BACKENDS, EdgeAttention, ScoreOptions,
                          adjacency_size, adjacency_to_edge_index,
                          check_edge_index_layout, edge_attention,
                          weights_on_adjacency)
from ..functional._checks import check_choice
from ._explain import PropagatedAttention
from ._signature import complete_conv_class, expand_shared_doc
from .kv_cache import KeyValueCache

ChannelSpec = Union[int, Tuple[int, int]]
NodeFeatures = Union[Tensor, Tuple[Tensor, Optional[Tensor]]]
ConvOutput = Union[Tensor, Tuple[Tensor, Any]]

_MESSAGE_PASSING_ARGS = frozenset(
    inspect.signature(MessagePassing.__init__).parameters) - {"self"}


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def check_value_proj(value_proj: Any) -> None:
    """GIN- and PNA-Attention's ``value_proj`` is a bool."""
    if not isinstance(value_proj, bool):
        raise TypeError(f"value_proj must be a bool, got {value_proj!r}")


class Attended(NamedTuple):
    """What :meth:`AttentionConvBase._attend` hands to a subclass."""
    x_dst: Tensor
    bipartite: bool
    edge_index: Tensor  # the input edges (a sparse adjacency's, converted)
    value: Tensor  # [N_src, H, C] per-head values
    attention: EdgeAttention  # the kernel's (out, alpha, edge_index)
    need_weights: bool
    adjacency: Any  # the sparse adjacency given instead of edge_index
    self_value: Optional[Tensor]  # [N_dst, H, C] the targets' own values,
    # when they are among the sources (None: bipartite, compute them)


class AttentionConvBase(PropagatedAttention, MessagePassing):
    r"""Base of :class:`MultiHeadAttentionConv`, :class:`GINAttentionConv`
    and :class:`PNAAttentionConv`; not meant to be used on its own.

    It owns the constructor arguments every attention conv shares, with the
    names, order and defaults of PyG's ``TransformerConv`` (positional as
    there), plus ``out_proj``, ``backend`` and ``rope``:

    ``(in_channels, out_channels, heads=1, concat=True, beta=False,
    dropout=0.0, edge_dim=None, bias=True, root_weight=True,
    out_proj=False, backend="auto", rope=False, **kwargs)``

    A subclass adds its own options as keyword-only arguments of an
    ``__init__(self, *args, <options>, **kwargs)`` that forwards the rest
    here; its ``inspect.signature`` and docstring are completed with the
    shared arguments automatically.

    Parameter names follow ``TransformerConv`` (``lin_query``, ``lin_key``,
    ``lin_value``, ``lin_edge``, ``lin_skip``, ``lin_beta``) so checkpoints
    move between the two.

    **Explaining.**  PyG's explain tools and message-passing hooks see the
    attention weights as the messages (see :mod:`tgnn_transformers.nn._explain`).

    **Per-graph caches.**  What the layers derive from an ``edge_index``
    (its CSR index, whether it is a batch of token graphs, its padded
    layout) is computed once per tensor and reused while the tensor is
    unchanged (its in-place version counter).  An edit behind autograd's
    back (through a NumPy view or ``.data``) is not seen: clone the tensor
    before editing it, or call
    :func:`tgnn_transformers.functional.clear_graph_cache`.

    **Decoding.**  With ``cache=`` a
    :class:`~tgnn_transformers.nn.KeyValueCache`, ``forward`` takes only
    new nodes and attends over the cached ones (autoregressive decoding).

    Args:
        {shared_args}
    """

    #: How this layer's scores become weights (GIN- and PNA-Attention take
    #: the options; plain attention is the softmax).
    scores: ScoreOptions = ScoreOptions()

    def __init__(
        self,
        in_channels: ChannelSpec,
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        beta: bool = False,
        dropout: float = 0.0,
        edge_dim: Optional[int] = None,
        bias: bool = True,
        root_weight: bool = True,
        out_proj: bool = False,
        backend: str = "auto",
        rope: Any = False,
        **kwargs,
    ):
        unknown = sorted(set(kwargs) - _MESSAGE_PASSING_ARGS)
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword "
                            f"argument(s) {', '.join(map(repr, unknown))}")
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        _positive_int(out_channels, "out_channels")
        _positive_int(heads, "heads")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        check_choice("backend", backend, BACKENDS)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.concat = concat
        self.beta = beta and root_weight
        self.root_weight = root_weight
        self.dropout = dropout
        self.edge_dim = edge_dim
        self.backend = backend
        self.use_out_proj = out_proj
        # False once a subclass drops W_V (_drop_value_projection).
        self.value_proj = True
        # [H] multiplier of each head's output before the heads are
        # combined (1 keeps a head, 0 removes it); set by
        # tgnn_transformers.inspect.mask_heads, None otherwise.
        self.head_mask: Optional[Tensor] = None
        self.rope = _rope_module(rope, out_channels)

        src_channels, dst_channels = ((in_channels, in_channels) if
                                      isinstance(in_channels, int) else
                                      tuple(in_channels))
        width = heads * out_channels
        self.lin_key = Linear(src_channels, width, bias=bias)
        self.lin_query = Linear(dst_channels, width, bias=bias)
        self.lin_value = Linear(src_channels, width, bias=bias)
        if edge_dim is not None:
            self.lin_edge = Linear(edge_dim, width, bias=False)
        else:
            self.register_parameter("lin_edge", None)

        out_width = width if concat else out_channels
        if out_proj:
            self.out_proj = Linear(out_width, out_width, bias=bias)
        else:
            self.register_parameter("out_proj", None)
        if root_weight:
            self.lin_skip = Linear(dst_channels, out_width, bias=bias)
        else:
            self.register_parameter("lin_skip", None)
        if self.beta:
            self.lin_beta = Linear(3 * out_width, 1, bias=False)
        else:
            self.register_parameter("lin_beta", None)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        complete_conv_class(cls, AttentionConvBase.__init__)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for module in (self.lin_key, self.lin_query, self.lin_value,
                       self.lin_edge, self.out_proj, self.lin_skip,
                       self.lin_beta):
            if module is not None:
                module.reset_parameters()

    # PyG's TransformerConv always owns ``lin_skip``, used or not.  Dropping
    # the unused weights on load lets its checkpoints load with strict=True.
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self.lin_skip is None:
            for name in list(state_dict):
                if name.startswith(prefix + "lin_skip."):
                    del state_dict[name]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __prepare_scriptable__(self):
        # torch.jit.script calls this on the module and on every submodule
        # before compiling anything.
        raise RuntimeError(
            f"{type(self).__name__} does not support TorchScript "
            "(torch.jit.script): its attention picks a kernel from the graph "
            "at run time and caches per-graph index data in Python.  Use "
            "torch.compile(model) instead; it gives the same outputs.")

    # ------------------------------------------------------------------
    # What subclasses choose
    # ------------------------------------------------------------------
    def score_scale(self) -> Union[float, Tensor]:
        r"""The factor of the dot products, :math:`1/\sqrt{C}`."""
        return self.out_channels**-0.5

    def reduction(self):
        """The reduction(s) of the weighted values (see
        :func:`~tgnn_transformers.functional.attention_aggregate`)."""
        return "sum"

    def _update_heads(self, attended: Attended) -> Tensor:
        """The kernel's per-head aggregate -> ``[N_dst, H, C']`` per-head
        node state, before the output stage."""
        return attended.attention.out

    # ------------------------------------------------------------------
    # The call
    # ------------------------------------------------------------------
    def forward(
        self,
        x: NodeFeatures,
        edge_index: Union[Tensor, SparseTensor],
        edge_attr: Optional[Tensor] = None,
        batch: Optional[Tensor] = None,
        return_attention_weights: Optional[bool] = None,
        *,
        pos: Optional[Union[Tensor, Tuple[Tensor, Tensor]]] = None,
        attn_bias: Optional[Tensor] = None,
        cache: Optional[KeyValueCache] = None,
    ) -> ConvOutput:
        r"""
        Args:
            x: node features ``[N, F]``, or a ``(x_src, x_dst)`` pair.
            edge_index: ``[2, E]`` edges ``j -> i`` (row 0 the sources), or
                the transposed sparse adjacency ``adj_t`` ``[N_dst, N_src]``
                as in PyG (a ``torch.sparse`` COO or CSR tensor or a
                ``torch_sparse.SparseTensor``, entry ``(i, j)`` the edge
                ``j -> i``); an adjacency's conversion to edges is cached on
                it.
            edge_attr: ``[E, edge_dim]`` edge features (with ``edge_dim``),
                in the order of ``edge_index``'s columns or of the
                adjacency's (row-major) entries.
            batch: PyG batch vector; lets the dense path recognise token
                graphs of different lengths.
            return_attention_weights: if ``True``, also return the weights
                ``alpha`` ``[E, H]`` (before dropout): as
                ``(edge_index, alpha)`` for an ``edge_index``, as
                ``(adj_t with alpha as values, alpha)`` for a
                ``torch.sparse`` adjacency and as ``adj_t`` with ``alpha``
                as values for a ``SparseTensor``.  With GIN-Attention's
                ``threshold`` / ``top_k`` these describe the kept subgraph.
            pos: ``[N]`` integer node positions (a ``(pos_src, pos_dst)``
                pair for bipartite inputs), for a layer built with
                ``rope``; queries and keys are rotated after projection.
            attn_bias: ``[E, H]`` additive score bias, one per edge (in the
                order of ``edge_attr``) and head, added to the scores
                before the softmax; ``-inf`` masks an edge (relative
                position biases, Graphormer's spatial encodings).  A
                boolean ``[E, H]`` tensor is a mask with the convention of
                ``scaled_dot_product_attention``: ``True`` attends,
                ``False`` masks.  It takes the sparse path
                (``backend="dense"`` raises).
            cache: a :class:`~tgnn_transformers.nn.KeyValueCache`: ``x``
                (``[N_new, F]``) holds only new nodes, their keys and
                values are appended to the cache, and ``edge_index`` runs
                from the cached nodes and the new ones (numbered after the
                cached) to the new ones; ``pos`` are the new nodes'
                positions.
        """
        if isinstance(batch, bool):
            raise TypeError(
                "batch got a bool: the arguments are now PyG's order, "
                "forward(x, edge_index, edge_attr=None, batch=None, "
                "return_attention_weights=None), so a fourth positional "
                "argument is the batch vector; pass "
                "return_attention_weights=True by keyword")
        if attn_bias is not None and (
                not isinstance(attn_bias, Tensor) or not (
                    attn_bias.is_floating_point()
                    or attn_bias.dtype == torch.bool)):
            raise TypeError(
                "attn_bias must be a floating-point [E, H] score bias or a "
                "boolean [E, H] mask (True: attend), got "
                f"{getattr(attn_bias, 'dtype', type(attn_bias).__name__)}")
        adjacency = None
        if is_sparse(edge_index):
            adjacency = edge_index
            edge_index = adjacency_to_edge_index(adjacency)
        attended = self._attend(x, edge_index, edge_attr,
                                return_attention_weights, batch, adjacency,
                                pos=pos, attn_bias=attn_bias, cache=cache)
        return self._finish(self._update_heads(attended), attended)

    # ------------------------------------------------------------------
    # Inputs
    # ------------------------------------------------------------------
    @staticmethod
    def _check_features(x: Tensor, lin: Linear, name: str) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a tensor, got "
                            f"{type(x).__name__}")
        if x.dim() != 2:
            raise ValueError(f"{name} must have shape [num_nodes, "
                             f"in_channels], got {list(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {x.dtype} "
                            "(embed token ids before the conv)")
        if lin.in_channels > 0 and x.size(-1) != lin.in_channels:
            raise ValueError(f"{name} has {x.size(-1)} features but the "
                             f"layer expects in_channels={lin.in_channels}")

    def _split_input(self, x: NodeFeatures) -> Tuple[Tensor, Tensor, bool]:
        """Returns ``(x_src, x_dst, bipartite)``."""
        if isinstance(x, Tensor):
            self._check_features(x, self.lin_key, "x")
            return x, x, False
        x_src, x_dst = x
        self._check_features(x_src, self.lin_key, "x[0] (source features)")
        if x_dst is None:
            raise ValueError("x[1] (target features) must not be None")
        self._check_features(x_dst, self.lin_query, "x[1] (target features)")
        return x_src, x_dst, True

    def _edge_terms(self, edge_attr: Optional[Tensor],
                    num_edges: int) -> Optional[Tensor]:
        """Projects edge features to a ``[E, H, C]`` key/value term."""
        if self.lin_edge is None:
            if edge_attr is not None:
                raise ValueError("edge_attr was given but the layer was "
                                 "built without edge_dim; build it with "
                                 "edge_dim=<edge feature size> to use edge "
                                 "features")
            return None
        if edge_attr is None:
            raise ValueError(f"the layer was built with edge_dim="
                             f"{self.edge_dim} but edge_attr is None")
        if edge_attr.dim() == 1:
            edge_attr = edge_attr.unsqueeze(-1)
        if edge_attr.shape != (num_edges, self.edge_dim):
            raise ValueError(f"edge_attr must have shape [{num_edges}, "
                             f"{self.edge_dim}] (one row per edge, "
                             f"edge_dim={self.edge_dim}), got "
                             f"{list(edge_attr.shape)}")
        return self.lin_edge(edge_attr).view(-1, self.heads,
                                              self.out_channels)

    def _values(self, x: Tensor, name: str) -> Tensor:
        r"""Per-head values ``[N, H, C]`` of features ``x``:
        :math:`\mathbf{W}_V \mathbf{x}`, or with the value projection
        dropped the features themselves, cut into ``H`` slices of ``C``."""
        H, C = self.heads, self.out_channels
        if self.lin_value is not None:
            return self.lin_value(x).view(-1, H, C)
        if x.size(-1) != H * C:
            raise ValueError(
                f"{type(self).__name__} with value_proj=False uses {name}'s "
                f"features as the values, so they must have heads * "
                f"out_channels = {H} * {C} = {H * C} channels; got "
                f"{x.size(-1)}")
        return x.view(-1, H, C)

    def _drop_value_projection(self) -> None:
        r"""For a subclass's ``value_proj=False``: no :math:`\mathbf{W}_V`;
        the messages are the source features, one slice of ``C`` channels
        per head (the published GIN-Attention code's form).  Needs
        ``in_channels == heads * out_channels`` (checked here when the
        sizes are known, and at every call)."""
        width = self.heads * self.out_channels
        sizes = (self.in_channels if isinstance(self.in_channels,
                                                (tuple, list))
                 else (self.in_channels, ))
        for size in sizes:
            if size is not None and size > 0 and size != width:
                raise ValueError(
                    f"{type(self).__name__}: value_proj=False needs "
                    f"in_channels == heads * out_channels = "
                    f"{self.heads} * {self.out_channels} = {width} (the "
                    f"values are the input features, cut into one slice per"
                    f" head); got in_channels={self.in_channels}")
        self.lin_value = None
        self.value_proj = False

    def _rotate(self, query: Tensor, key: Tensor, pos: Any,
                bipartite: bool) -> Tuple[Tensor, Tensor]:
        """RoPE of the queries (target positions) and keys (source
        positions)."""
        if self.rope is None:
            if pos is not None:
                raise ValueError("pos was given but the layer was built "
                                 "without rope; build it with rope=True to "
                                 "use positions, or add them to x")
            return query, key
        if pos is None:
            raise ValueError("the layer was built with rope but pos is None;"
                             " pass pos=<[N] integer positions> (e.g. "
                             "data.position)")
        if isinstance(pos, (tuple, list)):
            pos_src, pos_dst = pos
        elif bipartite:
            raise ValueError("bipartite inputs need pos=(pos_src, pos_dst)")
        else:
            pos_src = pos_dst = pos
        return self.rope(query, pos_dst), self.rope(key, pos_src)

    def _project(self, x: NodeFeatures, edge_index: Tensor,
                 edge_attr: Optional[Tensor], pos: Any,
                 cache: Optional[KeyValueCache]):
        """Checks the inputs and returns ``(x_dst, bipartite, query, key,
        value, self_value, edge_term)`` with per-head ``[N, H, C]``
        projections (with a cache, the keys and values of the cached nodes
        and the new ones)."""
        x_src, x_dst, bipartite = self._split_input(x)
        # Index ranges are checked once, by the kernel.
        check_edge_index_layout(edge_index)
        H, C = self.heads, self.out_channels
        query = self.lin_query(x_dst).view(-1, H, C)
        key = self.lin_key(x_src).view(-1, H, C)
        value = self._values(x_src, "x")
        query, key = self._rotate(query, key, pos, bipartite)
        self_value = None if bipartite else value
        if cache is not None:
            if bipartite:
                raise ValueError("cache takes the new nodes' features x, "
                                 "not an (x_src, x_dst) pair")
            key, value = cache.extend(key, value)
            bipartite = True  # sources: the cached and the new nodes
        edge_term = self._edge_terms(edge_attr, edge_index.size(1))
        return x_dst, bipartite, query, key, value, self_value, edge_term

    def _attend(self, x: NodeFeatures, edge_index: Tensor,
                edge_attr: Optional[Tensor], return_attention_weights,
                batch: Optional[Tensor], adjacency: Any = None, *,
                pos: Any = None, attn_bias: Optional[Tensor] = None,
                cache: Optional[KeyValueCache] = None) -> Attended:
        """Projections plus the shared kernel, with the layer's dropout,
        backend, scores and reduction; through :meth:`propagate` when
        explaining or hooked."""
        (x_dst, bipartite, query, key, value, self_value,
         edge_term) = self._project(x, edge_index, edge_attr, pos, cache)
        if adjacency is not None:
            sizes = (value.size(0), query.size(0))
            if adjacency_size(adjacency) != sizes:
                num_src, num_dst = adjacency_size(adjacency)
                raise ValueError(
                    f"the sparse adjacency has shape [{num_dst}, {num_src}] "
                    f"but must be [num_dst, num_src] = [{sizes[1]}, "
                    f"{sizes[0]}] (PyG's transposed adjacency adj_t: one "
                    "row per target node)")
        need_weights = return_attention_weights is True
        if self._propagation_requested():
            attention = self._propagate_attention(query, key, value,
                                                  edge_index, edge_term,
                                                  attn_bias)
        else:
            attention = edge_attention(
                query, key, value, edge_index, edge_key=edge_term,
                edge_value=edge_term, bias=attn_bias,
                scale=self.score_scale(), scores=self.scores,
                reduce=self.reduction(), dropout_p=self.dropout,
                training=self.training, need_weights=need_weights,
                batch=None if bipartite else batch, backend=self.backend)
        return Attended(x_dst, bipartite, edge_index, value, attention,
                        need_weights, adjacency, self_value)

    # ------------------------------------------------------------------
    # Output stage
    # ------------------------------------------------------------------
    def _finish(self, heads_out: Tensor, attended: Attended) -> ConvOutput:
        """Output stage, plus the attention weights when asked for."""
        if self.head_mask is not None:
            heads_out = heads_out * self.head_mask.to(heads_out).view(1, -1,
                                                                      1)
        out = self._combine_heads(heads_out, attended.x_dst)
        if not attended.need_weights:
            return out
        edges, alpha = attended.attention.edge_index, attended.attention.alpha
        if attended.adjacency is None:
            return out, (edges, alpha)
        whole = edges is attended.edge_index
        return out, weights_on_adjacency(attended.adjacency, edges, alpha,
                                         whole)

    def _combine_heads(self, out: Tensor, x_dst: Tensor) -> Tensor:
        """``[N, H, C']`` per-head result -> ``[N, out]`` node features."""
        if self.concat:
            out = out.reshape(out.size(0), out.size(1) * out.size(2))
        else:
            out = out.mean(dim=1)
        if self.out_proj is not None:
            out = self.out_proj(out)
        if self.lin_skip is not None:
            x_r = self.lin_skip(x_dst)
            if self.lin_beta is not None:
                gate = self.lin_beta(torch.cat([out, x_r, out - x_r], dim=-1))
                gate = gate.sigmoid()
                out = gate * x_r + (1 - gate) * out
            else:
                out = out + x_r
        return out

    def _extra_repr_args(self) -> list:
        """The subclass's own options for ``repr`` (non-defaults)."""
        return []

    def __repr__(self) -> str:
        args = [f"{self.in_channels}", f"{self.out_channels}",
                f"heads={self.heads}"]
        if not self.concat:
            args.append("concat=False")
        if self.use_out_proj:
            args.append("out_proj=True")
        if not self.root_weight:
            args.append("root_weight=False")
        if self.beta:
            args.append("beta=True")
        if self.edge_dim is not None:
            args.append(f"edge_dim={self.edge_dim}")
        if self.dropout:
            args.append(f"dropout={self.dropout}")
        if self.rope is not None:
            args.append("rope=True")
        args += self._extra_repr_args()
        args += [f"{name}={value!r}" for name, value in self.scores.changed()]
        return f"{self.__class__.__name__}({', '.join(args)})"


expand_shared_doc(AttentionConvBase)


def _score_option(name: str) -> property:
    return property(lambda self: getattr(self.scores, name),
                    doc=f"``scores.{name}`` (see :class:`ScoreOptions`)")


# The score options read as attributes of the layer too (conv.top_k).
for _name in ScoreOptions.field_names():
    setattr(AttentionConvBase, _name, _score_option(_name))


def _rope_module(rope: Any, head_dim: int) -> Optional[torch.nn.Module]:
    if rope is True:
        from .positional import RotaryEmbedding
        return RotaryEmbedding(head_dim)
    if rope is False or rope is None:
        return None
    if not isinstance(rope, torch.nn.Module):
        raise TypeError(f"rope must be a bool or a RotaryEmbedding, got "
                        f"{type(rope).__name__}")
    return rope
