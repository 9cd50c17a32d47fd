"""Mixed precision for the sparse primitives.

Torch has no bfloat16 / float16 kernels for ``sparse.sampled_addmm`` (CPU
and CUDA) and autocast would push the CSR products back down to low
precision.  The sparse path therefore computes in float32 whenever its
inputs are half or bfloat16 (softmax statistics and every reduction
included) and hands back results in the inputs' dtype; float32 and float64
inputs run unchanged, without copies.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor

LOW_PRECISION = (torch.float16, torch.bfloat16)


def result_dtype(*tensors: Optional[Tensor]) -> torch.dtype:
    """The promoted floating dtype of the given (floating) tensors."""
    dtype = None
    for t in tensors:
        if isinstance(t, Tensor) and t.is_floating_point():
            dtype = t.dtype if dtype is None else torch.promote_types(
                dtype, t.dtype)
    return torch.get_default_dtype() if dtype is None else dtype


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half / bfloat16, else ``dtype`` itself."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


def upcast(t, dtype: torch.dtype):
    """``t`` in ``dtype`` when it is a floating tensor (``None``, Python
    numbers and integer tensors pass through)."""
    if isinstance(t, Tensor) and t.is_floating_point() and t.dtype != dtype:
        return t.to(dtype)
    return t


def upcast_all(dtype: torch.dtype, *tensors) -> Tuple:
    return tuple(upcast(t, dtype) for t in tensors)


@contextlib.contextmanager
def autocast_disabled(device: torch.device) -> Iterator[None]:
    """Turns autocast off for ``device`` inside (the primitives choose
    their dtypes themselves)."""
    kind = device.type
    try:
        enabled = torch.is_autocast_enabled(kind)
    except (RuntimeError, TypeError):  # a device type autocast lacks
        enabled = False
    if not enabled:
        yield
        return
    with torch.autocast(kind, enabled=False):
        yield
