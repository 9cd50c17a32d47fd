"""Heads: masking, importance, and pruning for real.

A head is *masked* when its per-head output is multiplied by 0 before the
heads are combined (the conv's ``head_mask``); it is *pruned* when its
weights are cut out of the projections, the per-head modules and the output
projection, so that the smaller conv computes exactly what the masked one
does.  Importance (Michel et al., 2019, measured directly) is how much a
loss rises when the head alone is masked.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from .capture import attention_layers

HeadSelection = Mapping[str, Sequence[int]]


def _convs(model: torch.nn.Module) -> Dict[str, torch.nn.Module]:
    return dict(attention_layers(model))


def _check_selection(convs: Dict[str, torch.nn.Module],
                     heads: HeadSelection) -> None:
    for name, chosen in heads.items():
        if name not in convs:
            raise ValueError(f"no attention conv named {name!r}; the model "
                             f"has {', '.join(convs) or 'none'}")
        count = convs[name].heads
        bad = [h for h in chosen if not 0 <= int(h) < count]
        if bad:
            raise ValueError(f"{name} has heads 0..{count - 1}, got {bad}")


@contextlib.contextmanager
def mask_heads(model: torch.nn.Module,
               heads: HeadSelection) -> Iterator[torch.nn.Module]:
    """Within the block, the chosen heads (``{conv name: [head, ...]}``,
    names as in ``named_modules``) contribute nothing."""
    convs = _convs(model)
    _check_selection(convs, heads)
    saved = {name: convs[name].head_mask for name in heads}
    try:
        for name, chosen in heads.items():
            conv = convs[name]
            mask = torch.ones(conv.heads)
            mask[list(chosen)] = 0.0
            conv.head_mask = mask
        yield model
    finally:
        for name, mask in saved.items():
            convs[name].head_mask = mask


@torch.no_grad()
def head_importance(model: torch.nn.Module,
                    loss: Callable[[torch.nn.Module], Tensor]
                    ) -> Dict[str, Tensor]:
    """``{conv name: [H]}``: the rise of ``loss(model)`` (e.g. the
    validation loss) when each head alone is masked.  Runs ``1 + sum H``
    evaluations; the model is put in eval mode for them."""
    training = model.training
    model.eval()
    try:
        base = float(loss(model))
        scores = {}
        for name, conv in _convs(model).items():
            rise = torch.empty(conv.heads)
            for h in range(conv.heads):
                with mask_heads(model, {name: [h]}):
                    rise[h] = float(loss(model)) - base
            scores[name] = rise
    finally:
        model.train(training)
    return scores


def _rows(keep: Tensor, width: int) -> Tensor:
    """Indices of the kept heads' blocks of ``width`` rows."""
    return (keep.view(-1, 1) * width + torch.arange(width)).view(-1)


def _cut_linear(linear: torch.nn.Module, rows: Tensor = None,
                cols: Tensor = None) -> None:
    """Keeps ``rows`` of the output and ``cols`` of the input features."""
    weight = linear.weight.data
    if rows is not None:
        weight = weight[rows]
        if getattr(linear, "bias", None) is not None:
            linear.bias = torch.nn.Parameter(linear.bias.data[rows].clone())
        linear.out_channels = linear.out_features = weight.size(0)
    if cols is not None:
        weight = weight[:, cols]
        linear.in_channels = linear.in_features = weight.size(1)
    linear.weight = torch.nn.Parameter(weight.clone())


def _cut_headwise(module: torch.nn.Module, keep: Tensor,
                  heads: int) -> None:
    """Per-head modules keep their parameters' leading ``heads`` axis."""
    for sub in module.modules():
        if hasattr(sub, "heads"):
            sub.heads = keep.numel()
        for name, parameter in list(sub.named_parameters(recurse=False)):
            if parameter.dim() and parameter.size(0) == heads:
                setattr(sub, name, torch.nn.Parameter(
                    parameter.data[keep].clone()))


@torch.no_grad()
def prune_conv_heads(conv: torch.nn.Module, heads: Sequence[int]) -> None:
    """Removes ``heads`` from one attention conv, in place.  Needs the
    transformer form (``concat=True`` with ``out_proj``), where the output
    width does not depend on the number of heads."""
    if not conv.concat or conv.out_proj is None:
        raise ValueError(
            f"pruning {type(conv).__name__} needs concat=True and "
            "out_proj=True (otherwise its output width is heads x "
            "channels and the next layer would change); mask the heads "
            "instead (mask_heads)")
    count = conv.heads
    drop = sorted({int(h) for h in heads})
    keep = torch.tensor([h for h in range(count) if h not in drop],
                        dtype=torch.long)
    if keep.numel() == 0:
        raise ValueError(f"cannot prune all {count} heads of a conv")
    if not drop:
        return
    rows = _rows(keep, conv.out_channels)
    for name in ("lin_query", "lin_key", "lin_value", "lin_edge",
                 "lin_self"):
        linear = getattr(conv, name, None)
        if linear is not None:
            _cut_linear(linear, rows=rows)
    _cut_linear(conv.out_proj, cols=rows)
    for name in ("mlp", "mixer"):
        module = getattr(conv, name, None)
        if module is not None:
            _cut_headwise(module, keep, count)
    eps = getattr(conv, "eps", None)
    if isinstance(eps, Tensor) and eps.dim() == 1 and eps.numel() == count:
        if isinstance(eps, torch.nn.Parameter):
            conv.eps = torch.nn.Parameter(eps.data[keep].clone())
        else:
            conv.eps = eps[keep].clone()
    if conv.head_mask is not None:
        conv.head_mask = conv.head_mask[keep]
    conv.heads = keep.numel()


def prune_heads(model: torch.nn.Module,
                heads: HeadSelection) -> torch.nn.Module:
    """Removes the chosen heads (``{conv name: [head, ...]}``) for real:
    smaller weights, and outputs equal to the model with those heads
    masked.  Returns ``model`` (changed in place)."""
    convs = _convs(model)
    _check_selection(convs, heads)
    for name, chosen in heads.items():
        prune_conv_heads(convs[name], chosen)
    return model


__all__ = ["mask_heads", "head_importance", "prune_heads",
           "prune_conv_heads"]
