from __future__ import annotations

import torch

from ._attention_conv import AttentionConvBase


class MultiHeadAttentionConv(AttentionConvBase):
    r"""Multi-head dot-product attention as a graph convolution.

    A drop-in superset of PyG's
    :class:`~torch_geometric.nn.conv.TransformerConv` (same arguments, same
    parameter names, same results) that also covers the standard transformer
    attention of :class:`torch.nn.MultiheadAttention`:

    .. math::
        \mathbf{x}'_i = \mathbf{O} \, \big\Vert_{h=1}^{H}
        \sum_{j \in \mathcal{N}(i)} \alpha_{ij}^h \left(\mathbf{W}_V^h
        \mathbf{x}_j + \mathbf{W}_E^h \mathbf{e}_{ij}\right)
        + \mathbf{W}_{\mathrm{skip}} \mathbf{x}_i

    .. math::
        \alpha_{ij}^h = \mathrm{softmax}_{j \in \mathcal{N}(i)} \left(
        \frac{(\mathbf{W}_Q^h \mathbf{x}_i)^{\top} (\mathbf{W}_K^h
        \mathbf{x}_j + \mathbf{W}_E^h \mathbf{e}_{ij})}{\sqrt{C}} \right)

    where :math:`\Vert` concatenates the heads (or averages them with
    ``concat=False``), :math:`\mathbf{O}` is the optional output projection
    (``out_proj=True``), and the skip term is present with
    ``root_weight=True`` (optionally gated by
    :math:`\beta_i = \sigma(\mathbf{w}^{\top}[\mathbf{x}_r, \mathbf{m}_i,
    \mathbf{x}_r - \mathbf{m}_i])` with ``beta=True``, as in
    ``TransformerConv``).  ``TransformerConv`` is ``out_proj=False``; the
    transformer's attention is ``out_proj=True, root_weight=False`` on the
    complete token graph (see :meth:`from_torch`).

    The attention itself is :func:`tgnn_transformers.functional.edge_attention`:
    on a batch of complete or causal token graphs (from
    :class:`~tgnn_transformers.transforms.SequenceToGraph`) it runs PyTorch's
    fused ``scaled_dot_product_attention``; on any other graph it runs on the
    edges.

    Args:
        {shared_args}

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V}_s|, F_s), (|\mathcal{V}_t|, F_t))`,
          edge indices :math:`(2, |\mathcal{E}|)` or a sparse transposed
          adjacency :math:`(|\mathcal{V}_t|, |\mathcal{V}_s|)`, edge
          features :math:`(|\mathcal{E}|, D)` *(optional)*, batch vector
          :math:`(|\mathcal{V}|)` *(optional)*
        - **output:** :math:`(|\mathcal{V}_t|, H \cdot C)` or
          :math:`(|\mathcal{V}_t|, C)` with ``concat=False``; with
          ``return_attention_weights=True`` also ``(edge_index, alpha)``,
          ``alpha`` of shape :math:`(|\mathcal{E}|, H)` (for a sparse
          adjacency, the adjacency with ``alpha`` as values; see
          :meth:`forward`).

    PyG's explain tools (attention coefficients, edge masks) and
    message-passing hooks see the attention weights as the messages (see
    :class:`~tgnn_transformers.nn._attention_conv.AttentionConvBase`);
    ``torch.jit.script`` is not supported, ``torch.compile`` is.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reset_parameters()

    @classmethod
    def from_torch(cls, mha: torch.nn.MultiheadAttention,
                   backend: str = "auto") -> "MultiHeadAttentionConv":
        """Builds the layer that computes ``mha(x, x, x)`` on token graphs.

        On the ``full`` graph of a sequence the result equals ``mha``'s
        output for that sequence; on the ``causal`` graph it equals ``mha``
        with a causal mask.  Requires ``kdim == vdim == embed_dim`` and no
        ``add_bias_kv`` / ``add_zero_attn``.
        """
        if not isinstance(mha, torch.nn.MultiheadAttention):
            raise TypeError(f"expected torch.nn.MultiheadAttention, got "
                            f"{type(mha).__name__}")
        if not mha._qkv_same_embed_dim:
            raise ValueError("from_torch needs kdim == vdim == embed_dim "
                             f"(got kdim={mha.kdim}, vdim={mha.vdim})")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("from_torch does not support add_bias_kv or "
                             "add_zero_attn (they add keys outside the graph)")
        embed_dim, heads = mha.embed_dim, mha.num_heads
        has_bias = mha.in_proj_bias is not None
        conv = cls(embed_dim, embed_dim // heads, heads=heads, concat=True,
                   dropout=mha.dropout, bias=has_bias, root_weight=False,
                   out_proj=True, backend=backend)
        conv.to(device=mha.in_proj_weight.device,
                dtype=mha.in_proj_weight.dtype)
        with torch.no_grad():
            w_q, w_k, w_v = mha.in_proj_weight.chunk(3, dim=0)
            conv.lin_query.weight.copy_(w_q)
            conv.lin_key.weight.copy_(w_k)
            conv.lin_value.weight.copy_(w_v)
            conv.out_proj.weight.copy_(mha.out_proj.weight)
            if has_bias:
                b_q, b_k, b_v = mha.in_proj_bias.chunk(3, dim=0)
                conv.lin_query.bias.copy_(b_q)
                conv.lin_key.bias.copy_(b_k)
                conv.lin_value.bias.copy_(b_v)
                conv.out_proj.bias.copy_(mha.out_proj.bias)
        conv.train(mha.training)
        return conv
