"""PyG ``MessagePassing`` layers over the functional core."""
from .multi_head_attention_conv import MultiHeadAttentionConv

__all__ = ["MultiHeadAttentionConv"]
