"""What every attention backend is: a name, what it can compute, and how
it runs one call of :func:`~tgnn_transformers.functional.edge_attention`.

A backend answers two questions about an :class:`AttentionCall`:
:meth:`AttentionBackend.unsupported` (why it cannot compute this call, as a
reason a user can read, or ``None``) and :meth:`AttentionBackend.run`.  The
table in :mod:`tgnn_transformers.functional.backends` lists them;
``backend="auto"`` is a policy over that table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

from torch import Tensor

from ..aggregate import REDUCTIONS
from ..patterns import TokenPattern, recognize_token_pattern
from ..scores import ScoreOptions


class EdgeAttention(NamedTuple):
    """Result of :func:`~tgnn_transformers.functional.edge_attention`."""
    out: Tensor
    """``[N_dst, H, C]`` (or ``[N_dst, H, R, C]`` for several reductions)."""
    alpha: Optional[Tensor]
    """``[E', H]`` attention weights before dropout (for the published
    threshold modes, which act on the dropped-out weights: after it and
    the thresholding), or ``None`` when a backend that does not keep them
    ran and ``need_weights`` was not set."""
    edge_index: Tensor
    """``[2, E']`` the edges that carried attention: the input edges, or the
    kept subgraph after ``threshold`` / ``top_k`` sparsification."""


class AttentionCall(NamedTuple):
    """The checked inputs of one attention call, as backends receive it."""
    query: Tensor
    key: Tensor
    value: Tensor
    edge_index: Tensor
    edge_key: Optional[Tensor]
    edge_value: Optional[Tensor]
    bias: Optional[Tensor]
    scale: Union[float, Tensor]
    scores: ScoreOptions
    dropout_p: float
    """0 outside training"""
    reduce: Union[str, Sequence[str]]
    need_weights: bool
    batch: Optional[Tensor]

    @property
    def bipartite(self) -> bool:
        return self.key.size(0) != self.query.size(0)

    @property
    def has_edge_terms(self) -> bool:
        return not (self.edge_key is None and self.edge_value is None
                    and self.bias is None)

    def token_pattern(self) -> Optional[TokenPattern]:
        """The graph's token pattern (cached per ``edge_index``)."""
        return recognize_token_pattern(self.edge_index, self.batch,
                                       self.query.size(0))


@dataclass(frozen=True)
class Capabilities:
    """What a backend can compute; :meth:`refusals` names what a call asks
    beyond it."""
    weights: bool = True
    """returns the ``[E, H]`` weights (``need_weights``)"""
    edge_terms: bool = True
    """edge keys and values, a score bias"""
    scores: bool = True
    """score modes other than the softmax, sparsification"""
    dropout: bool = True
    """attention dropout"""
    bipartite: bool = True
    """sources and targets that are different node sets"""
    reductions: Tuple[str, ...] = REDUCTIONS
    """the reductions it aggregates with (one at a time unless
    ``many_reductions``)"""
    many_reductions: bool = True

    def refusals(self, call: AttentionCall) -> List[str]:
        reasons = []
        if call.need_weights and not self.weights:
            reasons.append("need_weights=True")
        if call.has_edge_terms and not self.edge_terms:
            reasons.append("per-edge terms (edge features or bias)")
        if not self.scores:
            if call.scores.normalization != "softmax":
                reasons.append(
                    f"normalization={call.scores.normalization!r}")
            if call.scores.sparsifies:
                reasons.append("sparsification (threshold / top_k)")
        if call.dropout_p > 0 and not self.dropout:
            reasons.append("attention dropout")
        if call.bipartite and not self.bipartite:
            reasons.append("bipartite input")
        reduce = call.reduce
        many = not isinstance(reduce, str)
        if (many and not self.many_reductions) or any(
                r not in self.reductions for r in
                ((reduce, ) if not many else reduce)):
            reasons.append(f"reduce={reduce!r}")
        return reasons


class AttentionBackend:
    """A way to compute :func:`~tgnn_transformers.functional.edge_attention`.

    A subclass sets :attr:`name` and :attr:`capabilities`, and implements
    :meth:`run`; :meth:`refusals` (cheap checks: device, dtype, an
    installed package) and :meth:`graph_refusals` (checks that look at the
    graph, run only when nothing else refuses) add what the capabilities do
    not say.
    """
    name: str = ""
    capabilities: Capabilities = Capabilities()

    def tried_by_auto(self, call: AttentionCall) -> bool:
        """Whether ``backend="auto"`` considers this backend for ``call``
        (a cheap test, before :meth:`unsupported`)."""
        return True

    def refusals(self, call: AttentionCall) -> List[str]:
        return []

    def graph_refusals(self, call: AttentionCall) -> List[str]:
        return []

    def unsupported(self, call: AttentionCall) -> Optional[str]:
        """Why this backend cannot compute ``call``, or ``None``."""
        reasons = self.capabilities.refusals(call) + self.refusals(call)
        if not reasons:
            reasons = self.graph_refusals(call)
        return "; ".join(reasons) if reasons else None

    def run(self, call: AttentionCall) -> EdgeAttention:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
