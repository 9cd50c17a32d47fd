"""Runs a configured experiment over seeds (or folds) and writes its
results: ``metrics.json``, ``history.csv``, ``curves.png``."""
from __future__ import annotations

import json
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
from .config import recipe_module
from .io import (load_checkpoint, save_checkpoint, strict_json, write_csv,
                 write_json)
from .device import device_info, resolve_device
from .loop import fit, seed_everything

log = logging.getLogger("tgnn_transformers.train")

#: The configuration and package version a run was started with.
RUN_FILE = "run.json"
#: What a failed run leaves: the exception and its traceback.
ERROR_FILE = "error.json"
#: Where the runs whose recipe exports something (the language model:
#: best weights and vocabulary) leave it, one ``<run>.pt`` each.
MODELS_DIR = "models"


class ResumeError(ValueError):
    """``--resume`` on a run started with other settings."""


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
        log.warning("matplotlib is not installed: skipping %s", path.name)
        return False
    import matplotlib.pyplot as plt
    plt.close(fig)
    return True


def run_experiment(config: Dict[str, Any], out: Path, *, resume: bool = False,
                   quiet: bool = False, root: Optional[str] = None,
                   mirror: Optional[str] = None,
                   on_epoch_end: Optional[Callable[[str, int], None]] = None
                   ) -> Dict[str, Any]:
    """Trains every run (seed or fold) of ``config`` and writes the results
    into ``out``.  With ``resume``, finished runs are read back and an
    interrupted run continues from its checkpoint.

    Under ``torchrun`` (``WORLD_SIZE`` above 1) every process calls this:
    each trains on its shard of the data, and only rank 0 reads and writes
    ``out`` (the others receive what it read).
    """
    out = Path(out)
    record = {"config": dict(config), "tgnn_transformers": _version()}
    # A missing GPU is an error before any data is loaded.
    device = resolve_device(config.get("device", "auto"))
    task = get_task(config["task"])
    if distributed.env_world_size() > 1 and not task.distributed:
        raise ValueError(f"the {task.name} task trains in one process; run "
                         "it without torchrun (WORLD_SIZE="
                         f"{distributed.env_world_size()})")
    created = distributed.setup(device)
    main = distributed.is_main()
    if resume:
        problem = None
        if main:
            try:
                check_resumable(out, record)
            except ResumeError as exc:
                problem = str(exc)
        problem = distributed.broadcast(problem)
        if problem is not None:
            raise ResumeError(problem)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(record, out / RUN_FILE)
    try:
        metrics = _run_all(config, out, device, resume, quiet or not main,
                           root, mirror, on_epoch_end)
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
    if main:
        (out / ERROR_FILE).unlink(missing_ok=True)
    if created:
        distributed.teardown()
    return metrics


def _version() -> str:
    import tgnn_transformers
    return tgnn_transformers.__version__


def check_resumable(out: Path, record: Dict[str, Any]) -> None:
    """Raises :class:`ResumeError` unless the run recorded in ``out`` has
    exactly this configuration and package version."""
    path = out / RUN_FILE
    if not path.exists():
        if (out / "checkpoints").exists():
            raise ResumeError(f"{out} has checkpoints but no {RUN_FILE} "
                              "recording their configuration: cannot "
                              "resume it honestly; start a new run")
        return
    recorded = json.loads(path.read_text())
    now = json.loads(json.dumps(strict_json(record), default=str))
    before = {**recorded.get("config", {}),
              "tgnn_transformers": recorded.get("tgnn_transformers")}
    after = {**now["config"], "tgnn_transformers": now["tgnn_transformers"]}
    differ = sorted(k for k in set(before) | set(after)
                    if before.get(k) != after.get(k))
    if differ:
        lines = ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}"
                          for k in differ)
        raise ResumeError(f"--resume: the run in {out} was started with "
                          f"other settings ({lines}); resume it with the "
                          "recorded settings or use a new --out")


def _run_all(config, out, device, resume, quiet, root, mirror,
             on_epoch_end):
    ckpt_dir = out / "checkpoints"
    started = time.time()
    main = distributed.is_main()
    recipes = recipe_module(config["task"])
    dataset = distributed.in_turn(
        lambda: recipes.load(config, root=root, mirror=mirror))
    results, history = [], []
    for run in recipes.runs(config):
        name = _run_name(run)
        done = ckpt_dir / f"{name}.done.pt"
        state = None
        if resume:
            state = distributed.broadcast(
                load_checkpoint(done) if main and done.exists() else None)
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
                         quiet=quiet, on_epoch_end=callback,
                         export=out / MODELS_DIR / f"{name}.pt")
            state = {"run": run, "best_epoch": result.best_epoch,
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
