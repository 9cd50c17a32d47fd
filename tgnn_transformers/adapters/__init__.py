"""Pretrained transformers as graphs: tokenizer output as sentence graphs,
the Sparse GIN adapter, and the LoRA baseline at an equal budget."""
from .sentence_graphs import (SentenceGraphs, encode_as_graphs,
                              sentence_edge_index)
from .lora import lora_for_budget, lora_parameters_per_rank
from .sparse_gin import (SparseGINAdapter, SparseGINGraphLayer,
                         SparseGINLayer,
                         add_sparse_gin_adapters, attention_graph,
                         count_trainable)

__all__ = ["encode_as_graphs", "sentence_edge_index", "SentenceGraphs",
           "SparseGINAdapter", "SparseGINLayer", "SparseGINGraphLayer",
           "add_sparse_gin_adapters",
           "attention_graph", "count_trainable", "lora_for_budget",
           "lora_parameters_per_rank"]
