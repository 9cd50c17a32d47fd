"""The fused CSR attention kernel in Triton (FlashAttention's online
softmax over each target's edges; see
:mod:`tgnn_transformers.functional.triton_attention`)."""
from __future__ import annotations

from typing import List

from .._checks import tracing
from ..triton_attention import (SUPPORTED_DTYPES, interpreting,
                                triton_attention, triton_available)
from .base import AttentionBackend, AttentionCall, Capabilities, EdgeAttention


class TritonBackend(AttentionBackend):
    """Softmax attention with a sum over any graph, edge terms and weights
    included, on CUDA (or on CPU tensors in Triton's interpreter,
    ``TRITON_INTERPRET=1``)."""
    name = "triton"
    capabilities = Capabilities(scores=False, dropout=False,
                                reductions=("sum", ), many_reductions=False)

    def tried_by_auto(self, call: AttentionCall) -> bool:
        return call.query.is_cuda and triton_available() and not tracing()

    def refusals(self, call: AttentionCall) -> List[str]:
        query = call.query
        reasons = []
        if not triton_available():
            reasons.append("triton is not installed")
        elif not (query.is_cuda or (interpreting() and
                                    query.device.type == "cpu")):
            reasons.append(f"tensors on {query.device.type} (needs CUDA, "
                           "or CPU tensors with TRITON_INTERPRET=1)")
        if query.dtype not in SUPPORTED_DTYPES:
            reasons.append(f"dtype {query.dtype}")
        return reasons

    def run(self, call: AttentionCall) -> EdgeAttention:
        out, alpha = triton_attention(
            call.query, call.key, call.value, call.edge_index,
            edge_key=call.edge_key, edge_value=call.edge_value,
            bias=call.bias, scale=call.scale,
            need_weights=call.need_weights)
        return EdgeAttention(out, alpha, call.edge_index)
