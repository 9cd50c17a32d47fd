"""Per-graph caches: results derived from an ``edge_index`` tensor (its CSR
index, whether it is a token-graph batch, its padded layout) are computed
once and reused across layers and epochs.

An entry is keyed on the identity of the anchor tensor and a tag, and is
valid while the anchor and every tensor it depends on are the same objects
at the same in-place version (``Tensor._version``) and every other
dependency compares equal.  Entries disappear with their anchor.
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, List, Tuple, TypeVar

from torch import Tensor

T = TypeVar("T")

# (id(anchor), tag) -> (anchor stamp, dependency stamps, value)
_CACHE: Dict[Tuple[int, str], tuple] = {}


def _stamp(value: Any) -> tuple:
    if isinstance(value, Tensor):
        return ("tensor", weakref.ref(value), value._version)
    return ("value", value)


def _matches(stamp: tuple, value: Any) -> bool:
    if stamp[0] == "tensor":
        return (isinstance(value, Tensor) and stamp[1]() is value
                and stamp[2] == value._version)
    return not isinstance(value, Tensor) and stamp[1] == value


def cached_on(anchor: Tensor, tag: str, build: Callable[[], T],
              *depends: Any) -> T:
    """``build()``, cached on ``anchor`` under ``tag`` and ``depends``."""
    key = (id(anchor), tag)
    hit = _CACHE.get(key)
    if hit is not None:
        anchor_stamp, stamps, value = hit
        if _matches(anchor_stamp, anchor) and len(stamps) == len(depends) \
                and all(_matches(s, d) for s, d in zip(stamps, depends)):
            return value
    value = build()
    stamps: List[tuple] = [_stamp(d) for d in depends]
    anchor_stamp = ("tensor", weakref.ref(anchor,
                                          lambda _: _CACHE.pop(key, None)),
                    anchor._version)
    _CACHE[key] = (anchor_stamp, stamps, value)
    return value
