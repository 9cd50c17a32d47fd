"""What the training recipes share: the optimisers and learning-rate
schedule, loss and accuracy tallies summed over ranks, shard loaders, the
mini-batch classification recipe, and the rank statistic ROC-AUC."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.loader import DataLoader

from ...nn import average_log_degree, degree_histogram
from .. import distributed
from ..distributed import ShardSampler
from ..loop import Recipe, track


def seed_runs(config: Mapping[str, Any]) -> List[Dict[str, int]]:
    """One run per seed (the usual ``runs`` of a recipe)."""
    return [{"seed": seed} for seed in config["seeds"]]


def _delta(edge_indices, num_nodes) -> float:
    return average_log_degree(degree_histogram(edge_indices, num_nodes))


def _optimizer(model, config):
    return torch.optim.Adam(model.parameters(), lr=config["lr"],
                            weight_decay=config["weight_decay"])


class Tally:
    """Summed loss, correct predictions and count of one split on this
    rank; :func:`reduce_tallies` sums them over all ranks."""

    def __init__(self):
        self.loss, self.correct, self.count = 0.0, 0, 0

    def add(self, logits: torch.Tensor, y: torch.Tensor,
            loss_sum: Optional[float] = None) -> None:
        if loss_sum is None:
            loss_sum = float(F.cross_entropy(logits, y, reduction="sum"))
        self.loss += loss_sum
        self.correct += int((logits.argmax(-1) == y).sum())
        self.count += y.numel()


def reduce_tallies(*tallies: Tally) -> List[Tuple[float, float]]:
    """``(accuracy, mean loss)`` of each tally over all ranks (one
    all-reduce); NaN for a split without items."""
    sums = distributed.sum_across_ranks(*(v for t in tallies for v in (
        t.loss, t.correct, t.count)))
    results = []
    for loss, correct, count in zip(sums[0::3], sums[1::3], sums[2::3]):
        if count == 0:
            results.append((float("nan"), float("nan")))
        else:
            results.append((correct / count, loss / count))
    return results


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve by the rank statistic (ties averaged)."""
    scores, labels = scores.double(), labels.bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.double)
    # average ranks over ties
    uniq, inverse = torch.unique(scores, return_inverse=True)
    sums = torch.zeros(uniq.numel(), dtype=torch.double).index_add_(
        0, inverse, ranks)
    counts = torch.bincount(inverse, minlength=uniq.numel()).double()
    ranks = (sums / counts)[inverse]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) /
                 (n_pos * n_neg))


def _no_decay(name: str, param: torch.nn.Parameter) -> bool:
    return param.dim() < 2 or "embedding" in name or "norm" in name


def text_optimizer(model: torch.nn.Module, config: Dict[str, Any]):
    """Adam with L2 decay on everything, or AdamW with decoupled decay on
    the weight matrices only (not biases, norms, embeddings, scalars)."""
    if config["optimizer"] == "adam":
        return _optimizer(model, config)
    decay, rest = [], []
    for name, param in model.named_parameters():
        (rest if _no_decay(name, param) else decay).append(param)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config["weight_decay"]},
         {"params": rest, "weight_decay": 0.0}], lr=config["lr"])


def lr_factor(step: int, total: int, warmup: float, schedule: str) -> float:
    """The learning-rate multiplier at optimizer step ``step`` (0-based) of
    ``total``: linear warm-up over ``warmup * total`` steps, then constant,
    linear decay to 0 or cosine decay to 0."""
    warm = int(round(warmup * total))
    if step < warm:
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warm) / max(1, total - warm))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + float(np.cos(np.pi * progress)))


def scheduled_optimizer(model: torch.nn.Module, config: Dict[str, Any],
                        steps_per_epoch: int):
    """The text tasks' ``(optimizer, scheduler)``: AdamW or Adam, linear
    warm-up then constant/linear/cosine decay per step."""
    optimizer = text_optimizer(model, config)
    total = config["epochs"] * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, config["warmup"],
                                          config["schedule"]))
    return optimizer, scheduler


def shard_loader(dataset, batch_size: int, train: bool = False):
    """A PyG ``DataLoader`` over this rank's shard of ``dataset``: for
    training shuffled anew every pass by the global RNG (which checkpoints
    save and restore, so a resumed run sees the batches an uninterrupted
    one sees), for evaluation in order (see
    :class:`~tgnn_transformers.train.distributed.ShardSampler`)."""
    return DataLoader(dataset, batch_size=batch_size,
                      sampler=ShardSampler(len(dataset), shuffle=train))


def minibatch_recipe(model: torch.nn.Module, optimizer, precision,
                     loaders: Dict[str, Any], forward, *, scheduler=None,
                     label_smoothing: float = 0.0,
                     clip_grad: float = 0.0) -> Recipe:
    """Classification over mini-batches (graph, text and finetune tasks):
    ``loaders`` maps ``train``/``val``/``test`` to re-iterable batch
    sources of this rank's shard, ``forward(module, batch) -> (logits,
    labels)``; training runs through the data-parallel wrapper, evaluation
    through ``model`` itself, and the counts are summed over the ranks.
    The scheduler is stepped per batch.  Training accuracy is counted
    during the epoch (in training mode) rather than by a second pass over
    the training data, which cost a quarter of the run time on PROTEINS."""
    train_accuracy = float("nan")
    trainable = [p for p in model.parameters() if p.requires_grad]
    net = distributed.wrap(model)

    def train_epoch() -> float:
        nonlocal train_accuracy
        net.train()
        tally = Tally()
        for batch in track(loaders["train"], "train"):
            optimizer.zero_grad()
            out, y = forward(net, batch)
            loss = F.cross_entropy(out, y, label_smoothing=label_smoothing)
            precision.step(loss, optimizer, clip_grad=clip_grad,
                           parameters=trainable)
            if scheduler is not None:
                scheduler.step()
            tally.add(out.detach(), y, loss.item() * y.numel())
        train_accuracy, loss = reduce_tallies(tally)[0]
        return loss

    @torch.no_grad()
    def evaluate() -> Dict[str, float]:
        model.eval()
        tallies = []
        for name in ("val", "test"):
            tally = Tally()
            for batch in track(loaders[name], name):
                tally.add(*forward(model, batch))
            tallies.append(tally)
        (val, val_loss), (test, _) = reduce_tallies(*tallies)
        return {"val_loss": val_loss, "train": train_accuracy, "val": val,
                "test": test}

    return Recipe(model, optimizer, train_epoch, evaluate,
                  scheduler=scheduler)
