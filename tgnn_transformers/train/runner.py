"""Runs a configured experiment over seeds (or folds) and writes its
results: ``metrics.json``, ``history.csv`` (after every epoch),
``curves.png``; the run folder is held by a lock and every file read back
is checked to belong to the run (:mod:`tgnn_transformers.train.folder`)."""
from __future__ import annotations

import logging
import math
import platform
import statistics
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from ..models import get_task
from . import distributed
from .config import ConfigurationError, recipe_module
from .device import device_info, resolve_device
from .folder import (ERROR_FILE, MODELS_DIR, RUN_FILE, ResumeError,
                     RunFolderError, RunLock, check_resumable, owner, prepare_folder)
from .io import save_checkpoint, write_csv, write_json
from .loop import fit, read_checkpoint, seed_everything

log = logging.getLogger("tgnn_transformers.train")

__all__ = ["run_experiment", "ResumeError", "RunFolderError",
           "check_resumable", "summarize", "environment", "RUN_FILE",
           "ERROR_FILE", "MODELS_DIR"]


def environment() -> Dict[str, Any]:
    import torch_geometric
    import tgnn_transformers
    extras = {}
    for name in ("torch_scatter", "torch_sparse", "ogb"):
        try:
            extras[name] = __import__(name).__version__
        except ImportError:
            extras[name] = None
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torch_geometric": torch_geometric.__version__,
            "tgnn_transformers": tgnn_transformers.__version__,
            "platform": platform.platform(), "cpus": torch.get_num_threads(),
            **distributed.describe(), **extras}


def _run_name(run: Dict[str, int]) -> str:
    return "-".join(f"{k}{v}" for k, v in run.items())


def run_seed(run: Dict[str, int]) -> int:
    """The random seed a run starts from: ``seed * 1000`` plus its other
    index (a fold or a split), so the runs of one seed differ."""
    return run["seed"] * 1000 + sum(v for k, v in run.items()
                                    if k != "seed")


