"""The epoch loop every task shares: early stopping on validation,
history, progress, atomic checkpoints and exact resume."""
from __future__ import annotations

import logging
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from . import distributed
from .io import load_checkpoint, save_checkpoint

log = logging.getLogger("tgnn_transformers.train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> Dict:
    # Plain values and tensors only, so checkpoints load with
    # torch.load(weights_only=True).
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos,
                      has_gauss, gauss],
            "python": random.getstate()}


def _set_rng_state(state: Dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos,
                         has_gauss, gauss))
    random.setstate(state["python"])


@dataclass
class Recipe:
    """A prepared training run of one task (model, optimizer, one epoch of
    training, evaluation), as a recipe hands it to :func:`fit`."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    train_epoch: Callable[[], float]
    """one epoch of training, returns the training loss"""
    evaluate: Callable[[], Dict[str, float]]
    """returns ``val_loss`` and ``train``/``val``/``test`` metric values"""
    metric: str = "accuracy"
    higher_is_better: bool = True
    """the direction of ``metric`` (a loss: ``False``)"""
    scheduler: Optional[Any] = None
    """a learning-rate scheduler stepped by ``train_epoch``; checkpointed
    with the optimizer so a resumed run continues its schedule"""
    export: Optional[Callable[[], Dict[str, Any]]] = None
    """what the run leaves for later use (tensors and plain values, e.g.
    the language model's weights and vocabulary): taken at every new best
    validation epoch and written by :func:`fit` to its ``export`` path"""


@dataclass
class FitResult:
    best_epoch: int
    best_val: float
    test: float
    history: List[Dict[str, float]] = field(default_factory=list)
    epochs_run: int = 0


def _terminal_width(stream) -> int:
    """Columns of the terminal behind ``stream``; 0 when it is not one or
    reports no width (a CI log, a pipe)."""
    try:
        if not stream.isatty():
            return 0
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


class Progress:
    """A tqdm bar on a terminal that has a width; otherwise one log line
    (epoch, loss, validation metric, rate) every ``every`` epochs and at
    least every ``seconds``; nothing with ``quiet``."""

    def __init__(self, total: int, desc: str, quiet: bool, every: int = 25,
                 initial: int = 0, seconds: float = 30.0):
        self.quiet, self.every, self.desc = quiet, every, desc
        self.seconds, self.total = seconds, total
        self.bar = None
        self.last_time, self.last_epoch = time.monotonic(), initial
        if not quiet and _terminal_width(sys.stderr) > 0:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, initial=initial,
                            leave=False, dynamic_ncols=True)

    def update(self, epoch: int, row: Dict[str, float]) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{row['train_loss']:.3f}",
                                 val=f"{row['val']:.4f}")
            return
        now = time.monotonic()
        if epoch % self.every and now - self.last_time < self.seconds \
                and epoch != self.total:
            return
        rate = (epoch - self.last_epoch) / max(now - self.last_time, 1e-9)
        log.info("%s epoch %d/%d  loss %.4f  val %.4f  %.1f epochs/s",
                 self.desc, epoch, self.total, row["train_loss"], row["val"],
                 rate)
        self.last_time, self.last_epoch = now, epoch

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def fit(recipe: Recipe, *, epochs: int, patience: int,
        checkpoint: Optional[Path] = None, resume: bool = False,
        checkpoint_every: int = 1, desc: str = "", quiet: bool = False,
        on_epoch_end: Optional[Callable[[int], None]] = None,
        export: Optional[Path] = None) -> FitResult:
    """Trains until ``epochs`` or until the validation metric has not
    improved for ``patience`` epochs; the test metric is the one at the best
    validation epoch (best in the metric's direction,
    ``recipe.higher_is_better``; ties go to the lower validation loss).

    With ``checkpoint``, the full state (model, optimizer, RNG, history,
    early-stopping state) is written atomically every ``checkpoint_every``
    epochs; ``resume=True`` continues from it, ending exactly where an
    uninterrupted run ends.  With ``export`` and a recipe that has an
    :attr:`Recipe.export`, its result is written there (atomically, with
    a checksum) at every new best epoch; a resumed run repeats the epochs
    after its checkpoint exactly, so it rewrites the same file.
    """
    start, history = 1, []
    sign = 1.0 if recipe.higher_is_better else -1.0
    best = {"val": -sign * float("inf"), "val_loss": float("inf"),
            "epoch": 0, "test": float("nan")}
    state = None
    if resume and checkpoint is not None:
        # Rank 0 reads; every rank continues from what it read.
        state = distributed.broadcast(
            load_checkpoint(checkpoint)
            if distributed.is_main() and checkpoint.exists() else None)
    if state is not None:
        recipe.model.load_state_dict(state["model"])
        recipe.optimizer.load_state_dict(state["optimizer"])
        if recipe.scheduler is not None:
            recipe.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start, history, best = state["epoch"] + 1, state["history"], \
            state["best"]
        log.info("%s resumed after epoch %d", desc, state["epoch"])
    progress = Progress(epochs, desc, quiet, initial=start - 1)
    try:
        for epoch in range(start, epochs + 1):
            if best["epoch"] > 0 and epoch - best["epoch"] > patience:
                break
            loss = recipe.train_epoch()
            scores = recipe.evaluate()
            row = {"epoch": epoch, "train_loss": float(loss), **scores}
            history.append(row)
            better = sign * scores["val"] > sign * best["val"] or (
                scores["val"] == best["val"]
                and scores["val_loss"] < best["val_loss"])
            if better:
                best = {"val": scores["val"], "val_loss": scores["val_loss"],
                        "epoch": epoch, "test": scores["test"]}
                if export is not None and recipe.export is not None and \
                        distributed.is_main():
                    save_checkpoint({**recipe.export(), "epoch": epoch,
                                     "val": scores["val"]}, export)
            progress.update(epoch, row)
            if checkpoint is not None and distributed.is_main() and (
                    epoch % checkpoint_every == 0 or epoch == epochs):
                save_checkpoint({"model": recipe.model.state_dict(),
                                 "optimizer": recipe.optimizer.state_dict(),
                                 "scheduler": (None if recipe.scheduler is
                                               None else
                                               recipe.scheduler.state_dict()),
                                 "rng": _rng_state(), "epoch": epoch,
                                 "history": history, "best": best},
                                checkpoint)
            if on_epoch_end is not None:
                on_epoch_end(epoch)
    finally:
        progress.close()
    return FitResult(best["epoch"], best["val"], best["test"], history,
                     history[-1]["epoch"] if history else 0)
