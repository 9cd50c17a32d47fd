"""Hyper-parameter selection on the validation split (never on test).

Runs each candidate configuration over a few seeds (folds for TU data) and
ranks them by mean validation accuracy; the winners go into
``tgnn_transformers/train/defaults.json``.  Results are appended to
``benchmarks/results/tuning.jsonl`` (one finished candidate per line, so an
interrupted search resumes where it stopped).

    python benchmarks/tune.py --task node --dataset cora --model mha \
        --grid '{"root_weight": [true, false], "attention_dropout": [0.3, 0.6]}'
"""
from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

from tgnn_transformers.train import resolve_config, run_experiment

RESULTS = Path(__file__).resolve().parent / "results" / "tuning.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="node")
    parser.add_argument("--dataset", default="cora")
    parser.add_argument("--model", default="mha")
    parser.add_argument("--grid", default="{}",
                        help="JSON: parameter -> list of values")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--folds", type=int, default=None)
    args = parser.parse_args()
    grid = json.loads(args.grid)
    done = set()
    if RESULTS.exists():
        for line in RESULTS.read_text().splitlines():
            row = json.loads(line)
            done.add(json.dumps([row["task"], row["dataset"], row["model"],
                                 row["params"], row["seeds"]],
                                sort_keys=True))
    keys = sorted(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values))
        key = json.dumps([args.task, args.dataset, args.model, params,
                          args.seeds], sort_keys=True)
        if key in done:
            continue
        overrides = dict(params, seeds=args.seeds, folds=args.folds)
        config = resolve_config(args.task, args.dataset, args.model,
                                overrides)
        with tempfile.TemporaryDirectory() as out:
            metrics = run_experiment(config, Path(out), quiet=True)
        row = {"task": args.task, "dataset": args.dataset,
               "model": args.model, "params": params, "seeds": args.seeds,
               "val": metrics["val"], "test": metrics["test"],
               "seconds": metrics["wall_time_s"]}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with open(RESULTS, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{args.dataset}/{args.model} {params}: val "
              f"{100 * metrics['val']['mean']:.2f} "
              f"(test {100 * metrics['test']['mean']:.2f})", flush=True)


if __name__ == "__main__":
    main()
