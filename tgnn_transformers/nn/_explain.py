r"""The attention through PyG's :meth:`~torch_geometric.nn.conv.MessagePassing.propagate`,
for PyG's explain tools and message-passing hooks.

Normally a conv computes its attention in one fused call
(:func:`~tgnn_transformers.functional.edge_attention`) that never goes
through ``propagate``.  When the layer is being explained (``self.explain``
is ``True``, as PyG's explainers set it) or any of ``MessagePassing``'s
propagate, message or aggregate hooks is registered, it runs through
``propagate`` instead, with the same result: :meth:`message` returns the
per-edge attention weights ``alpha`` (``[E, H]``, input edge order;
message hooks find them as ``msg_kwargs["alpha"]``), PyG's
``explain_message`` multiplies the edge mask into them, and
:meth:`aggregate` applies the attention dropout and the weighted reduction
of the values.  A mask :math:`m` thus scales every message
:math:`\alpha_{ij} (\mathbf{v}_j + \mathbf{W}_E \mathbf{e}_{ij})` of its
edge, as in PyG's ``TransformerConv``; the weights of an edge's other
neighbours are not renormalised.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..functional import (EdgeAttention, attention_aggregate,
                          attention_dropout, attention_weights)

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


class PropagatedAttention:
    """Mixin of :class:`~tgnn_transformers.nn.AttentionConvBase` (before
    ``MessagePassing`` in its bases): the attention split at the weights
    and run through ``propagate``.  Reads the conv's ``scores``,
    ``score_scale()``, ``reduction()`` and ``dropout``."""

    def _propagation_requested(self) -> bool:
        if self._explain is True:
            return True
        return any(len(getattr(self, name)) for name in _PROPAGATION_HOOKS)

    def _propagate_attention(self, query: Tensor, key: Tensor, value: Tensor,
                             edge_index: Tensor, edge_term: Optional[Tensor],
                             attn_bias: Optional[Tensor] = None
                             ) -> EdgeAttention:
        """The kernel's computation split at the weights: ``alpha`` in the
        input edge order, then :meth:`propagate` (message = ``alpha``,
        aggregate = dropout and the kernel's weighted reduction)."""
        alpha = attention_weights(
            query, key, edge_index, edge_key=edge_term, bias=attn_bias,
            scale=self.score_scale(), normalization=self.scores.normalization)
        alpha_out, edges_out = alpha, edge_index
        if self.scores.sparsifies:
            # Dropped weights become zeros: the messages keep one row per
            # input edge, as an edge mask needs.  (Here every mode acts
            # before the attention dropout of aggregate().)
            alpha_out, edges_out, kept = self.scores.sparsify(alpha,
                                                              edge_index)
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
        return attention_aggregate(value, weights, edge_index, dim_size,
                                   self.reduction(), edge_value=edge_value)
