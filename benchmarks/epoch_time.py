"""Per-epoch time of every node model of the registry on the heterophilous
graphs, one thread, with the packaged defaults (Platonov et al.'s recipe:
hidden 512, 5 layers), to budget the accuracy report's re-run.

    TGNN_DATA_MIRROR=../shared/data python benchmarks/epoch_time.py
    python benchmarks/epoch_time.py --datasets minesweeper \\
        --models gcn gps gps:attention_graph=local --epochs 3

Every cell (data set, model, overrides) runs in a fresh process: the recipe
of split 0 is built as ``tgnn train`` builds it, one epoch (training and
evaluation) warms up, then ``--epochs`` epochs are timed.  Reported: the
median wall and CPU (process) seconds of one training epoch and of one
evaluation, the peak resident memory, and the run time of the packaged
schedule (``epochs`` x 10 splits, if no early stop) that this implies.
CPU seconds are what one idle core would take on a machine whose cores
are shared (wall seconds then overstate it).  Results are written after
every cell to ``results/epoch_time.json`` (an interrupted run resumes) and
``results/epoch_time.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from common import RESULTS, machine

JSON = RESULTS / "epoch_time.json"
MARKDOWN = RESULTS / "epoch_time.md"
DATASETS = ["minesweeper", "tolokers"]
#: Address-space limit of a cell's process (a cell that needs more fails
#: and says so instead of pushing the machine into swap).
MEMORY_LIMIT = 16 * 2**30


def parse_cell(text: str) -> Dict[str, Any]:
    """``model[:option=value,...]`` -> model name and overrides (values
    parsed as JSON where they parse, else kept as strings)."""
    model, _, rest = text.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return {"model": model, "overrides": overrides}


def measure(dataset: str, model: str, overrides: Dict[str, Any],
            epochs: int) -> Dict[str, Any]:
    """One cell, in this process."""
    import torch
    torch.set_num_threads(1)
    from tgnn_transformers.train import resolve_config
    from tgnn_transformers.train.config import recipe_module
    from tgnn_transformers.train.loop import seed_everything
    config = resolve_config("node", dataset, model,
                            {**overrides, "splits": [0]})
    recipes = recipe_module("node")
    loaded = recipes.load(config)
    seed_everything(0)
    t0 = time.perf_counter()
    recipe = recipes.build(loaded, config, recipes.runs(config)[0])
    build_s = time.perf_counter() - t0
    rows = []
    for epoch in range(epochs + 1):
        w0, c0 = time.perf_counter(), time.process_time()
        recipe.train_epoch()
        w1, c1 = time.perf_counter(), time.process_time()
        scores = recipe.evaluate()
        w2, c2 = time.perf_counter(), time.process_time()
        if epoch:  # the first epoch warms up
            rows.append((w1 - w0, c1 - c0, w2 - w1, c2 - c1))
    med = [statistics.median(r[i] for r in rows) for i in range(4)]
    return {"dataset": dataset, "model": model, "overrides": overrides,
            "train_wall_s": med[0], "train_cpu_s": med[1],
            "eval_wall_s": med[2], "eval_cpu_s": med[3],
            "build_s": build_s, "epochs_timed": epochs,
            "val_after_warmup": scores["val"],
            "schedule_epochs": config["epochs"],
            "parameters": sum(p.numel() for p in recipe.model.parameters()),
            "config": {k: config[k] for k in (
                "hidden", "num_layers", "heads", "residual", "norm",
                "ffn_multiplier", "root_weight", "self_loops",
                "attention_graph", "local") if k in config},
            "peak_rss_mb": resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_cell(dataset: str, cell: Dict[str, Any], epochs: int,
             timeout: int) -> Dict[str, Any]:
    """One cell in a fresh process with one thread and a memory limit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    spec = json.dumps({"dataset": dataset, **cell, "epochs": epochs})

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, __file__, "--cell", spec],
                              env=env, capture_output=True, text=True,
                              timeout=timeout, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        return {"dataset": dataset, **cell,
                "error": f"timed out after {timeout} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"dataset": dataset, **cell, "error": last[:300]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["cell_s"] = time.perf_counter() - started
    return result


def label(row: Dict[str, Any]) -> str:
    extra = ",".join(f"{k}={v}" for k, v in row["overrides"].items())
    return row["model"] + (f" ({extra})" if extra else "")


def render(rows: List[Dict[str, Any]], info: Dict[str, Any]) -> str:
    lines = ["# Per-epoch time on the heterophilous graphs", "",
             "One thread, the packaged defaults of each data set "
             "(`tgnn_transformers/train/defaults.json`: Platonov et al.'s "
             "recipe, hidden 512, 5 layers, residual, LayerNorm, '-sep'), "
             "split 0, full batch.  Median of the timed epochs after one "
             "warm-up epoch; CPU = process seconds (what an idle core "
             "takes; the wall seconds include waiting for cores shared with"
             " other jobs).  `schedule` = (train + eval CPU) x epochs x 10 "
             "splits, the packaged schedule without early stopping.  "
             "Written by `benchmarks/epoch_time.py`.", "",
             "| data set | model | train CPU s | eval CPU s | train wall s |"
             " peak MB | schedule (h) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['dataset']} | {label(row)} | "
                         f"failed: {row['error']} | | | | |")
            continue
        hours = (row["train_cpu_s"] + row["eval_cpu_s"]) * \
            row["schedule_epochs"] * 10 / 3600
        lines.append(f"| {row['dataset']} | {label(row)} | "
                     f"{row['train_cpu_s']:.2f} | {row['eval_cpu_s']:.2f} | "
                     f"{row['train_wall_s']:.2f} | "
                     f"{row['peak_rss_mb']:.0f} | {hours:.1f} |")
    lines += ["", f"Machine: {info['platform']}, {info['cpus']} CPU cores "
              f"(shared), torch {info['torch']}, PyG "
              f"{info['torch_geometric']}, one torch thread per cell."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--models", nargs="+", default=None,
                        help="model[:option=value,...] (default: every "
                        "node model of the registry)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--fresh", action="store_true",
                        help="ignore the results already written")
    args = parser.parse_args()
    if args.cell:
        spec = json.loads(args.cell)
        print(json.dumps(measure(spec["dataset"], spec["model"],
                                 spec["overrides"], spec["epochs"])))
        return
    from tgnn_transformers.models import MODELS
    models = args.models or [n for n, s in MODELS.items()
                             if "node" in s.tasks]
    cells = [parse_cell(m) for m in models]
    rows = [] if args.fresh or not JSON.exists() else \
        json.loads(JSON.read_text())["rows"]
    done = {(r["dataset"], label(r)) for r in rows if "error" not in r}
    info = machine()
    for dataset in args.datasets:
        for cell in cells:
            key = (dataset, label({**cell}))
            if key in done:
                continue
            row = run_cell(dataset, cell, args.epochs, args.timeout)
            rows = [r for r in rows if (r["dataset"], label(r)) != key]
            rows.append(row)
            print(json.dumps(row), flush=True)
            RESULTS.mkdir(exist_ok=True)
            tmp = JSON.with_suffix(".tmp")
            tmp.write_text(json.dumps({"machine": info, "rows": rows},
                                      indent=2) + "\n")
            tmp.replace(JSON)
            MARKDOWN.write_text(render(rows, info))


if __name__ == "__main__":
    main()
