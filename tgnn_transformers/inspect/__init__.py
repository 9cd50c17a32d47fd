"""Looking inside: attention capture through PyG's message-passing hooks,
attention as graphs (strongest edges, rollout, export), heads (masking,
importance, pruning) and plots."""
from .capture import AttentionRecord, attention_layers, capture_attention
from .graphs import (attention_rollout, combine_heads, strongest_edges,
                     to_csv, to_data, to_networkx, top_edges)
from .heads import head_importance, mask_heads, prune_conv_heads, prune_heads
from .plots import (plot_attention_heatmap, plot_neighbourhood,
                    plot_training_curves, read_history)
from .store import load_capture, save_capture

__all__ = ["capture_attention", "AttentionRecord", "attention_layers",
           "combine_heads", "top_edges", "strongest_edges",
           "attention_rollout", "to_data", "to_networkx", "to_csv",
           "plot_attention_heatmap", "plot_neighbourhood",
           "plot_training_curves", "read_history", "save_capture",
           "load_capture", "mask_heads", "head_importance", "prune_heads",
           "prune_conv_heads"]
