r"""Positional encodings for token graphs.

A graph of tokens without positions is a bag of words: attention is
permutation-equivariant.  Positions enter in one of three places:

* **absolute**, added to the node features before the first layer, from
  each node's integer position (``data.position``):
  :class:`SinusoidalPositionalEncoding` and
  :class:`LearnedPositionalEncoding`;
* **rotary** (RoPE), applied to the queries and keys inside the attention
  convs (built with ``rope=True`` or a :class:`RotaryEmbedding`; the conv's
  ``forward`` then takes ``pos``), so the scores depend only on position
  differences: :class:`RotaryEmbedding`;
* **relative bias**, an additive per-edge, per-head score bias learned per
  T5 bucket of the position difference and handed to every attention conv
  as ``attn_bias``: :class:`RelativePositionBias`.

For graphs use PyG's ``AddLaplacianEigenvectorPE`` / ``AddRandomWalkPE``
transforms; their features concatenate to ``x`` as usual.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor


def _check_positions(pos: Tensor, num_nodes: Optional[int] = None) -> Tensor:
    if not isinstance(pos, Tensor):
        raise TypeError(f"pos must be a tensor of integer positions, got "
                        f"{type(pos).__name__}")
    if pos.dim() != 1 or pos.is_floating_point() or pos.is_complex():
        raise ValueError(f"pos must be a [N] integer tensor, got "
                         f"{pos.dtype} of shape {list(pos.shape)}")
    if num_nodes is not None and pos.numel() != num_nodes:
        raise ValueError(f"pos has {pos.numel()} entries but there are "
                         f"{num_nodes} nodes")
    return pos


def sinusoidal_table(pos: Tensor, channels: int,
                     base: float = 10000.0) -> Tensor:
    r"""The Transformer's sinusoidal encodings of the integer positions
    ``pos``, ``[N, channels]``.

    :math:`PE_{p, 2i} = \sin(p / b^{2i/d})`,
    :math:`PE_{p, 2i+1} = \cos(p / b^{2i/d})` (Vaswani et al., 2017)."""
    half = torch.arange(0, channels, 2, device=pos.device,
                        dtype=torch.float32)
    inv_freq = base**(-half / channels)
    angle = pos.to(torch.float32)[:, None] * inv_freq[None, :]
    out = torch.zeros(pos.numel(), channels, device=pos.device)
    out[:, 0::2] = angle.sin()
    out[:, 1::2] = angle.cos()[:, :channels // 2]
    return out


class SinusoidalPositionalEncoding(torch.nn.Module):
    r"""Adds fixed sinusoidal encodings of each node's position to its
    features:

    .. math::
        \mathbf{x}_i' = \mathbf{x}_i + \mathrm{PE}(p_i), \quad
        \mathrm{PE}(p)_{2k} = \sin(p / b^{2k/d}),\
        \mathrm{PE}(p)_{2k+1} = \cos(p / b^{2k/d})

    with :math:`b` = ``base``.  No parameters.

    Args:
        channels: feature width :math:`d`.
        base: the wavelength base :math:`b`.
    """

    def __init__(self, channels: int, base: float = 10000.0):
        super().__init__()
        if channels <= 0:
            raise ValueError(f"channels must be positive, got {channels}")
        self.channels, self.base = channels, base

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """``x`` ``[N, channels]``, ``pos`` ``[N]`` integer positions."""
        _check_positions(pos, x.size(0))
        return x + sinusoidal_table(pos, self.channels,
                                    self.base).to(x.dtype)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels})"


class LearnedPositionalEncoding(torch.nn.Module):
    r"""Adds a learned embedding of each node's position to its features,
    :math:`\mathbf{x}_i' = \mathbf{x}_i + \mathbf{P}_{p_i}` (BERT's
    absolute positions), for positions ``0`` to ``max_positions - 1``.

    Args:
        channels: feature width.
        max_positions: number of positions with an embedding.
    """

    def __init__(self, channels: int, max_positions: int = 512):
        super().__init__()
        self.max_positions = max_positions
        self.embedding = torch.nn.Embedding(max_positions, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        torch.nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        _check_positions(pos, x.size(0))
        if pos.numel() and (int(pos.min()) < 0 or
                            int(pos.max()) >= self.max_positions):
            raise ValueError(f"positions must be in [0, {self.max_positions})"
                             f" (max_positions), got {int(pos.min())} .. "
                             f"{int(pos.max())}")
        return x + self.embedding(pos)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.embedding.embedding_dim}, "
                f"max_positions={self.max_positions})")


class RotaryEmbedding(torch.nn.Module):
    r"""Rotary position embedding (RoPE, Su et al., 2021) of per-head
    queries or keys.

    Channel pairs :math:`(c, c + C/2)` of a head vector at position
    :math:`p` are rotated by the angle :math:`p\,\theta_c`,
    :math:`\theta_c = b^{-2c/C}` (the "rotate half" layout of GPT-NeoX and
    Hugging Face's Llama):

    .. math::
        \mathrm{RoPE}(\mathbf{x}, p) = \mathbf{x} \odot \cos(p\theta) +
        \mathrm{rot}(\mathbf{x}) \odot \sin(p\theta), \quad
        \mathrm{rot}(\mathbf{x}) = [-\mathbf{x}_{C/2:},\ \mathbf{x}_{:C/2}]

    Since rotations compose, :math:`\langle \mathrm{RoPE}(\mathbf{q}, p_i),
    \mathrm{RoPE}(\mathbf{k}, p_j)\rangle` depends on the positions only
    through :math:`p_i - p_j`.  No parameters.

    Args:
        head_dim: channels per head :math:`C` (even).
        base: the frequency base :math:`b`.
    """

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim <= 0 or head_dim % 2:
            raise ValueError(f"RoPE needs an even, positive head width, got "
                             f"{head_dim}")
        self.head_dim, self.base = head_dim, base

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """``x`` ``[N, H, C]`` (or ``[N, C]``), ``pos`` ``[N]`` integer
        positions -> ``x`` rotated, same shape."""
        _check_positions(pos, x.size(0))
        if x.size(-1) != self.head_dim:
            raise ValueError(f"RoPE was built for head width {self.head_dim}"
                             f", got {x.size(-1)}")
        half = self.head_dim // 2
        inv_freq = self.base**(-torch.arange(
            half, device=x.device, dtype=torch.float32) * 2 / self.head_dim)
        # float64 angles keep large positions exact enough.
        angle = (pos.to(torch.float64)[:, None] *
                 inv_freq.to(torch.float64)[None, :])
        cos = torch.cat([angle.cos(), angle.cos()], -1).to(x.dtype)
        sin = torch.cat([angle.sin(), angle.sin()], -1).to(x.dtype)
        if x.dim() == 3:
            cos, sin = cos[:, None, :], sin[:, None, :]
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.head_dim})"


def relative_position_bucket(relative_position: Tensor,
                             bidirectional: bool = True,
                             num_buckets: int = 32,
                             max_distance: int = 128) -> Tensor:
    r"""T5's bucket of each relative position
    :math:`p_j - p_i` (key minus query): exact buckets for small distances,
    logarithmically wider ones up to ``max_distance``, one bucket beyond;
    with ``bidirectional`` half of the buckets are for positive offsets.
    The same function as Hugging Face's
    ``T5Attention._relative_position_bucket``."""
    relative_position = relative_position.long()
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets
        relative_position = relative_position.abs()
    else:
        relative_position = -torch.clamp(relative_position, max=0)
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    large = max_exact + (
        torch.log(relative_position.float().clamp_min(1) / max_exact) /
        math.log(max_distance / max_exact) *
        (num_buckets - max_exact)).long()
    large = torch.clamp(large, max=num_buckets - 1)
    return buckets + torch.where(is_small, relative_position, large)


class RelativePositionBias(torch.nn.Module):
    r"""T5-style relative-position bias: a learned scalar per head and per
    bucket of the position difference of each edge, returned as the
    ``[E, H]`` additive score bias the attention convs take as
    ``attn_bias``:

    .. math::
        b_{ij}^h = \mathbf{B}_{h,\ \mathrm{bucket}(p_j - p_i)}

    for the edge :math:`j \to i` (``edge_index[:, e] = (j, i)``).  Compute
    it once per batch and pass it to every layer (as T5 does).

    Args:
        heads: number of heads :math:`H`.
        num_buckets, max_distance, bidirectional: as in T5
            (:func:`relative_position_bucket`).
    """

    def __init__(self, heads: int, num_buckets: int = 32,
                 max_distance: int = 128, bidirectional: bool = True):
        super().__init__()
        self.heads, self.num_buckets = heads, num_buckets
        self.max_distance, self.bidirectional = max_distance, bidirectional
        self.embedding = torch.nn.Embedding(num_buckets, heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        torch.nn.init.zeros_(self.embedding.weight)

    def forward(self, edge_index: Tensor, pos: Tensor) -> Tensor:
        """``edge_index`` ``[2, E]`` (row 0 sources ``j``), ``pos`` ``[N]``
        -> ``[E, H]`` bias."""
        _check_positions(pos)
        relative = pos[edge_index[0]] - pos[edge_index[1]]
        bucket = relative_position_bucket(relative, self.bidirectional,
                                          self.num_buckets,
                                          self.max_distance)
        return self.embedding(bucket)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(heads={self.heads}, num_buckets="
                f"{self.num_buckets}, max_distance={self.max_distance})")


POSITIONAL_ENCODINGS = ("sinusoidal", "learned", "rope", "relative", None)

__all__ = ["SinusoidalPositionalEncoding", "LearnedPositionalEncoding",
           "RotaryEmbedding", "RelativePositionBias",
           "relative_position_bucket", "sinusoidal_table"]
