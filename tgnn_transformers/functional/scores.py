r"""How attention scores become weights: the normalisation over each
target's edges and the optional sparsification of the weights.

:class:`ScoreOptions` is the one value that carries these settings, from a
layer's constructor (GIN- and PNA-Attention take them) through
:func:`~tgnn_transformers.functional.edge_attention` to its backends.  It
checks itself once, when it is made; everything downstream reads it.
:func:`sparsify_attention` applies the sparsification to weights on edges
(the layers, the Sparse GIN adapter and the inspection tools share it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_choice

#: Score modes: the softmax over each target's incoming edges, the
#: non-negative ReLU of the scores, or the raw scores (the published
#: GIN-Attention code's non-softmax mode).
SCORE_NORMALIZATIONS = ("softmax", "relu", "raw")
#: How the sparsification applies its options: ``"drop"`` (weights below
#: ``threshold`` / outside the ``top_k`` largest become 0, the others keep
#: their value) or one of the published code's three modes
#: (``"shifted-relu"``: ``relu(alpha - threshold)``, ``"binary"``:
#: ``1[alpha > threshold]``, ``"top-k-fraction"``: 1 on the
#: ``max(1, floor(top_k_fraction * d_i))`` largest weights of target ``i``).
THRESHOLD_MODES = ("drop", "shifted-relu", "binary", "top-k-fraction")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ScoreOptions:
    r"""The score normalisation and sparsification of an attention layer.

    Args:
        normalization: ``"softmax"`` (over each target's incoming edges),
            ``"relu"`` (non-normalised, keeps degree information) or
            ``"raw"`` (the scores themselves).
        threshold: with ``threshold_mode="drop"``, weights below it become
            0; the threshold :math:`t` of ``"shifted-relu"`` and
            ``"binary"``.  A finite number.
        top_k: keep the ``top_k`` largest weights of each target and head
            (``"drop"`` only); an integer >= 1.
        threshold_mode: ``"drop"``, ``"shifted-relu"``, ``"binary"`` or
            ``"top-k-fraction"`` (see :func:`sparsify_attention`).
        top_k_fraction: :math:`f \in (0, 1]` of ``"top-k-fraction"``.

    Raises a ``ValueError`` or ``TypeError`` naming the argument, what it
    accepts and what it got, for a bad value or a combination the
    sparsification cannot apply: ``"drop"`` takes ``threshold`` and / or
    ``top_k``; ``"shifted-relu"`` and ``"binary"`` need ``threshold`` (and
    take no ``top_k``); ``"top-k-fraction"`` needs ``top_k_fraction`` (and
    takes neither ``threshold`` nor ``top_k``).
    """
    normalization: str = "softmax"
    threshold: Optional[float] = None
    top_k: Optional[int] = None
    threshold_mode: str = "drop"
    top_k_fraction: Optional[float] = None

    def __post_init__(self):
        check_choice("normalization", self.normalization,
                     SCORE_NORMALIZATIONS)
        check_choice("threshold_mode", self.threshold_mode, THRESHOLD_MODES)
        if self.threshold is not None and not (
                _is_number(self.threshold) and math.isfinite(self.threshold)):
            raise ValueError(f"threshold must be a finite number or None, "
                             f"got {self.threshold!r}")
        if self.top_k is not None:
            if not isinstance(self.top_k, int) or isinstance(self.top_k,
                                                             bool):
                raise TypeError(f"top_k must be an integer >= 1 or None, got"
                                f" {self.top_k!r}")
            if self.top_k < 1:
                raise ValueError(f"top_k must be >= 1 (or None), got "
                                 f"{self.top_k!r}")
        if self.top_k_fraction is not None and not (
                _is_number(self.top_k_fraction)
                and 0.0 < self.top_k_fraction <= 1.0):
            raise ValueError(f"top_k_fraction must be a float in (0, 1] or "
                             f"None, got {self.top_k_fraction!r}")
        self._check_combination()

    def _check_combination(self) -> None:
        mode = self.threshold_mode
        if mode in ("shifted-relu", "binary"):
            if self.threshold is None:
                raise ValueError(f"threshold_mode={mode!r} needs a "
                                 "threshold (a float), got threshold=None")
            if self.top_k is not None:
                raise ValueError(f"top_k applies to threshold_mode='drop' "
                                 f"only; got top_k={self.top_k} with "
                                 f"threshold_mode={mode!r}")
        if mode == "top-k-fraction":
            if self.top_k_fraction is None:
                raise ValueError("threshold_mode='top-k-fraction' needs "
                                 "top_k_fraction (a float in (0, 1]), got "
                                 "None")
            if self.threshold is not None or self.top_k is not None:
                raise ValueError(
                    "threshold_mode='top-k-fraction' takes neither "
                    f"threshold nor top_k; got threshold={self.threshold!r}"
                    f", top_k={self.top_k!r}")
        elif self.top_k_fraction is not None:
            raise ValueError(f"top_k_fraction applies to threshold_mode="
                             f"'top-k-fraction' only; got top_k_fraction="
                             f"{self.top_k_fraction!r} with threshold_mode="
                             f"{mode!r}")

    @classmethod
    def field_names(cls) -> Tuple[str, ...]:
        """The option names, in order (the layers' keyword arguments)."""
        return tuple(f.name for f in fields(cls))

    @property
    def sparsifies(self) -> bool:
        """Whether :meth:`sparsify` changes the weights at all."""
        return (self.threshold is not None or self.top_k is not None or
                self.top_k_fraction is not None or
                self.threshold_mode != "drop")

    @property
    def plain(self) -> bool:
        """Softmax weights, nothing sparsified: plain attention."""
        return self.normalization == "softmax" and not self.sparsifies

    @property
    def after_dropout(self) -> bool:
        """The published code's modes act on the dropped-out weights;
        ``"drop"`` sparsifies before the attention dropout."""
        return self.threshold_mode != "drop"

    def changed(self) -> List[Tuple[str, object]]:
        """``(name, value)`` of the options that differ from the defaults
        (for a layer's ``repr``)."""
        default = ScoreOptions()
        return [(name, getattr(self, name)) for name in self.field_names()
                if getattr(self, name) != getattr(default, name)]

    def normalize(self, scores: Tensor, ptr: Tensor) -> Tensor:
        """``[E, H]`` scores in CSR order (``ptr`` the target rows'
        offsets) -> weights."""
        if self.normalization == "softmax":
            from .softmax import edge_softmax
            return edge_softmax(scores, ptr=ptr)
        if self.normalization == "relu":
            return F.relu(scores)
        return scores

    def sparsify(self, alpha: Tensor, edge_index: Tensor
                 ) -> Tuple[Tensor, Tensor, Tensor]:
        """:func:`sparsify_attention` with these options."""
        return _sparsify(alpha, edge_index, self)


#: the softmax, nothing sparsified (shared: the options are frozen)
_DEFAULT_SCORES = ScoreOptions()


def as_score_options(scores: Optional[ScoreOptions] = None,
                     **options) -> ScoreOptions:
    """``scores``, or a :class:`ScoreOptions` made from the keyword form
    (``normalization=..., threshold=...``; ``None`` values mean the
    default).  Giving both is an error."""
    given = {k: v for k, v in options.items() if v is not None}
    if scores is None:
        return ScoreOptions(**given) if given else _DEFAULT_SCORES
    if not isinstance(scores, ScoreOptions):
        raise TypeError(f"scores must be a ScoreOptions, got "
                        f"{type(scores).__name__}")
    if given:
        raise ValueError(f"give the score options either as scores= or as "
                         f"keywords, not both (got scores and "
                         f"{', '.join(sorted(given))})")
    return scores


def _top_k_mask(alpha: Tensor, index: Tensor,
                k: Union[int, Tensor]) -> Tensor:
    """``[E, H]`` mask of the ``k`` largest weights of each target and head
    (``k`` an int, or a ``[num_targets]`` tensor: one count per target)."""
    num_edges, heads = alpha.shape
    flat = alpha.t().reshape(-1)  # head-major: [H * E]
    segment = (torch.arange(heads, device=alpha.device).repeat_interleave(
        num_edges) * (int(index.max()) + 1 if num_edges else 1) +
               index.repeat(heads))
    order = torch.argsort(flat, descending=True, stable=True)
    order = order[torch.argsort(segment[order], stable=True)]
    sorted_segment = segment[order]
    start = torch.ones_like(sorted_segment, dtype=torch.bool)
    start[1:] = sorted_segment[1:] != sorted_segment[:-1]
    position = torch.arange(order.numel(), device=alpha.device)
    run_start = torch.cummax(torch.where(start, position, 0), 0).values
    rank = torch.empty_like(position)
    rank[order] = position - run_start
    rank = rank.view(heads, num_edges).t()
    if isinstance(k, Tensor):
        return rank < k[index].unsqueeze(-1)
    return rank < k


def _sparsify(alpha: Tensor, edge_index: Tensor, options: ScoreOptions):
    mode = options.threshold_mode
    if mode == "shifted-relu":
        alpha = F.relu(alpha - options.threshold)
        keep = alpha > 0
    elif mode == "binary":
        keep = alpha > options.threshold
        alpha = keep.to(alpha.dtype)
    elif mode == "top-k-fraction":
        num_dst = int(edge_index[1].max()) + 1 if edge_index.numel() else 0
        degree = torch.bincount(edge_index[1], minlength=num_dst)
        k = (options.top_k_fraction *
             degree.double()).floor().long().clamp_min(1)
        keep = _top_k_mask(alpha.detach(), edge_index[1], k)
        alpha = keep.to(alpha.dtype)
    else:
        keep = torch.ones_like(alpha, dtype=torch.bool)
        if options.threshold is not None:
            keep &= alpha >= options.threshold
        if options.top_k is not None:
            keep &= _top_k_mask(alpha.detach(), edge_index[1], options.top_k)
        alpha = alpha * keep
    kept = keep.any(dim=1)
    return alpha[kept], edge_index[:, kept], kept


def sparsify_attention(alpha: Tensor, edge_index: Tensor, *,
                       scores: Optional[ScoreOptions] = None,
                       threshold: Optional[float] = None,
                       top_k: Optional[int] = None,
                       threshold_mode: Optional[str] = None,
                       top_k_fraction: Optional[float] = None):
    r"""Drops weak attention edges, returning ``(alpha, edge_index, kept)``.

    Per head, with ``threshold_mode="drop"`` (the default), weights below
    ``threshold`` and weights outside the ``top_k`` largest of their target
    are set to 0 and the others keep their value.  The published
    GIN-Attention code's modes, for target :math:`i` with in-degree
    :math:`d_i`:

    * ``"shifted-relu"``: :math:`\alpha \leftarrow \mathrm{relu}(\alpha - t)`
    * ``"binary"``: :math:`\alpha \leftarrow \mathbb{1}[\alpha > t]`
    * ``"top-k-fraction"``: :math:`\alpha \leftarrow 1` on the
      :math:`\max(1, \lfloor f \cdot d_i \rfloor)` largest weights of
      :math:`i` (:math:`f` = ``top_k_fraction``), 0 elsewhere

    (:math:`t` = ``threshold``; ``binary`` and ``top-k-fraction`` pass no
    gradient to the weights, as in that code).  Edges left with no weight
    in any head are removed, so the result is a real subgraph (``kept`` is
    the boolean mask of the surviving input edges).  The options come as a
    :class:`ScoreOptions` (``scores=``) or as keywords; bad combinations
    raise (see :class:`ScoreOptions`).
    """
    options = as_score_options(scores, threshold=threshold, top_k=top_k,
                               threshold_mode=threshold_mode,
                               top_k_fraction=top_k_fraction)
    return options.sparsify(alpha, edge_index)


def check_sparsify_options(threshold: Optional[float] = None,
                           top_k: Optional[int] = None,
                           threshold_mode: str = "drop",
                           top_k_fraction: Optional[float] = None) -> None:
    """Raises a ``ValueError`` naming the argument, what it accepts and what
    it got, for a combination :func:`sparsify_attention` cannot apply (the
    checks of :class:`ScoreOptions`)."""
    ScoreOptions(threshold=threshold, top_k=top_k,
                 threshold_mode=threshold_mode, top_k_fraction=top_k_fraction)


def sparsifies(threshold: Optional[float] = None,
               top_k: Optional[int] = None, threshold_mode: str = "drop",
               top_k_fraction: Optional[float] = None) -> bool:
    """Whether these options make :func:`sparsify_attention` change the
    weights at all."""
    return (threshold is not None or top_k is not None or
            top_k_fraction is not None or threshold_mode != "drop")
