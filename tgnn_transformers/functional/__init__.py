r"""The functional core: attention on graphs, with no parameters.

Like :mod:`torch.nn.functional`, everything here is a plain function of
tensors; the layers in :mod:`tgnn_transformers.nn` hold the projections and
call into these (and only into what this module exports).
"""
from ._cache import clear_graph_cache
from ._checks import check_edge_index_layout
from .adjacency import (adjacency_size, adjacency_to_edge_index, in_degree,
                        weights_on_adjacency)
from .aggregate import REDUCTIONS, attention_aggregate
from .attention import edge_attention
from .backends import ATTENTION_BACKENDS, BACKENDS, EdgeAttention
from .dropout import feature_dropout
from .patterns import (PATTERNS, TokenPattern, binary_partition_spans,
                       complete_edge_index, recognize_sequence_pattern,
                       recognize_token_pattern, sequence_edge_index)
from .scores import (SCORE_NORMALIZATIONS, THRESHOLD_MODES, ScoreOptions,
                     check_sparsify_options, sparsify_attention)
from .softmax import edge_softmax
from .sparse_ops import (hstack_features, leading_rows, select_rows,
                         to_sparse_csr)
from .weights import attention_dropout, attention_weights

__all__ = [
    "edge_softmax",
    "edge_attention",
    "EdgeAttention",
    "ScoreOptions",
    "attention_weights",
    "attention_dropout",
    "attention_aggregate",
    "sparsify_attention",
    "check_sparsify_options",
    "in_degree",
    "adjacency_to_edge_index",
    "adjacency_size",
    "weights_on_adjacency",
    "check_edge_index_layout",
    "feature_dropout",
    "to_sparse_csr",
    "hstack_features",
    "leading_rows",
    "select_rows",
    "sequence_edge_index",
    "binary_partition_spans",
    "complete_edge_index",
    "recognize_sequence_pattern",
    "recognize_token_pattern",
    "clear_graph_cache",
    "TokenPattern",
    "BACKENDS",
    "ATTENTION_BACKENDS",
    "PATTERNS",
    "REDUCTIONS",
    "SCORE_NORMALIZATIONS",
    "THRESHOLD_MODES",
]
