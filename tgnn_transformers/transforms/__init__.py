"""Sequence -> graph transforms, and graph positional encodings."""
from .positional import (GRAPH_ENCODINGS, graph_positional_encoding,
                         laplacian_pe, random_walk_pe)
from .sequence import (SequenceToGraph, from_padded, sequence_to_graph,
                       to_padded)

__all__ = ["SequenceToGraph", "sequence_to_graph", "to_padded",
           "from_padded", "GRAPH_ENCODINGS", "graph_positional_encoding",
           "laplacian_pe", "random_walk_pe"]
