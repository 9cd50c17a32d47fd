r"""What every attention conv of the package shares: the constructor
arguments, the query, key, value and edge projections, the input checks,
the call (``forward``), the route to PyG's explain machinery, and the output
stage (head concatenation or averaging, output projection, root weight and
gate).

Subclasses differ only in their own keyword-only options, the options they
hand to the attention kernel (:meth:`AttentionConvBase._kernel_options`),
and how they turn the kernel's per-head aggregate into the new per-head
node state (:meth:`AttentionConvBase._update_heads`); they never compute
attention themselves.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import SparseTensor
from torch_geometric.utils import (is_sparse, to_torch_coo_tensor,
                                   to_torch_csr_tensor)
from torch_geometric.utils.sparse import set_sparse_value

from ..functional import (BACKENDS, SCORE_NORMALIZATIONS, EdgeAttention,
                          adjacency_size, adjacency_to_edge_index,
                          attention_aggregate, attention_dropout,
                          attention_weights, check_edge_index_layout,
                          check_sparsify_options, edge_attention,
                          sparsifies, sparsify_attention)
from ..functional._checks import check_choice

ChannelSpec = Union[int, Tuple[int, int]]
NodeFeatures = Union[Tensor, Tuple[Tensor, Optional[Tensor]]]
ConvOutput = Union[Tensor, Tuple[Tensor, Any]]

#: The documentation of the shared constructor arguments; every conv's
#: docstring has it in place of the line ``{shared_args}``.
SHARED_ARGS_DOC = r"""in_channels: size of each input sample, a ``(source, target)`` tuple
            for bipartite graphs, or ``-1`` for lazy initialisation.
        out_channels: size of each head's output :math:`C`.
        heads: number of heads :math:`H`.
        concat: concatenate the heads (``True``) or average them.
        beta: gate the skip connection with
            :math:`\beta_i = \sigma(\mathbf{w}^{\top}[\mathbf{m}_i,
            \mathbf{x}_r, \mathbf{m}_i - \mathbf{x}_r])`, as in
            ``TransformerConv`` (only with ``root_weight=True``).
        dropout: dropout probability on the attention weights.
        edge_dim: size of edge features, added to keys and values after a
            linear projection :math:`\mathbf{W}_E`.
        bias: learn additive biases in the projections.
        root_weight: add the projected target features
            :math:`\mathbf{W}_{\mathrm{skip}} \mathbf{x}_i` (PyG's skip).
        out_proj: apply the output projection :math:`\mathbf{O}` to the
            combined heads.  The transformer's form is ``out_proj=True,
            root_weight=False``; ``TransformerConv``'s is the default.
        backend: ``"auto"``, ``"sparse"`` or ``"dense"`` (see
            :func:`~tgnn_transformers.functional.edge_attention`).
        rope: rotary position embedding of the queries and keys: ``True``
            for a :class:`~tgnn_transformers.nn.RotaryEmbedding` of the head
            width, or one to use; ``forward`` then needs ``pos``.
        **kwargs: further arguments of
            :class:`~torch_geometric.nn.conv.MessagePassing`."""

_MESSAGE_PASSING_ARGS = frozenset(
    inspect.signature(MessagePassing.__init__).parameters) - {"self"}

# MessagePassing's hooks that see (or change) messages or aggregates; any of
# them registered sends the attention through ``propagate``.
_PROPAGATION_HOOKS = (
    "_propagate_forward_pre_hooks",
    "_propagate_forward_hooks",
    "_message_forward_pre_hooks",
    "_message_forward_hooks",
    "_aggregate_forward_pre_hooks",
    "_aggregate_forward_hooks",
)



def check_graph_aware_options(normalization: str, value_proj: bool,
                              threshold, top_k, threshold_mode: str,
                              top_k_fraction) -> None:
    """The score and sparsification options GIN- and PNA-Attention share,
    checked with messages naming the argument, what it accepts and what
    came."""
    check_choice("normalization", normalization, SCORE_NORMALIZATIONS)
    if not isinstance(value_proj, bool):
        raise TypeError(f"value_proj must be a bool, got {value_proj!r}")
    check_sparsify_options(threshold, top_k, threshold_mode, top_k_fraction)


class Attended(NamedTuple):
    """What :meth:`AttentionConvBase._attend` hands to a subclass."""
    x_dst: Tensor
    bipartite: bool
    edge_index: Tensor  # the input edges (a sparse adjacency's, converted)
    value: Tensor  # [N_src, H, C] per-head values
    attention: EdgeAttention  # the kernel's (out, alpha, edge_index)
    need_weights: bool
    adjacency: Any  # the sparse adjacency given instead of edge_index


def _expand_doc(cls: type) -> None:
    if cls.__doc__ and "{shared_args}" in cls.__doc__:
        cls.__doc__ = cls.__doc__.replace("{shared_args}", SHARED_ARGS_DOC)


class AttentionConvBase(MessagePassing):
    r"""Base of :class:`MultiHeadAttentionConv`, :class:`GINAttentionConv`
    and :class:`PNAAttentionConv`; not meant to be used on its own.

    It owns the constructor arguments every attention conv shares, with the
    names, order and defaults of PyG's ``TransformerConv`` (positional as
    there), plus ``out_proj`` and ``backend``:

    ``(in_channels, out_channels, heads=1, concat=True, beta=False,
    dropout=0.0, edge_dim=None, bias=True, root_weight=True,
    out_proj=False, backend="auto", **kwargs)``

    A subclass adds its own options as keyword-only arguments of an
    ``__init__(self, *args, <options>, **kwargs)`` that forwards the rest
    here; its ``inspect.signature`` and docstring are completed with the
    shared arguments automatically.

    Parameter names follow ``TransformerConv`` (``lin_query``, ``lin_key``,
    ``lin_value``, ``lin_edge``, ``lin_skip``, ``lin_beta``) so checkpoints
    move between the two.

    **Explaining.**  Normally the attention runs in one fused kernel
    (:func:`~tgnn_transformers.functional.edge_attention`) and never goes
    through :meth:`propagate`.  When the layer is being explained
    (``self.explain`` is ``True``, as PyG's explainers set it) or any of
    :class:`~torch_geometric.nn.conv.MessagePassing`'s propagate, message
    or aggregate hooks is registered, it runs through :meth:`propagate`
    instead, with the same result: :meth:`message` returns the per-edge
    attention weights ``alpha`` (``[E, H]``, input edge order; message
    hooks find them as ``msg_kwargs["alpha"]``), PyG's ``explain_message``
    multiplies the edge mask into them, and :meth:`aggregate` applies the
    attention dropout and the weighted reduction of the values.  A mask
    :math:`m` thus scales every message
    :math:`\alpha_{ij} (\mathbf{v}_j + \mathbf{W}_E \mathbf{e}_{ij})` of
    its edge, as in PyG's ``TransformerConv``; the weights of an edge's
    other neighbours are not renormalised.

    Args:
        {shared_args}
    """

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
        if out_channels <= 0 or heads <= 0:
            raise ValueError(f"out_channels and heads must be positive, got "
                             f"{out_channels} and {heads}")
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
        if rope is True:
            from .positional import RotaryEmbedding
            rope = RotaryEmbedding(out_channels)
        elif rope is False or rope is None:
            rope = None
        elif not isinstance(rope, torch.nn.Module):
            raise TypeError(f"rope must be a bool or a RotaryEmbedding, got "
                            f"{type(rope).__name__}")
        self.rope = rope

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
        _expand_doc(cls)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        own = inspect.signature(init).parameters.values()
        if not any(p.kind is p.VAR_POSITIONAL for p in own):
            return
        # ``__init__(self, *args, <keyword-only options>, **kwargs)``: show
        # the shared arguments in place of ``*args``.
        shared = inspect.signature(AttentionConvBase.__init__)
        params = list(shared.parameters.values())
        options = [p for p in own if p.kind is p.KEYWORD_ONLY]
        init.__signature__ = shared.replace(parameters=params[:-1] + options +
                                            params[-1:])

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
                position biases, Graphormer's spatial encodings).  It
                takes the sparse path (``backend="dense"`` raises).
        """
        if isinstance(batch, bool):
            raise TypeError(
                "batch got a bool: the arguments are now PyG's order, "
                "forward(x, edge_index, edge_attr=None, batch=None, "
                "return_attention_weights=None), so a fourth positional "
                "argument is the batch vector; pass "
                "return_attention_weights=True by keyword")
        adjacency = None
        if is_sparse(edge_index):
            adjacency = edge_index
            edge_index = adjacency_to_edge_index(adjacency)
        attended = self._attend(x, edge_index, edge_attr,
                                return_attention_weights, batch, adjacency,
                                pos=pos, attn_bias=attn_bias)
        return self._finish(self._update_heads(attended), attended)

    def _kernel_options(self) -> Dict[str, Any]:
        """Keyword arguments of the layer for
        :func:`~tgnn_transformers.functional.edge_attention` (``scale``,
        ``normalization``, ``threshold``, ``top_k``, ``threshold_mode``,
        ``top_k_fraction``, ``reduce``)."""
        return {}

    def _update_heads(self, attended: Attended) -> Tensor:
        """The kernel's per-head aggregate -> ``[N_dst, H, C']`` per-head
        node state, before the output stage."""
        return attended.attention.out

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

    def _project(self, x: NodeFeatures, edge_index: Tensor,
                 edge_attr: Optional[Tensor], pos: Any = None):
        """Checks the inputs and returns ``(x_src, x_dst, bipartite, query,
        key, value, edge_term)`` with per-head ``[N, H, C]`` projections."""
        x_src, x_dst, bipartite = self._split_input(x)
        # Index ranges are checked once, by the kernel.
        check_edge_index_layout(edge_index)
        H, C = self.heads, self.out_channels
        query = self.lin_query(x_dst).view(-1, H, C)
        key = self.lin_key(x_src).view(-1, H, C)
        value = self._values(x_src, "x")
        if self.rope is not None:
            query, key = self._rotate(query, key, pos, bipartite)
        elif pos is not None:
            raise ValueError("pos was given but the layer was built without "
                             "rope; build it with rope=True to use "
                             "positions, or add them to x")
        edge_term = self._edge_terms(edge_attr, edge_index.size(1))
        return x_src, x_dst, bipartite, query, key, value, edge_term

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

    def _attend(self, x: NodeFeatures, edge_index: Tensor,
                edge_attr: Optional[Tensor], return_attention_weights,
                batch: Optional[Tensor], adjacency: Any = None, *,
                pos: Any = None,
                attn_bias: Optional[Tensor] = None) -> Attended:
        """Projections plus the shared kernel, with the layer's dropout,
        backend and :meth:`_kernel_options`; through :meth:`propagate` when
        explaining or hooked."""
        _, x_dst, bipartite, query, key, value, edge_term = self._project(
            x, edge_index, edge_attr, pos)
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
        options = self._kernel_options()
        if self._propagation_requested():
            attention = self._propagate_attention(query, key, value,
                                                  edge_index, edge_term,
                                                  options, attn_bias)
        else:
            attention = edge_attention(
                query, key, value, edge_index, edge_key=edge_term,
                edge_value=edge_term, bias=attn_bias,
                dropout_p=self.dropout,
                training=self.training, need_weights=need_weights,
                batch=None if bipartite else batch, backend=self.backend,
                **options)
        return Attended(x_dst, bipartite, edge_index, value, attention,
                        need_weights, adjacency)

    # ------------------------------------------------------------------
    # PyG's message passing (explain tools and hooks)
    # ------------------------------------------------------------------
    def _propagation_requested(self) -> bool:
        if self._explain is True:
            return True
        return any(len(getattr(self, name)) for name in _PROPAGATION_HOOKS)

    def _propagate_attention(self, query: Tensor, key: Tensor, value: Tensor,
                             edge_index: Tensor, edge_term: Optional[Tensor],
                             options: Dict[str, Any],
                             attn_bias: Optional[Tensor] = None
                             ) -> EdgeAttention:
        """The kernel's computation split at the weights: ``alpha`` in the
        input edge order, then :meth:`propagate` (message = ``alpha``,
        aggregate = dropout and the kernel's weighted reduction)."""
        alpha = attention_weights(
            query, key, edge_index, edge_key=edge_term, bias=attn_bias,
            scale=options.get("scale"),
            normalization=options.get("normalization", "softmax"))
        alpha_out, edges_out = alpha, edge_index
        sparsify = {k: options[k] for k in ("threshold", "top_k",
                                            "threshold_mode",
                                            "top_k_fraction")
                    if k in options}
        if sparsifies(**sparsify):
            # Dropped weights become zeros: the messages keep one row per
            # input edge, as an edge mask needs.  (Here every mode acts
            # before the attention dropout of aggregate().)
            alpha_out, edges_out, kept = sparsify_attention(
                alpha, edge_index, **sparsify)
            alpha = alpha.new_zeros(alpha.shape).index_put((kept, ),
                                                           alpha_out)
        out = self.propagate(edge_index, alpha=alpha, value=value,
                             edge_value=edge_term,
                             size=(value.size(0), query.size(0)))
        return EdgeAttention(out, alpha_out, edges_out)

    def message(self, alpha: Tensor) -> Tensor:
        r"""The message of edge :math:`j \to i` is its attention weights
        :math:`\alpha_{ij}` (``[E, H]``); :meth:`aggregate` weighs the
        values with them.  (Used only when explaining or hooked.)"""
        return alpha

    def aggregate(self, inputs: Tensor, value: Tensor,
                  edge_value: Optional[Tensor], edge_index: Tensor,
                  dim_size: int) -> Tensor:
        """Attention dropout on the (possibly masked) weights ``inputs``,
        then the layer's reductions of the values
        (:func:`~tgnn_transformers.functional.attention_aggregate`), as the
        fused kernel computes them.  (Used only when explaining or
        hooked.)"""
        weights = attention_dropout(inputs, edge_index, self.dropout,
                                    self.training, num_src=value.size(0),
                                    num_dst=dim_size)
        return attention_aggregate(
            value, weights, edge_index, dim_size,
            self._kernel_options().get("reduce", "sum"),
            edge_value=edge_value)

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
        return out, _weights_on_adjacency(attended.adjacency, edges, alpha,
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

    def _extra_repr_args(self) -> str:
        return ""

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
        extra = self._extra_repr_args()
        if extra:
            args.append(extra)
        return f"{self.__class__.__name__}({', '.join(args)})"


_expand_doc(AttentionConvBase)


def _weights_on_adjacency(adj: Any, edges: Tensor, alpha: Tensor,
                          whole: bool):
    """The attention weights in the form PyG returns them for a sparse
    adjacency input: ``(adj_t with alpha as values, alpha)`` for a
    ``torch.sparse`` tensor, ``adj_t.set_value(alpha)`` for a
    ``SparseTensor``.  ``whole``: ``edges`` are all of the adjacency's
    entries, in its order; otherwise a subgraph of it (sparsification)."""
    if whole:
        if isinstance(adj, Tensor):
            return set_sparse_value(adj, alpha), alpha
        return adj.set_value(alpha, layout="coo")
    row, col = edges[1], edges[0]
    if isinstance(adj, Tensor):
        build = (to_torch_csr_tensor if adj.layout == torch.sparse_csr else
                 to_torch_coo_tensor)
        sub = build(torch.stack([row, col]), alpha,
                    (adj.size(0), adj.size(1)))
        return sub, sub.values()
    return SparseTensor(row=row, col=col, value=alpha,
                        sparse_sizes=adj.sparse_sizes())
