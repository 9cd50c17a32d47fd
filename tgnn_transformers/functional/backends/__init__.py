"""The attention backends: one table, and the ``auto`` policy over it.

Every backend is an :class:`~.base.AttentionBackend` that says why it
cannot compute a call (:meth:`~.base.AttentionBackend.unsupported`) or runs
it.  ``backend="auto"`` takes the first backend of :data:`ATTENTION_BACKENDS`
that it tries for the call (:meth:`~.base.AttentionBackend.tried_by_auto`:
dense everywhere, rows for bipartite calls, FlexAttention and the Triton
kernel on CUDA) and that
supports it; the sparse backend supports everything and comes last.  An
explicit ``backend=<name>`` that cannot compute the call raises a
``ValueError`` with the reasons; nothing falls back silently.

A new backend is one module with an ``AttentionBackend`` subclass and one
entry in the table below.
"""
from __future__ import annotations

from typing import Dict

from .base import (AttentionBackend, AttentionCall, Capabilities,
                   EdgeAttention)
from .dense import DenseBackend
from .flex import FlexBackend
from .rows import RowsBackend
from .sparse import SparseBackend
from .triton import TritonBackend

#: Every backend by name, in the order ``backend="auto"`` tries them.
ATTENTION_BACKENDS: Dict[str, AttentionBackend] = {
    backend.name: backend for backend in (
        DenseBackend(),
        RowsBackend(),
        FlexBackend(),
        TritonBackend(),
        SparseBackend(),
    )
}

#: The ``backend`` choices of :func:`edge_attention` and the layers.
BACKENDS = ("auto", ) + tuple(ATTENTION_BACKENDS)


def select_backend(name: str, call: AttentionCall) -> AttentionBackend:
    """The backend that computes ``call``: ``name``'s, or for ``"auto"``
    the first of the table that is tried and supports it.  An explicit
    backend that cannot compute the call raises a ``ValueError`` naming it
    and every reason."""
    if name == "auto":
        for backend in ATTENTION_BACKENDS.values():
            if backend.tried_by_auto(call) and \
                    backend.unsupported(call) is None:
                return backend
        raise AssertionError("the sparse backend supports every call")
    backend = ATTENTION_BACKENDS[name]
    reason = backend.unsupported(call)
    if reason is not None:
        raise ValueError(f"backend={name!r} cannot be used here: {reason}"
                         " (backend='auto' picks one that can)")
    return backend


__all__ = ["ATTENTION_BACKENDS", "BACKENDS", "AttentionBackend",
           "AttentionCall", "Capabilities", "EdgeAttention",
           "select_backend"]
