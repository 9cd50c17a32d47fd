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
        self.key: Optional[Tensor] = None
        self.value: Optional[Tensor] = None

    @property
    def size(self) -> int:
        """Number of cached nodes."""
        return 0 if self.key is None else self.key.size(0)

    def extend(self, key: Tensor, value: Tensor) -> Tuple[Tensor, Tensor]:
        """Appends the new nodes' ``[N, H, C]`` keys and values; returns all
        keys and values, cached ones first."""
        if self.key is None:
            self.key, self.value = key, value
        else:
            self.key = torch.cat([self.key, key])
            self.value = torch.cat([self.value, value])
        return self.key, self.value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"
