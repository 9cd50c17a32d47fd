"""The padded ``[B, H, L, C]`` layout of a batch of token graphs, which the
dense (SDPA) and FlexAttention backends run on.

A layout depends only on the sequence lengths (and the device and the
rounding), so :func:`padded_layout` keeps the recent ones by lengths: a new
batch graph of lengths seen before (every batch of a language model, a
text batch of equal lengths) reuses its index tensors.

Padding a ragged batch is one row gather per tensor and pass: forward, the
padded queries, keys and values gather their rows (a padding row repeats a
real row of its own sequence: finite, and never seen -- its key is masked
or after every real query of a causal sequence, its query is dropped);
backward, their gradients gather the real rows back.  The output's
gradient is the one padded tensor that needs zeros in the padding (a
padding query must not send gradient to the keys it saw).  An equal-length
batch in order is a view each way.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Tuple

import torch
from torch import Tensor

from .patterns import token_positions


class PaddedLayout:
    """Index map between a node tensor and its padded ``[B, L]`` layout.

    Args:
        lengths: ``[B]`` tokens of each sequence (nodes stored sequence
            after sequence, as PyG's ``Batch`` does).
        num_nodes: ``lengths.sum()`` (saves a device sync).
        multiple: round the padded length ``L`` up to a multiple of this
            (FlexAttention's block on CUDA).
        sizes: ``lengths`` as Python integers, when the caller has them.
    """

    def __init__(self, lengths: Tensor, num_nodes: int, multiple: int = 1,
                 sizes: Optional[Tuple[int, ...]] = None):
        sizes = tuple(lengths.tolist()) if sizes is None else sizes
        self.batch_size = len(sizes)
        longest = max(sizes, default=0)
        self.max_len = -(-longest // multiple) * multiple
        self.ragged = any(size != self.max_len for size in sizes)
        self.lengths = lengths
        self.num_nodes = num_nodes
        #: ``[N]`` each node's row in the padded layout
        self.flat_index: Optional[Tensor] = None
        #: ``[B * L]`` the node each padded row holds (a padding row: the
        #: last token of its sequence, of the one before for an empty one)
        self.gather_index: Optional[Tensor] = None
        #: the padding rows
        self.pad_index: Optional[Tensor] = None
        if self.ragged:
            ptr, graph, position = token_positions(lengths, num_nodes)
            self.flat_index = graph * self.max_len + position
            slot = torch.arange(self.max_len, device=lengths.device)
            last = (ptr[1:] - 1).clamp(min=0).view(-1, 1)
            gather = torch.minimum(ptr[:-1].view(-1, 1) + slot, last)
            self.gather_index = gather.view(-1)
            self.pad_index = (slot >= lengths.view(-1, 1)).view(-1).nonzero(
            ).view(-1)
        self._key_mask: Optional[Tensor] = None

    # -- raw copies (no autograd): [N, ...] <-> [B * L, ...] -----------------
    def _to_padded(self, x: Tensor, zero_padding: bool) -> Tensor:
        if x.size(0) == 0:  # no token to repeat
            return x.new_zeros((self.batch_size * self.max_len, ) +
                               x.shape[1:])
        out = x.index_select(0, self.gather_index)
        return out.index_fill_(0, self.pad_index, 0) if zero_padding else out

    def _from_padded(self, x: Tensor) -> Tensor:
        return x.index_select(0, self.flat_index)

    def _flat(self, x: Tensor) -> Tensor:
        """``[B, H, L, C]`` -> ``[B * L, H, C]`` (a view when SDPA left it
        in the ``[B, L, H, C]`` order, as it does for inputs in that
        order)."""
        return x.transpose(1, 2).reshape(self.batch_size * self.max_len,
                                         x.size(1), x.size(-1))

    def _split(self, x: Tensor) -> Tensor:
        """``[B * L, H, C]`` -> the ``[B, H, L, C]`` view."""
        return x.view(self.batch_size, self.max_len,
                      *x.shape[1:]).transpose(1, 2)

    def pad(self, *xs: Tensor):
        """``[N, H, C]`` -> ``[B, H, L, C]`` (views when all sequences have
        the same length; else a padding row repeats a real row of its
        sequence, so mask its keys and drop its queries); one tensor for
        one argument, a tuple for several (one autograd node)."""
        if not self.ragged:
            out = tuple(self._split(x) for x in xs)
        else:
            out = tuple(self._split(x) for x in _Pad.apply(self, *xs))
        return out[0] if len(xs) == 1 else out

    def unpad(self, x: Tensor) -> Tensor:
        """``[B, H, L, C]`` -> ``[N, H, C]``."""
        if not self.ragged:
            return self._flat(x)
        return _Unpad.apply(self, self._flat(x))

    def key_mask(self) -> Tensor:
        """``[B, 1, 1, L]`` boolean mask of the real (non-padding) keys
        (built once per layout)."""
        if self._key_mask is None:
            position = torch.arange(self.max_len, device=self.lengths.device)
            mask = position.view(1, -1) < self.lengths.view(-1, 1)
            # An empty sequence would leave its padded query rows with no
            # key at all (NaN); those rows are discarded, but let them see
            # key 0.
            mask[:, 0] = True
            self._key_mask = mask.view(self.batch_size, 1, 1, self.max_len)
        return self._key_mask


class _Pad(torch.autograd.Function):
    """Ragged ``[N, H, C]`` tensors -> ``[B * L, H, C]``; the backward
    gathers the real rows of the gradients (the padding rows' gradients
    are zero: their keys are masked, their queries' outputs dropped)."""

    @staticmethod
    def forward(ctx, layout: PaddedLayout, *xs: Tensor):
        ctx.layout = layout
        return tuple(layout._to_padded(x, zero_padding=False) for x in xs)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        return (None, ) + tuple(
            None if g is None else ctx.layout._from_padded(g) for g in grads)


class _Unpad(torch.autograd.Function):
    """``[B * L, H, C]`` -> ragged ``[N, H, C]``; the backward pads the
    gradient with zeros (a padding query must send none)."""

    @staticmethod
    def forward(ctx, layout: PaddedLayout, x: Tensor):
        ctx.layout = layout
        return layout._from_padded(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, ctx.layout._to_padded(grad, zero_padding=True)


#: layouts kept by :func:`padded_layout`, least recently used first
_LAYOUTS: "OrderedDict[tuple, PaddedLayout]" = OrderedDict()
#: how many: the shapes one training run cycles through, not a leak
MAX_LAYOUTS = 64


def padded_layout(lengths: Tensor, num_nodes: int,
                  multiple: int = 1) -> PaddedLayout:
    """The :class:`PaddedLayout` of ``lengths`` (tokens per sequence), kept
    for the next batch of the same lengths on the same device."""
    sizes = tuple(lengths.tolist())
    key = (sizes, lengths.device, multiple)
    layout = _LAYOUTS.get(key)
    if layout is None:
        layout = PaddedLayout(lengths, num_nodes, multiple, sizes=sizes)
        _LAYOUTS[key] = layout
        while len(_LAYOUTS) > MAX_LAYOUTS:
            _LAYOUTS.popitem(last=False)
    else:
        _LAYOUTS.move_to_end(key)
    return layout
