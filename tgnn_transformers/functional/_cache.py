"""Per-graph caches: results derived from an ``edge_index`` tensor (its CSR
index, whether it is a token-graph batch, its padded layout) are computed
once and reused across layers and epochs.

An entry is keyed on the identity of the anchor tensor and a tag, and is
valid while the anchor and every tensor it depends on are the same objects
at the same in-place version (``Tensor._version``; tensors made under
``torch.inference_mode()`` have none and are matched by identity) and every
other dependency compares equal.  Entries disappear with their anchor, so
a cached value must not hold the anchor or a view of it (that would keep
the anchor alive for ever); as a safety net the cache keeps at most
``MAX_ENTRIES``, dropping the least recently used.

**Blind spot.**  The version counter sees in-place edits made through
PyTorch (``edge_index[0, 3] = 5``, ``edge_index.add_(1)``), not those made
behind autograd's back: through a NumPy view (``edge_index.numpy()[...] =
...``), through ``edge_index.data[...] = ...``, by DLPack consumers or
by writing the storage from C.  After such an edit the cached results
describe the old graph (a complete token graph would still be treated as
complete).  Make a new tensor instead (``edge_index = edge_index.clone()``
then edit it), or call :func:`clear_graph_cache` after the edit.
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, List, Tuple, TypeVar

from torch import Tensor

T = TypeVar("T")

# (id(anchor), tag) -> (anchor stamp, dependency stamps, value), least
# recently used first.
_CACHE: Dict[Tuple[int, str], tuple] = {}

#: the most entries kept: far more than the graphs one model touches at a
#: time (one per edge_index and tag), so eviction only ever bounds a leak.
MAX_ENTRIES = 4096


def _version(t: Tensor) -> Any:
    # Tensors made under torch.inference_mode() keep no version counter: they
    # are cached by identity alone (an in-place edit of one is not seen).
    return None if t.is_inference() else t._version


def _stamp(value: Any) -> tuple:
    if isinstance(value, Tensor):
        return ("tensor", weakref.ref(value), _version(value))
    return ("value", value)


def _matches(stamp: tuple, value: Any) -> bool:
    if stamp[0] == "tensor":
        return (isinstance(value, Tensor) and stamp[1]() is value
                and stamp[2] == _version(value))
    return not isinstance(value, Tensor) and stamp[1] == value


def clear_graph_cache() -> None:
    """Forgets every per-graph result (CSR indices, token-pattern
    recognition, padded layouts, adjacency conversions).  Needed only after
    editing an ``edge_index`` (or ``batch``) in place behind autograd's
    back -- through a NumPy view or ``.data`` -- which its version counter
    does not see; see the module's docstring."""
    _CACHE.clear()


def cached_on(anchor: Tensor, tag: str, build: Callable[[], T],
              *depends: Any) -> T:
    """``build()``, cached on ``anchor`` under ``tag`` and ``depends``."""
    key = (id(anchor), tag)
    hit = _CACHE.get(key)
    if hit is not None:
        anchor_stamp, stamps, value = hit
        if _matches(anchor_stamp, anchor) and len(stamps) == len(depends) \
                and all(_matches(s, d) for s, d in zip(stamps, depends)):
            _CACHE[key] = _CACHE.pop(key)  # now the most recently used
            return value
    value = build()
    stamps: List[tuple] = [_stamp(d) for d in depends]
    anchor_stamp = ("tensor", weakref.ref(anchor,
                                          lambda _: _CACHE.pop(key, None)),
                    _version(anchor))
    _CACHE.pop(key, None)
    _CACHE[key] = (anchor_stamp, stamps, value)
    while len(_CACHE) > MAX_ENTRIES:
        del _CACHE[next(iter(_CACHE))]
    return value
