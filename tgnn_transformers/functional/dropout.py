"""Dropout that keeps sparse input features sparse."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def feature_dropout(x: Tensor, p: float = 0.5,
                    training: bool = True) -> Tensor:
    r""":func:`torch.nn.functional.dropout` that also takes a sparse CSR
    tensor, dropping its stored values and returning a CSR tensor.

    Dropping a zero changes nothing, so this equals dense dropout in
    distribution while drawing one random number per nonzero instead of per
    entry: on Cora's bag-of-words rows (1.3 % nonzero) the dense call spends
    more time in the random number generator than the whole attention
    layer does.  Dense inputs go to plain dropout.
    """
    if x.layout != torch.sparse_csr:
        return F.dropout(x, p, training)
    if not training or p == 0.0:
        return x
    return torch.sparse_csr_tensor(
        x.crow_indices(), x.col_indices(),
        F.dropout(x.values(), p, True), x.shape,
        check_invariants=False)  # same indices as x, already valid
