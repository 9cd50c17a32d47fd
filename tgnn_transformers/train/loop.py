"""The epoch loop every task shares: early stopping on validation,
history, progress (per epoch and, for recipes that iterate batches, within
each epoch), atomic checkpoints that know their run, and exact resume."""
from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping,
                    Optional, TypeVar)

import numpy as np
import torch

from . import distributed
from .folder import check_owner
from .io import load_checkpoint, save_checkpoint

T = TypeVar("T")

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


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite: the run stops (its last
    checkpoint, of a finite epoch, is kept)."""


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


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _rate(count: float, seconds: float, unit: str) -> str:
    """``12.3 units/s``, or ``4.5 s/unit`` below one per second (a slow
    epoch is not ``0.0 epochs/s``)."""
    units = {"batch": "batches"}.get(unit, unit + "s")
    if count <= 0 or seconds <= 0:
        return f"- {units}/s"
    per_second = count / seconds
    if per_second >= 1:
        return f"{per_second:.1f} {units}/s"
    return f"{seconds / count:.1f} s/{unit}"


class Progress:
    """Progress of a training run: a tqdm bar of the epochs on a terminal
    that has a width (with a second bar of the batches within an epoch,
    for recipes that iterate batches through :func:`track`); otherwise log
    lines: one at the end of every ``every``-th epoch, and one at least
    every ``seconds`` (also within a long epoch: batches done, rate, time
    left).  Nothing with ``quiet``."""

    def __init__(self, total: int, desc: str, quiet: bool, every: int = 25,
                 initial: int = 0, seconds: float = 30.0):
        self.quiet, self.every, self.desc = quiet, every, desc
        self.seconds, self.total = seconds, total
        self.bar = self.batch_bar = None
        self.epoch = initial
        self.last_time, self.last_epoch = time.monotonic(), initial
        # when a line was last logged (the every-``seconds`` rule); the
        # epoch rate is measured from ``last_time``, the last epoch line
        self.last_log = self.last_time
        self.epoch_start = self.last_time
        self.stage_start = self.last_time
        if not quiet and _terminal_width(sys.stderr) > 0:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, initial=initial,
                            leave=False, dynamic_ncols=True)

    # within an epoch -------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.epoch_start = epoch, time.monotonic()

    def begin(self, stage: str, total: Optional[int]) -> None:
        """A pass over ``total`` batches starts (``stage``: ``train``,
        ``eval``)."""
        self.stage_start = time.monotonic()
        if self.quiet or self.bar is None:
            return
        from tqdm import tqdm
        self.batch_bar = tqdm(total=total, desc=f"epoch {self.epoch} "
                              f"{stage}", leave=False, dynamic_ncols=True,
                              position=1, unit="batch")

    def advance(self, stage: str, done: int, total: Optional[int]) -> None:
        """``done`` batches of the pass are through."""
        if self.quiet:
            return
        if self.batch_bar is not None:
            self.batch_bar.update(1)
            return
        now = time.monotonic()
        if now - self.last_log < self.seconds:
            return
        elapsed = now - self.stage_start
        text = f"{done}" if total is None else \
            f"{done}/{total} ({100 * done / max(total, 1):.0f}%)"
        left = ""
        if total is not None and done:
            left = (f", {stage} pass ends in "
                    f"{_duration(elapsed / done * (total - done))}")
        log.info("%s epoch %d/%d %s batch %s, %s%s", self.desc, self.epoch,
                 self.total, stage, text, _rate(done, elapsed, "batch"),
                 left)
        self.last_log = now

    def end(self, stage: str) -> None:
        if self.batch_bar is not None:
            self.batch_bar.close()
            self.batch_bar = None

    # per epoch -------------------------------------------------------
    def update(self, epoch: int, row: Dict[str, float]) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{row['train_loss']:.3f}",
                                 val=f"{row['val']:.4f}")
            return
        now = time.monotonic()
        if epoch % self.every and now - self.last_log < self.seconds \
                and epoch != self.total:
            return
        epochs = epoch - self.last_epoch
        left = ""
        if epoch < self.total and epochs > 0:
            per_epoch = (now - self.last_time) / epochs
            left = (f", at most {self.total - epoch} epochs "
                    f"({_duration(per_epoch * (self.total - epoch))}) left")
        log.info("%s epoch %d/%d  loss %.4f  val %.4f  %s%s", self.desc,
                 epoch, self.total, row["train_loss"], row["val"],
                 _rate(epochs, now - self.last_time, "epoch"), left)
        self.last_time = self.last_log = now
        self.last_epoch = epoch

    def close(self) -> None:
        if self.batch_bar is not None:
            self.batch_bar.close()
        if self.bar is not None:
            self.bar.close()


#: The progress of the running :func:`fit` (innermost last), which
#: :func:`track` reports to.
_ACTIVE: List[Progress] = []


def track(batches: Iterable[T], stage: str = "train") -> Iterator[T]:
    """``batches``, reporting each one to the progress of the running
    :func:`fit` (a bar on a terminal, a log line at least every 30 s
    otherwise); a plain pass outside ``fit``.  Recipes wrap their batch
    loops in it."""
    if not _ACTIVE:
        yield from batches
        return
    progress = _ACTIVE[-1]
    try:
        total: Optional[int] = len(batches)  # type: ignore[arg-type]
    except TypeError:
        total = None
    progress.begin(stage, total)
    try:
        for done, item in enumerate(batches, 1):
            yield item
            progress.advance(stage, done, total)
    finally:
        progress.end(stage)


def _eligible(scores: Mapping[str, float]) -> bool:
    """An epoch can be the best only with a finite validation metric and
    (where reported) loss: NaN logits still give an accuracy."""
    return math.isfinite(scores["val"]) and math.isfinite(
        scores.get("val_loss", 0.0))


def read_checkpoint(path: Path, expected: Optional[Mapping[str, Any]]
                    = None) -> Optional[Dict[str, Any]]:
    """The checkpoint at ``path`` (``None`` if there is none), read by rank
    0 and checked to belong to the run ``expected`` (an
    :func:`~tgnn_transformers.train.folder.owner` record); every rank gets
    the state, or raises the same error."""
    from .folder import ResumeError
    from .io import CheckpointError
    state, problem = None, None
    if distributed.is_main() and path.exists():
        try:
            state = load_checkpoint(path)
            if expected is not None:
                check_owner(state, expected, path)
        except (CheckpointError, ResumeError) as exc:
            state, problem = None, exc
    state, problem = distributed.broadcast((state, problem))
    if problem is not None:
        raise problem
    return state


def fit(recipe: Recipe, *, epochs: int, patience: int,
        checkpoint: Optional[Path] = None, resume: bool = False,
        checkpoint_every: int = 1, desc: str = "", quiet: bool = False,
        on_epoch_end: Optional[Callable[[int], None]] = None,
        owner: Optional[Mapping[str, Any]] = None,
        on_history: Optional[Callable[[List[Dict[str, float]]], None]]
        = None, log_every: float = 30.0,
        export: Optional[Path] = None) -> FitResult:
    """Trains until ``epochs`` or until the validation metric has not
    improved for ``patience`` epochs; the test metric is the one at the best
    validation epoch (best in the metric's direction,
    ``recipe.higher_is_better``; ties go to the lower validation loss).  An
    epoch whose validation metric or loss is not finite is never the best.

    With ``checkpoint``, the full state (model, optimizer, RNG, history,
    early-stopping state, and ``owner``: the record of the run it belongs
    to) is written atomically every ``checkpoint_every`` epochs;
    ``resume=True`` continues from it (after checking that it belongs to
    ``owner``), ending exactly where an uninterrupted run ends.

    A training loss that is NaN or infinite raises
    :class:`NonFiniteLossError` naming the run (``desc``) and the epoch; the
    checkpoint of the last finite epoch is kept.  ``on_history(rows)`` is
    called after every epoch with the history so far; progress is logged
    at least every ``log_every`` seconds (see :class:`Progress`).

    With ``export`` and a recipe that has an :attr:`Recipe.export`, its
    result is written there (atomically, with a checksum) at every new best
    epoch; a resumed run repeats the epochs after its checkpoint exactly,
    so it rewrites the same file.
    """
    start, history = 1, []
    sign = 1.0 if recipe.higher_is_better else -1.0
    best = {"val": -sign * float("inf"), "val_loss": float("inf"),
            "epoch": 0, "test": float("nan")}
    state = None
    if resume and checkpoint is not None:
        state = read_checkpoint(checkpoint, owner)
    if state is not None:
        recipe.model.load_state_dict(state["model"])
        recipe.optimizer.load_state_dict(state["optimizer"])
        if recipe.scheduler is not None:
            recipe.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start, history, best = state["epoch"] + 1, state["history"], \
            state["best"]
        log.info("%s resumed after epoch %d", desc, state["epoch"])
    saved = start - 1 if state is not None else None
    progress = Progress(epochs, desc, quiet, initial=start - 1,
                        seconds=log_every)
    _ACTIVE.append(progress)
    try:
        for epoch in range(start, epochs + 1):
            if best["epoch"] > 0 and epoch - best["epoch"] > patience:
                break
            progress.start_epoch(epoch)
            loss = float(recipe.train_epoch())
            # every rank stops, or none (a NaN on one rank makes the sum NaN)
            if not math.isfinite(distributed.sum_across_ranks(loss)[0]):
                kept = (f"the checkpoint of epoch {saved} is kept in "
                        f"{checkpoint}" if saved is not None and checkpoint
                        is not None else "no checkpoint was written")
                raise NonFiniteLossError(
                    f"{desc or 'training'}: the training loss is {loss} at "
                    f"epoch {epoch}; the run stopped ({kept}). Lower the "
                    "learning rate (--lr), clip gradients (--clip-grad) or "
                    "train in fp32")
            scores = recipe.evaluate()
            row = {"epoch": epoch, "train_loss": loss, **scores}
            history.append(row)
            better = _eligible(scores) and (
                sign * scores["val"] > sign * best["val"] or (
                    scores["val"] == best["val"]
                    and scores["val_loss"] < best["val_loss"]))
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
                                 "history": history, "best": best,
                                 "owner": None if owner is None else
                                 dict(owner)},
                                checkpoint)
                saved = epoch
            if on_history is not None:
                on_history(history)
            if on_epoch_end is not None:
                on_epoch_end(epoch)
    finally:
        _ACTIVE.remove(progress)
        progress.close()
    return FitResult(best["epoch"], best["val"], best["test"], history,
                     history[-1]["epoch"] if history else 0)
