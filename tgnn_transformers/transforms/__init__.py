"""Sequence -> graph transforms."""
from .sequence import (SequenceToGraph, from_padded, sequence_to_graph,
                       to_padded)

__all__ = ["SequenceToGraph", "sequence_to_graph", "to_padded",
           "from_padded"]
