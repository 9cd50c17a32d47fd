"""Keys and values of the nodes an attention conv has already seen, for
autoregressive decoding: each new token is one new node that attends to
the cached keys and values of the nodes before it (message passing into
one node), instead of a re-run of the whole sequence."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor


class KeyValueCache:
    """The ``[S, H, C]`` keys and values of ``S`` source nodes of one conv.

    Give it to an attention conv's ``forward`` as ``cache=``: the call's
    ``x`` then holds only the *new* nodes, whose keys and values are
    appended (after projection, and after RoPE with the new nodes' ``pos``),
    and whose queries attend over the cached nodes and themselves.  The
    sources of that call's ``edge_index`` are numbered over the cache
    first, then the new nodes (``0 .. size - 1`` the cached ones,
    ``size + n`` the ``n``-th new node as it was before the call); its
    targets are the new nodes ``0 .. N_new - 1``.

    One cache per conv (a :class:`~tgnn_transformers.nn.GraphTransformer`
    takes a list, one per layer).
    """

    def __init__(self):
        # Buffers with room to grow; the cache is their first ``_size``
        # rows, so a decoding step writes one row instead of copying the
        # whole cache (torch.cat).
        self._keys: Optional[Tensor] = None
        self._values: Optional[Tensor] = None
        self._size = 0

    @property
    def key(self) -> Optional[Tensor]:
        """The cached ``[S, H, C]`` keys (``None`` before the first call)."""
        return None if self._keys is None else self._keys[:self._size]

    @property
    def value(self) -> Optional[Tensor]:
        """The cached ``[S, H, C]`` values."""
        return None if self._values is None else self._values[:self._size]

    @property
    def size(self) -> int:
        """Number of cached nodes."""
        return self._size

    def extend(self, key: Tensor, value: Tensor) -> Tuple[Tensor, Tensor]:
        """Appends the new nodes' ``[N, H, C]`` keys and values; returns all
        keys and values, cached ones first."""
        new_size = self._size + key.size(0)
        if key.requires_grad or value.requires_grad:
            # Writing into a buffer would put earlier steps' outputs under
            # in-place writes that autograd refuses: concatenate instead.
            keys, values = ((key, value) if self._keys is None else
                            (torch.cat([self.key, key]),
                             torch.cat([self.value, value])))
            self._keys, self._values, self._size = keys, values, new_size
            return keys, values
        if self._keys is None or new_size > self._keys.size(0) or \
                self._keys.requires_grad or self._keys.dtype != key.dtype \
                or self._keys.device != key.device:
            capacity = max(new_size, 2 * self._size, 16)
            self._keys = self._grown(self.key, key, capacity)
            self._values = self._grown(self.value, value, capacity)
        self._keys[self._size:new_size] = key
        self._values[self._size:new_size] = value
        self._size = new_size
        return self.key, self.value

    @staticmethod
    def _grown(cached: Optional[Tensor], new: Tensor,
               capacity: int) -> Tensor:
        buffer = new.new_empty((capacity, ) + tuple(new.shape[1:]))
        if cached is not None:
            buffer[:cached.size(0)] = cached
        return buffer

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"
