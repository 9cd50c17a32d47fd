"""Per-head linear maps and MLPs, batched over heads (no Python loop).

A tensor ``[N, H, C_in]`` goes through a separate linear map (or MLP) for
every head ``h``, computed as one batched product.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter

from ..functional._checks import check_choice


class HeadwiseLinear(torch.nn.Module):
    r"""``y[:, h] = x[:, h] @ W_h + b_h`` for every head ``h``.

    Initialised per head like :class:`torch.nn.Linear`.
    """

    def __init__(self, heads: int, in_channels: int, out_channels: int,
                 bias: bool = True):
        super().__init__()
        self.heads, self.in_channels, self.out_channels = (heads, in_channels,
                                                           out_channels)
        self.weight = Parameter(torch.empty(heads, in_channels, out_channels))
        self.bias = Parameter(torch.empty(heads, out_channels)) if bias else \
            None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_channels) if self.in_channels else 0.0
        torch.nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            torch.nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.einsum("nhi,hio->nho", x, self.weight)
        return out + self.bias if self.bias is not None else out

    def forward_scaled(self, head: Optional[Tensor], x: Tensor,
                       factors: Sequence[Optional[Tensor]]) -> Tensor:
        r"""``forward`` of ``head`` and every ``f_s * x`` concatenated, without
        building the concatenation.

        The input stands for :math:`[h, f_1 x, \dots, f_S x]` (over the
        last axis).  Each ``f_s`` is a per-node factor (``[N]``, or
        ``None`` for 1), so :math:`(f_s x) W_s = f_s (x W_s)`: one product
        of ``x`` with the
        blocks :math:`W_1 \dots W_S` side by side, then a weighted sum of
        ``S`` outputs of width ``out_channels``, not a product with an
        input ``S`` times as wide built by copying (PNA's degree scalers).

        Args:
            head: ``[N, H, C_head]`` leading input, or ``None``.
            x: ``[N, H, C_x]`` input that every factor scales.
            factors: ``S`` per-node factors; ``C_head + S * C_x`` must be
                ``in_channels``.
        """
        width, count = x.size(-1), len(factors)
        lead = 0 if head is None else head.size(-1)
        if lead + count * width != self.in_channels:
            raise ValueError(
                f"forward_scaled expects {self.in_channels} input channels, "
                f"got {lead} + {count} x {width}")
        blocks = self.weight[:, lead:].reshape(self.heads, count, width,
                                               self.out_channels)
        parts = torch.einsum("nhi,hsio->nhso", x, blocks)
        if all(f is None for f in factors):
            out = parts.sum(2)
        else:
            ones = x.new_ones(x.size(0))
            scale = torch.stack([ones if f is None else f.to(x.dtype)
                                 for f in factors], dim=1)
            # A broadcast product, not einsum: einsum makes this a batched
            # product of N tiny matrices, several times slower.
            out = (parts * scale.view(x.size(0), 1, count, 1)).sum(2)
        if head is not None:
            out = out + torch.einsum("nhi,hio->nho", head,
                                     self.weight[:, :lead])
        return out + self.bias if self.bias is not None else out

    def extra_repr(self) -> str:
        return (f"heads={self.heads}, in_channels={self.in_channels}, "
                f"out_channels={self.out_channels}, "
                f"bias={self.bias is not None}")


class HeadwiseLayerNorm(torch.nn.Module):
    """Layer normalisation over the channels of each head, with a separate
    affine transform per head."""

    def __init__(self, heads: int, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(torch.ones(heads, channels))
        self.bias = Parameter(torch.zeros(heads, channels))

    def reset_parameters(self) -> None:
        torch.nn.init.ones_(self.weight)
        torch.nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        return x * self.weight + self.bias


class HeadwiseRMSNorm(torch.nn.Module):
    r"""RMS normalisation over the channels of each head,
    :math:`x / \sqrt{\mathrm{mean}(x^2) + \epsilon} \cdot w_h`, with a
    separate gain :math:`w_h` per head (no bias), as
    :class:`torch.nn.RMSNorm` (and Llama's ``LlamaRMSNorm``, which the
    published GIN-Attention code uses, with :math:`\epsilon = 10^{-5}`)."""

    def __init__(self, heads: int, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(torch.ones(heads, channels))

    def reset_parameters(self) -> None:
        torch.nn.init.ones_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, x.shape[-1:], eps=self.eps) * self.weight


#: How a hidden width ``multiplier * channels`` becomes an int: to the
#: nearest (this package's default) or down (the published code's
#: ``int(multiplier * channels)``); at least 1 either way.
MLP_ROUNDINGS = ("round", "floor")


def mlp_hidden_width(multiplier: float, channels: int,
                     rounding: str = "round") -> int:
    """The hidden width of a per-head MLP, ``multiplier * channels``
    rounded by ``rounding`` (see :data:`MLP_ROUNDINGS`), at least 1."""
    check_choice("mlp_rounding", rounding, MLP_ROUNDINGS)
    width = multiplier * channels
    return max(1, round(width) if rounding == "round" else int(width))


#: The norms :class:`HeadwiseMLP` takes (``None``: no norm).
MLP_NORMS = ("layer", "rms", None)


class HeadwiseMLP(torch.nn.Module):
    r"""Per-head two-layer MLP:
    ``Linear(C_in, hidden) -> Dropout -> norm -> SiLU -> Linear(hidden,
    C_out)`` (the dropout only with ``dropout > 0``, where the published
    GIN-Attention code has it).

    Args:
        heads: number of heads (one MLP each).
        in_channels, hidden_channels, out_channels: widths.
        norm: ``"layer"`` (per-head LayerNorm), ``"rms"`` (per-head
            RMSNorm) or ``None``.
        dropout: dropout probability after the first linear map.
    """

    def __init__(self, heads: int, in_channels: int, hidden_channels: int,
                 out_channels: int, norm: str | None = "layer",
                 dropout: float = 0.0):
        super().__init__()
        check_choice("mlp_norm", norm, MLP_NORMS)
        if isinstance(dropout, bool) or not isinstance(
                dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"mlp dropout must be a float in [0, 1), got "
                             f"{dropout!r}")
        self.dropout = float(dropout)
        self.lin1 = HeadwiseLinear(heads, in_channels, hidden_channels)
        norms = {"layer": HeadwiseLayerNorm, "rms": HeadwiseRMSNorm}
        self.norm = norms[norm](heads, hidden_channels) \
            if norm is not None else None
        self.lin2 = HeadwiseLinear(heads, hidden_channels, out_channels)

    def reset_parameters(self) -> None:
        for module in (self.lin1, self.norm, self.lin2):
            if module is not None:
                module.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self._after_first(self.lin1(x))

    def forward_scaled(self, head: Optional[Tensor], x: Tensor,
                       factors: Sequence[Optional[Tensor]]) -> Tensor:
        """``forward`` of ``head`` and every ``f_s * x`` concatenated,
        without building the concatenation (see
        :meth:`HeadwiseLinear.forward_scaled`)."""
        return self._after_first(self.lin1.forward_scaled(head, x, factors))

    def _after_first(self, x: Tensor) -> Tensor:
        if self.dropout > 0:
            x = F.dropout(x, self.dropout, self.training)
        if self.norm is not None:
            x = self.norm(x)
        return self.lin2(F.silu(x))
