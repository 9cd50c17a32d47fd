"""PyG ``MessagePassing`` layers over the functional core, and the
transformer block built from them."""
from ._attention_conv import AttentionConvBase
from .gin_attention_conv import GINAttentionConv
from .gps_conv import GPSConv
from .graph_transformer import (ATTENTION_CONVS, FeedForward,
                                GraphTransformer, GraphTransformerLayer)
from .headwise import HeadwiseLinear, HeadwiseMLP
from .kv_cache import KeyValueCache
from .multi_head_attention_conv import MultiHeadAttentionConv
from .pna_attention_conv import (PNAAttentionConv, average_log_degree,
                                 degree_histogram)
from .positional import (LearnedPositionalEncoding, RelativePositionBias,
                         RotaryEmbedding, SinusoidalPositionalEncoding,
                         relative_position_bucket)

__all__ = [
    "ATTENTION_CONVS",
    "AttentionConvBase",
    "KeyValueCache",
    "MultiHeadAttentionConv",
    "GINAttentionConv",
    "GPSConv",
    "PNAAttentionConv",
    "GraphTransformerLayer",
    "GraphTransformer",
    "FeedForward",
    "HeadwiseLinear",
    "HeadwiseMLP",
    "degree_histogram",
    "average_log_degree",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEncoding",
    "RotaryEmbedding",
    "RelativePositionBias",
    "relative_position_bucket",
]
