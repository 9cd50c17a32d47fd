"""The padded ``[B, H, L, C]`` layout of a batch of token graphs, which the
dense (SDPA) and FlexAttention backends run on."""
from __future__ import annotations

from typing import Optional

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
    """

    def __init__(self, lengths: Tensor, num_nodes: int, multiple: int = 1):
        self.batch_size = lengths.numel()
        self.max_len = int(lengths.max()) if lengths.numel() else 0
        self.max_len = -(-self.max_len // multiple) * multiple
        _, graph, position = token_positions(lengths, num_nodes)
        self.flat_index = graph * self.max_len + position
        self.ragged = bool((lengths != self.max_len).any())
        self.lengths = lengths
        self._key_mask: Optional[Tensor] = None

    def pad(self, x: Tensor) -> Tensor:
        """``[N, H, C]`` -> ``[B, H, L, C]`` (a view when all sequences have
        the same length)."""
        if not self.ragged:
            return x.view(self.batch_size, self.max_len,
                          *x.shape[1:]).transpose(1, 2)
        out = x.new_zeros((self.batch_size * self.max_len, ) + x.shape[1:])
        out = out.index_copy(0, self.flat_index, x)
        return out.view(self.batch_size, self.max_len,
                        *x.shape[1:]).transpose(1, 2)

    def unpad(self, x: Tensor) -> Tensor:
        """``[B, H, L, C]`` -> ``[N, H, C]``."""
        x = x.transpose(1, 2).reshape(self.batch_size * self.max_len,
                                      *x.shape[1:2], x.size(-1))
        if not self.ragged:
            return x
        return x.index_select(0, self.flat_index)

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
