"""Per-head linear maps and MLPs, batched over heads (no Python loop).

A tensor ``[N, H, C_in]`` goes through a separate linear map (or MLP) for
every head ``h``, computed as one batched product.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter


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


class HeadwiseMLP(torch.nn.Module):
    r"""Per-head two-layer MLP:
    ``Linear(C_in, hidden) -> norm -> SiLU -> Linear(hidden, C_out)``.

    Args:
        heads: number of heads (one MLP each).
        in_channels, hidden_channels, out_channels: widths.
        norm: ``"layer"`` (per-head LayerNorm) or ``None``.
    """

    def __init__(self, heads: int, in_channels: int, hidden_channels: int,
                 out_channels: int, norm: str | None = "layer"):
        super().__init__()
        if norm not in ("layer", None):
            raise ValueError(f"unknown norm {norm!r}; expected 'layer' or "
                             "None")
        self.lin1 = HeadwiseLinear(heads, in_channels, hidden_channels)
        self.norm = HeadwiseLayerNorm(heads, hidden_channels) \
            if norm == "layer" else None
        self.lin2 = HeadwiseLinear(heads, hidden_channels, out_channels)

    def reset_parameters(self) -> None:
        for module in (self.lin1, self.norm, self.lin2):
            if module is not None:
                module.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        x = self.lin1(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.lin2(F.silu(x))
