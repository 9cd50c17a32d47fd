"""tgnn_transformers: transformers as graph neural networks, for PyG.

One family of attention operators, written as PyG ``MessagePassing`` layers,
for graph batches and token sequences turned into graphs.
"""
from . import functional, transforms
from .nn import (GINAttentionConv, GraphTransformer, GraphTransformerLayer,
                 MultiHeadAttentionConv, PNAAttentionConv)

__version__ = "0.1.0"

__all__ = [
    "MultiHeadAttentionConv",
    "GINAttentionConv",
    "PNAAttentionConv",
    "GraphTransformerLayer",
    "GraphTransformer",
    "functional",
    "transforms",
    "__version__",
]
