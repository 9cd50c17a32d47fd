from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.utils import degree

from ..functional import REDUCTIONS, ScoreOptions, in_degree
from ..functional._checks import check_choice
from ._attention_conv import AttentionConvBase, Attended, check_value_proj
from .headwise import HeadwiseLinear, HeadwiseMLP, mlp_hidden_width

SCALERS = ("identity", "amplification", "attenuation")


def degree_histogram(edge_indices: Iterable[Tensor],
                     num_nodes: Iterable[int]) -> Tensor:
    """In-degree histogram over one or more graphs (``hist[d]`` = number of
    nodes with in-degree ``d``), the statistic PNA's scalers need."""
    hist = torch.zeros(1, dtype=torch.long)
    for edge_index, n in zip(edge_indices, num_nodes):
        d = degree(edge_index[1], int(n), dtype=torch.long)
        counts = torch.bincount(d, minlength=hist.numel())
        if counts.numel() > hist.numel():
            hist = torch.cat([hist, hist.new_zeros(counts.numel() -
                                                   hist.numel())])
        hist += counts
    return hist


def average_log_degree(deg_histogram: Tensor) -> float:
    r""":math:`\delta = \frac{1}{|V|} \sum_{i} \log(d_i + 1)` from an in-degree
    histogram (as PyG's ``PNAConv`` computes it)."""
    if not isinstance(deg_histogram, Tensor):
        raise TypeError(f"deg must be a tensor (an in-degree histogram, see "
                        f"degree_histogram), got "
                        f"{type(deg_histogram).__name__}")
    hist = deg_histogram.double()
    if hist.dim() != 1 or hist.numel() == 0 or hist.sum() <= 0:
        raise ValueError("deg must be a non-empty 1-D in-degree histogram "
                         "with at least one node")
    if not bool(torch.isfinite(hist).all()) or bool((hist < 0).any()):
        raise ValueError(f"deg must hold finite counts >= 0 (nodes per "
                         f"in-degree), got {deg_histogram.tolist()[:8]}"
                         f"{' ...' if hist.numel() > 8 else ''}")
    bins = torch.arange(hist.numel(), dtype=torch.double)
    return float((torch.log(bins + 1) * hist).sum() / hist.sum())


