"""The LoRA baseline through ``peft``, at a given trainable-parameter
budget (the Sparse GIN adapter's), for a fair comparison."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch


def lora_parameters_per_rank(model: torch.nn.Module,
                             target_modules: Sequence[str]) -> int:
    """Trainable parameters LoRA adds per unit of rank: ``in + out`` for
    every ``Linear`` whose name ends in one of ``target_modules``."""
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and \
                name.split(".")[-1] in target_modules:
            total += module.in_features + module.out_features
    if total == 0:
        raise ValueError(f"no Linear module named one of "
                         f"{list(target_modules)} in {type(model).__name__}")
    return total


def lora_for_budget(model: torch.nn.Module, budget: int, *,
                    target_modules: Sequence[str] = ("query", "value"),
                    alpha_per_rank: float = 2.0, dropout: float = 0.0
                    ) -> Tuple[torch.nn.Module, int]:
    """Wraps ``model`` with ``peft`` LoRA at the rank whose number of
    trainable parameters is closest to ``budget``; returns ``(peft_model,
    rank)``.  ``lora_alpha = alpha_per_rank * rank``."""
    if budget < 1:
        raise ValueError(f"budget must be >= 1 parameter, got {budget}")
    from peft import LoraConfig, get_peft_model
    per_rank = lora_parameters_per_rank(model, target_modules)
    rank = max(1, round(budget / per_rank))
    config = LoraConfig(r=rank, lora_alpha=alpha_per_rank * rank,
                        lora_dropout=dropout,
                        target_modules=list(target_modules))
    return get_peft_model(model, config), rank
