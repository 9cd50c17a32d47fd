"""Captured attention on disk (``tgnn plot CAPTURE`` reads it)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch

from .capture import AttentionRecord


def save_capture(records: Sequence[AttentionRecord],
                 path: Union[str, Path],
                 tokens: Optional[Sequence[str]] = None) -> Path:
    """Writes records (and optional token strings for the axes) in a file
    that loads with ``torch.load(weights_only=True)``."""
    path = Path(path)
    torch.save({"records": [{"layer": r.layer, "edge_index": r.edge_index,
                             "alpha": r.alpha, "num_nodes": r.num_nodes}
                            for r in records],
                "tokens": list(tokens) if tokens is not None else None},
               path)
    return path


def load_capture(path: Union[str, Path]):
    """``(records, tokens)`` from :func:`save_capture`'s file."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "records" not in blob:
        raise ValueError(f"{path} is not a capture written by save_capture")
    records: List[AttentionRecord] = [AttentionRecord(**r)
                                      for r in blob["records"]]
    return records, blob.get("tokens")