def summarize(values: List[float]) -> Dict[str, Any]:
    """Mean and population standard deviation of the finite values; with
    none, ``None`` values and the reason (JSON has no NaN)."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return {"mean": None, "std": None, "n": 0,
                "reason": "no run produced a finite value (an empty split, "
                          "or a metric undefined on it)"}
    return {"mean": statistics.fmean(values),
            "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def plot_curves(history: List[Dict[str, Any]], path: Path,
                metric: str, higher_is_better: bool = True) -> bool:
    """Training curves (mean ± band over several runs, best epoch marked);
    False without matplotlib."""
    try:
        from ..inspect import plot_training_curves
        fig = plot_training_curves(history, path, metric, higher_is_better)
    except ImportError:
        log.warning("matplotlib is not installed (pip install "
                    "'tgnn_transformers[plot]'): %s is not drawn; the other "
                    "results are written", path.name)
        return False
    import matplotlib.pyplot as plt
    plt.close(fig)
    return True


def run_experiment(config: Dict[str, Any], out: Path, *, resume: bool = False,
                   overwrite: bool = False, quiet: bool = False,
                   root: Optional[str] = None, mirror: Optional[str] = None,
                   on_epoch_end: Optional[Callable[[str, int], None]] = None,
                   log_every: float = 30.0) -> Dict[str, Any]:
    """Trains every run (seed or fold) of ``config`` and writes the results
    into ``out``.

    The folder holds one run at a time (a lock file; a second run into it
    raises :class:`RunFolderError` naming the holder).  A folder that
    already holds a run is refused unless ``resume`` (continue it: finished
    runs are read back, an interrupted one continues from its checkpoint;
    only with the same configuration, else :class:`ResumeError`) or
    ``overwrite`` (its files are deleted first).  Every checkpoint read back
    must belong to this configuration and run.  ``history.csv`` is
    rewritten after every epoch; progress is logged at least every
    ``log_every`` seconds.

    Under ``torchrun`` (``WORLD_SIZE`` above 1) every process calls this:
    each trains on its shard of the data, and only rank 0 reads and writes
    ``out`` (the others receive what it read).
    """
    out = Path(out)
    version = _version()
    record = owner(config, version)
    # A missing GPU is an error before any data is loaded.
    device = resolve_device(config.get("device", "auto"))
    task = get_task(config["task"])
    if distributed.env_world_size() > 1 and not task.distributed:
        raise ValueError(f"the {task.name} task trains in one process; run "
                         "it without torchrun (WORLD_SIZE="
                         f"{distributed.env_world_size()})")
    created = distributed.setup(device)
    main = distributed.is_main()
    lock = RunLock(out) if main else None
    problem = None
    if main:
        try:
            lock.acquire()
            prepare_folder(out, record, resume=resume, overwrite=overwrite)
        except ValueError as exc:  # RunFolderError, ResumeError
            lock.release()
            problem = exc
    problem = distributed.broadcast(problem)
    if problem is not None:
        raise problem
    try:
        metrics = _run_all(config, out, device, resume, quiet or not main,
                           root, mirror, on_epoch_end, log_every, version)
    except Exception as exc:
        if main:
            # A failed run leaves its reason, not an empty folder.
            write_json({"error": type(exc).__name__, "message": str(exc),
                        "traceback": traceback.format_exc()},
                       out / ERROR_FILE)
        # No teardown on failure: other ranks may still wait in a
        # collective, and destroying the group under them can block; the
        # process exits and torchrun stops the rest.
        raise
    finally:
        if lock is not None:
            lock.release()
    if main:
        (out / ERROR_FILE).unlink(missing_ok=True)
    if created:
        distributed.teardown()
    return metrics


def _version() -> str:
    import tgnn_transformers
    return tgnn_transformers.__version__


def _run_all(config, out, device, resume, quiet, root, mirror,
             on_epoch_end, log_every, version):
    ckpt_dir = out / "checkpoints"
    started = time.time()
    main = distributed.is_main()
    recipes = recipe_module(config["task"])
    dataset = distributed.in_turn(
        lambda: recipes.load(config, root=root, mirror=mirror))
    check_data = getattr(recipes, "check_data", None)
    if check_data is not None:
        # facts only known once the data is loaded, before any training
        try:
            check_data(dataset, config)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
    results, history = [], []

    def write_history(rows):
        if main:
            write_csv(history + [{"run": name, **row} for row in rows],
                      out / "history.csv")

    for run in recipes.runs(config):
        name = _run_name(run)
        expected = owner(config, version, run)
        done = ckpt_dir / f"{name}.done.pt"
        state = read_checkpoint(done, expected) if resume else None
        if state is not None:
            log.info("%s already finished, reading its result", name)
        else:
            seed_everything(run_seed(run))
            recipe = recipes.build(dataset, config, run)
            callback = (None if on_epoch_end is None else
                        (lambda epoch, name=name: on_epoch_end(name, epoch)))
            t0 = time.time()
            result = fit(recipe, epochs=config["epochs"],
                         patience=config["patience"],
                         checkpoint=ckpt_dir / f"{name}.pt", resume=resume,
                         checkpoint_every=config["checkpoint_every"],
                         desc=f"{config['dataset']}/{config['model']} {name}",
                         quiet=quiet, on_epoch_end=callback, owner=expected,
                         on_history=write_history, log_every=log_every,
                         export=out / MODELS_DIR / f"{name}.pt")
            state = {"owner": expected, "run": run,
                     "best_epoch": result.best_epoch,
                     "val": result.best_val, "test": result.test,
                     "epochs_run": result.epochs_run,
                     "history": result.history,
                     "metric": recipe.metric,
                     "higher_is_better": recipe.higher_is_better,
                     "trainable_parameters": sum(
                         p.numel() for p in recipe.model.parameters()
                         if p.requires_grad),
                     "seconds": time.time() - t0}
            if main:
                save_checkpoint(state, done)
            if not quiet:
                log.info("%s: best epoch %d, val %.4f, test %.4f, %d "
                         "trainable parameters", name, state["best_epoch"],
                         state["val"], state["test"],
                         state["trainable_parameters"])
        results.append({k: v for k, v in state.items() if k != "history"})
        history.extend({"run": name, **row} for row in state["history"])
    metric = results[0]["metric"] if results else "accuracy"
    metrics = {
        "task": config["task"], "dataset": config["dataset"],
        "model": config["model"], "metric": metric,
        "higher_is_better": (results[0].get("higher_is_better", True)
                             if results else True),
        "test": summarize([r["test"] for r in results]),
        "val": summarize([r["val"] for r in results]),
        "runs": results, "config": dict(config),
        "environment": environment(),
        "device": device_info(device),
        "precision": config.get("precision", "fp32"),
        "wall_time_s": time.time() - started,
    }
    if main:
        write_json(metrics, out / "metrics.json")
        write_csv(history, out / "history.csv")
        plot_curves(history, out / "curves.png", metric,
                    metrics["higher_is_better"])
    return metrics
