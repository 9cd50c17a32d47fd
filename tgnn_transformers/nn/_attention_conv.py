"""What every attention conv of the package shares: the query, key, value
and edge projections, the input checks, and the output stage (head
concatenation or averaging, output projection, root weight and gate).

Subclasses differ only in how they turn the kernel's per-head aggregate into
the new node state; they never compute attention themselves.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear

from ..functional import BACKENDS, EdgeAttention, edge_attention
from ..functional._checks import check_edge_index_layout

ChannelSpec = Union[int, Tuple[int, int]]
NodeFeatures = Union[Tensor, Tuple[Tensor, Optional[Tensor]]]
ConvOutput = Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]


class Attended(NamedTuple):
    """What :meth:`AttentionConvBase._attend` hands to a subclass."""
    x_dst: Tensor
    bipartite: bool
    value: Tensor  # [N_src, H, C] per-head values
    attention: EdgeAttention  # the kernel's (out, alpha, edge_index)
    need_weights: bool


class AttentionConvBase(MessagePassing):
    """Base of :class:`MultiHeadAttentionConv`, :class:`GINAttentionConv` and
    :class:`PNAAttentionConv`; not meant to be used on its own.

    Parameter names follow PyG's ``TransformerConv`` (``lin_query``,
    ``lin_key``, ``lin_value``, ``lin_edge``, ``lin_skip``, ``lin_beta``) so
    checkpoints move between the two.
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
        head_out_channels: Optional[int] = None,
        **kwargs,
    ):
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        if out_channels <= 0 or heads <= 0:
            raise ValueError(f"out_channels and heads must be positive, got "
                             f"{out_channels} and {heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of "
                             f"{', '.join(BACKENDS)}")
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

        src_channels, dst_channels = ((in_channels, in_channels) if
                                      isinstance(in_channels, int) else
                                      tuple(in_channels))
        width = heads * out_channels
        # Width of what a head hands to the output stage (PNA may differ).
        head_out = out_channels if head_out_channels is None else \
            head_out_channels
        self.head_out_channels = head_out
        self.lin_key = Linear(src_channels, width, bias=bias)
        self.lin_query = Linear(dst_channels, width, bias=bias)
        self.lin_value = Linear(src_channels, width, bias=bias)
        if edge_dim is not None:
            self.lin_edge = Linear(edge_dim, width, bias=False)
        else:
            self.register_parameter("lin_edge", None)

        out_width = heads * head_out if concat else head_out
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
                 edge_attr: Optional[Tensor]):
        """Checks the inputs and returns ``(x_src, x_dst, bipartite, query,
        key, value, edge_term)`` with per-head ``[N, H, C]`` projections."""
        x_src, x_dst, bipartite = self._split_input(x)
        # Index ranges are checked once, by the kernel.
        check_edge_index_layout(edge_index)
        H, C = self.heads, self.out_channels
        query = self.lin_query(x_dst).view(-1, H, C)
        key = self.lin_key(x_src).view(-1, H, C)
        value = self.lin_value(x_src).view(-1, H, C)
        edge_term = self._edge_terms(edge_attr, edge_index.size(1))
        return x_src, x_dst, bipartite, query, key, value, edge_term

    def _attend(self, x: NodeFeatures, edge_index: Tensor,
                edge_attr: Optional[Tensor], return_attention_weights,
                batch: Optional[Tensor], **kernel_options) -> Attended:
        """Projections plus the shared kernel, with the layer's dropout and
        backend; ``kernel_options`` go to :func:`edge_attention`."""
        _, x_dst, bipartite, query, key, value, edge_term = self._project(
            x, edge_index, edge_attr)
        need_weights = return_attention_weights is True
        attention = edge_attention(
            query, key, value, edge_index, edge_key=edge_term,
            edge_value=edge_term, dropout_p=self.dropout,
            training=self.training, need_weights=need_weights,
            batch=None if bipartite else batch, backend=self.backend,
            **kernel_options)
        return Attended(x_dst, bipartite, value, attention, need_weights)

    def _finish(self, heads_out: Tensor, attended: Attended) -> ConvOutput:
        """Output stage, plus ``(edge_index, alpha)`` when asked for."""
        out = self._combine_heads(heads_out, attended.x_dst)
        if attended.need_weights:
            return out, (attended.attention.edge_index,
                         attended.attention.alpha)
        return out

    # ------------------------------------------------------------------
    # Output stage
    # ------------------------------------------------------------------
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
        extra = self._extra_repr_args()
        if extra:
            args.append(extra)
        return f"{self.__class__.__name__}({', '.join(args)})"
