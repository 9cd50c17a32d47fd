"""Token sequences as graphs."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import to_dense_batch

from ..functional.patterns import (binary_partition_spans,
                                   check_pattern_arguments,
                                   num_virtual_nodes, sequence_edge_index)


def sequence_to_graph(x: Union[Tensor, Data], pattern: str = "full", *,
                      window: int = 1, dilation: int = 1, num_global: int = 1,
                      num_random: int = 2, seed: int = 0,
                      virtual_token: int = 0) -> Data:
    """Turns one token sequence into a graph.

    Args:
        x: ``[L]`` token ids, ``[L, F]`` token features, or a ``Data`` whose
            ``x`` is one of those (its other attributes are kept).
        pattern: ``"full"``, ``"causal"``, ``"window"``, ``"dilated"`` or
            ``"global_random"``; see
            :func:`~tgnn_transformers.functional.sequence_edge_index` for the
            edges and the meaning of the remaining arguments;
            ``"global_window"``, ``"binary_partition"`` as there.
        virtual_token: the id given to virtual nodes (the span nodes of
            ``"binary_partition"``) when ``x`` holds token ids; with
            features they get zeros.

    Returns:
        a ``Data`` with ``x``, ``edge_index`` (``edge_index[0]`` the source
        token ``j``, ``edge_index[1]`` the target ``i``, sorted by target),
        ``position`` (``0 .. L - 1``, for positional encodings) and
        ``num_nodes``.  Patterns with virtual nodes append them after the
        tokens, with the position of their span's middle token, and mark
        them in ``data.virtual`` (``[N]`` bool); the other patterns set
        no ``virtual``.
    """
    data = x.clone() if isinstance(x, Data) else Data(x=x)
    tokens = data.x
    if not isinstance(tokens, Tensor):
        raise TypeError("sequence_to_graph needs token ids [L] or features "
                        f"[L, F] in x, got {type(tokens).__name__}")
    if tokens.dim() not in (1, 2):
        raise ValueError(f"x must be [L] token ids or [L, F] features, got "
                         f"shape {list(tokens.shape)}")
    length = tokens.size(0)
    data.edge_index = sequence_edge_index(
        length, pattern, window=window, dilation=dilation,
        num_global=num_global, num_random=num_random,
        seed=seed).to(tokens.device)
    data.position = torch.arange(length, device=tokens.device)
    extra = num_virtual_nodes(length, pattern)
    if extra:
        spans = binary_partition_spans(length)
        middle = torch.tensor([(a + b - 1) // 2 for a, b in spans],
                              device=tokens.device)
        filler = (tokens.new_full((extra, ), virtual_token)
                  if tokens.dim() == 1 else
                  tokens.new_zeros(extra, tokens.size(1)))
        data.x = torch.cat([tokens, filler])
        data.position = torch.cat([data.position, middle])
        data.virtual = torch.arange(length + extra,
                                    device=tokens.device) >= length
    data.num_nodes = length + extra
    return data


class SequenceToGraph(BaseTransform):
    r"""Turns the token sequence in ``data.x`` into a graph (functional
    form: :func:`sequence_to_graph`).

    .. code-block:: python

        from torch_geometric.data import Batch, Data
        from tgnn_transformers.transforms import SequenceToGraph

        transform = SequenceToGraph("causal")
        batch = Batch.from_data_list([transform(Data(x=torch.randn(5, 16))),
                                      transform(Data(x=torch.randn(3, 16)))])

    Patterns: ``full`` (every token attends to every token, itself
    included), ``causal`` (:math:`j \to i` for :math:`j \le i`), ``window``
    (:math:`|i - j| \le w`), ``dilated`` (:math:`i - j = k d`,
    :math:`|k| \le w`), ``global_random`` (global tokens plus ``num_random``
    random edges per token, seeded), ``global_window`` (a window plus
    ``num_global`` global tokens, as Longformer/BigBird),
    ``binary_partition`` (BP-Transformer: virtual span nodes over a balanced
    binary split, O(L log L) edges; ``virtual_token`` is their id).
    """

    def __init__(self, pattern: str = "full", *, window: int = 1,
                 dilation: int = 1, num_global: int = 1, num_random: int = 2,
                 seed: int = 0, virtual_token: int = 0):
        check_pattern_arguments(pattern, window=window, dilation=dilation,
                                num_global=num_global,
                                num_random=num_random, seed=seed)
        self.pattern = pattern
        self.kwargs = dict(window=window, dilation=dilation,
                           num_global=num_global, num_random=num_random,
                           seed=seed, virtual_token=virtual_token)

    def forward(self, data: Data) -> Data:
        return sequence_to_graph(data, self.pattern, **self.kwargs)

    def __repr__(self) -> str:
        shown = {
            "window": ("window", "dilated", "global_window",
                       "binary_partition"),
            "dilation": ("dilated", ),
            "num_global": ("global_random", "global_window"),
            "virtual_token": ("binary_partition", ),
            "num_random": ("global_random", ),
            "seed": ("global_random", ),
        }
        args = [repr(self.pattern)] + [
            f"{k}={v}" for k, v in self.kwargs.items()
            if self.pattern in shown[k]
        ]
        return f"{self.__class__.__name__}({', '.join(args)})"


def to_padded(x: Tensor, batch: Optional[Tensor] = None,
              max_len: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Node features of a graph batch -> padded ``[B, L_max, ...]`` tensor and
    ``[B, L_max]`` boolean mask of the real tokens (PyG's
    :func:`~torch_geometric.utils.to_dense_batch`)."""
    return to_dense_batch(x, batch, max_num_nodes=max_len)


def from_padded(padded: Tensor, mask: Tensor) -> Tensor:
    """The inverse of :func:`to_padded`: ``[B, L, ...]`` and its mask back to
    the ``[N, ...]`` node tensor of the graph batch."""
    if padded.shape[:2] != mask.shape:
        raise ValueError(f"mask must have shape {list(padded.shape[:2])}, "
                         f"got {list(mask.shape)}")
    return padded[mask]