def _positive_finite(value, name: str) -> float:
    """``value`` as a float, refusing a non-number, a bool, NaN, infinity
    and values <= 0 (each would scale every aggregate by NaN, 0 or inf)."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive finite number, got "
                        f"{value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got "
                         f"{value}")
    return value


class PNAAttentionConv(AttentionConvBase):
    r"""PNA-Attention: attention-weighted principal neighbourhood aggregation
    per head.

    For every head :math:`h` the values :math:`\mathbf{v}_j^h` of the
    in-neighbours of :math:`i` are aggregated with the attention weights
    :math:`\alpha_{ij}^h` (the softmax of :class:`MultiHeadAttentionConv`)
    by each aggregator :math:`\oplus` of
    :func:`~tgnn_transformers.functional.attention_aggregate` (weighted mean,
    max and min over the neighbours with :math:`\alpha > 0`, weighted
    standard deviation, weighted sum, ...), scaled by each degree scaler

    .. math::
        S_{\mathrm{identity}} = 1, \quad
        S_{\mathrm{amplification}}(d) = \frac{\log(d + 1)}{\delta}, \quad
        S_{\mathrm{attenuation}}(d) = \frac{\delta}{\log(d + 1)}

    (:math:`d` the in-degree, clamped at 1; :math:`\delta` the mean
    :math:`\log(d+1)` over the training graphs) and mixed per head:

    .. math::
        \mathbf{h}_i^h = U_h \Big[\, \mathbf{v}_i^h \,\Big\Vert\,
        \big\Vert_{S, \oplus} S(d_i) \bigoplus_{j \in \mathcal{N}(i)}
        (\alpha_{ij}^h, \mathbf{v}_j^h) \Big], \qquad
        \mathbf{x}'_i = \mathbf{O} \big\Vert_h \mathbf{h}_i^h

    with :math:`U_h` a linear map or an MLP (``mixer``) per head, batched
    over heads; the target's own value is included with
    ``include_self=True``.  A node without incoming edges gets 0 from every
    aggregator (so only its own value reaches the mixer), and a graph with
    0 nodes gives a ``[0, out]`` result.  Max and min run over the
    neighbours :math:`j` with :math:`\alpha_{ij}^h > 0` (the published
    code takes its max over the node's own features instead).

    The MLP mixer is ``Linear -> norm -> SiLU -> Linear`` with hidden width
    ``mixer_multiplier`` :math:`\cdot C` (rounded by ``mlp_rounding``) and
    norm ``mlp_norm``.  The weights :math:`\alpha` take the score modes
    and sparsification of :class:`GINAttentionConv` (``normalization``,
    ``threshold``, ``top_k``, ``threshold_mode``, ``top_k_fraction``);
    ``value_proj=False`` uses slices of the features as values.  The
    published code's PNA is ``aggregators=("sum", "mean", "max", "var"),
    scalers=("identity",), mixer="mlp", mixer_multiplier=2,
    mlp_norm=None, mlp_rounding="floor", include_self=False`` (``tgnn
    train --preset paper``).

    Args:
        {shared_args}
        aggregators: reductions of ``attention_aggregate``
            (default ``("mean", "max", "min", "std")``).
        scalers: any of ``("identity", "amplification", "attenuation")``.
        deg: in-degree histogram of the training graph(s) (see
            :func:`degree_histogram`), or give ``delta`` directly.  Needed
            only when a scaler other than ``identity`` is used.
        delta: :math:`\delta` itself.
        mixer: ``"linear"`` or ``"mlp"``.
        include_self: include :math:`\mathbf{v}_i^h` in the mixer's input.
        mixer_multiplier: hidden width of the MLP mixer relative to
            :math:`C`.
        mlp_norm: ``"layer"``, ``"rms"`` or ``None``, the MLP mixer's norm.
        mlp_rounding: ``"round"`` or ``"floor"``, how the mixer's hidden
            width is rounded.
        value_proj: project the values with :math:`\mathbf{W}_V`
            (``False``: one slice of the features per head; ``in_channels``
            must equal ``heads * out_channels``).
        normalization: ``"softmax"``, ``"relu"`` or ``"raw"`` scores.
        threshold: the threshold of the sparsification, as in
            :class:`GINAttentionConv`.
        top_k: keep the ``top_k`` largest weights per target and head.
        threshold_mode: ``"drop"``, ``"shifted-relu"``, ``"binary"`` or
            ``"top-k-fraction"`` (see
            :func:`~tgnn_transformers.functional.sparsify_attention`).
        top_k_fraction: the fraction of ``"top-k-fraction"``.

    The options from ``aggregators`` on are keyword-only.  The shared
    arguments are those of :class:`MultiHeadAttentionConv`, with its
    defaults (``root_weight=True, out_proj=False``, ``TransformerConv``'s);
    the transformer form is ``root_weight=False, out_proj=True``.
    """

    def __init__(
        self,
        *args,
        aggregators: Sequence[str] = ("mean", "max", "min", "std"),
        scalers: Sequence[str] = ("identity", "amplification",
                                  "attenuation"),
        deg: Optional[Tensor] = None,
        delta: Optional[float] = None,
        mixer: str = "linear",
        include_self: bool = True,
        mixer_multiplier: float = 1.0,
        mlp_norm: Optional[str] = "layer",
        mlp_rounding: str = "round",
        value_proj: bool = True,
        normalization: str = "softmax",
        threshold: Optional[float] = None,
        top_k: Optional[int] = None,
        threshold_mode: str = "drop",
        top_k_fraction: Optional[float] = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        heads, out_channels = self.heads, self.out_channels
        aggregators, scalers = tuple(aggregators), tuple(scalers)
        if isinstance(mixer_multiplier, bool) or not isinstance(
                mixer_multiplier, (int, float)) or mixer_multiplier <= 0:
            raise ValueError(f"mixer_multiplier must be a number > 0, got "
                             f"{mixer_multiplier!r}")
        check_value_proj(value_proj)
        self.scores = ScoreOptions(normalization, threshold, top_k,
                                   threshold_mode, top_k_fraction)
        if not value_proj:
            self._drop_value_projection()
        if not aggregators or not scalers:
            raise ValueError("aggregators and scalers must not be empty")
        for name in aggregators:
            check_choice("aggregator", name, REDUCTIONS)
        for name in scalers:
            check_choice("scaler", name, SCALERS)
        check_choice("mixer", mixer, ("linear", "mlp"))
        if delta is None and deg is not None:
            delta = average_log_degree(deg)
        if delta is None and any(s != "identity" for s in scalers):
            raise ValueError("degree scalers need the training graphs' "
                             "in-degree histogram: pass deg="
                             "degree_histogram(...) or delta=<mean log(d+1)>")
        if delta is not None:
            delta = _positive_finite(delta, "delta")
        self.aggregators = aggregators
        self.scalers = scalers
        self.delta = delta
        self.mixer_kind = mixer
        self.include_self = include_self
        mix_in = out_channels * (len(aggregators) * len(scalers) +
                                 int(include_self))
        if mixer == "linear":
            self.mixer = HeadwiseLinear(heads, mix_in, out_channels)
        else:
            hidden = mlp_hidden_width(mixer_multiplier, out_channels,
                                      mlp_rounding)
            self.mixer = HeadwiseMLP(heads, mix_in, hidden, out_channels,
                                     norm=mlp_norm)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.mixer.reset_parameters()

    def _scale_factors(self, degrees: Tensor, dtype: torch.dtype):
        """The per-node factor of each scaler (``None`` for identity)."""
        log_deg = torch.log(degrees.clamp(min=1).to(dtype) + 1)
        factors = {
            "identity": lambda: None,
            "amplification": lambda: log_deg / self.delta,
            "attenuation": lambda: self.delta / log_deg,
        }
        return [factors[s]() for s in self.scalers]

    def reduction(self):
        return self.aggregators

    def _update_heads(self, attended: Attended) -> Tensor:
        num_dst = attended.x_dst.size(0)
        # Read from the CSR index the kernel has built (and cached).
        degrees = in_degree(attended.edge_index, attended.value.size(0),
                            num_dst)
        aggregated = attended.attention.out.flatten(2)  # [N, H, A * C]
        self_value = None
        if self.include_self:
            self_value = attended.self_value
            if self_value is None:
                if self.lin_value is not None and attended.x_dst.size(
                        -1) != self.lin_value.in_channels:
                    raise ValueError("include_self needs equal source and "
                                     "target feature sizes for bipartite "
                                     "inputs")
                self_value = self._values(attended.x_dst,
                                          "x[1] (target features)")
        # The mixer's input is [v_i | S_1(d) a_i | ... | S_S(d) a_i]; each
        # scaler is a per-node number, so the mixer applies it after its
        # first product instead of copying the aggregates once per scaler.
        return self.mixer.forward_scaled(
            self_value, aggregated,
            self._scale_factors(degrees, aggregated.dtype))

    def _extra_repr_args(self) -> List[str]:
        args = [f"aggregators={list(self.aggregators)}",
                f"scalers={list(self.scalers)}", f"mixer={self.mixer_kind!r}"]
        if not self.include_self:
            args.append("include_self=False")
        if not self.value_proj:
            args.append("value_proj=False")
        return args
