"""Head pruning on Cora: accuracy against the number of heads removed.

Trains the ``graph-transformer`` node model (packaged defaults, 3 seeds),
scores every head by the rise of the validation loss when it alone is
masked, then removes heads for real in order of increasing importance (and,
as a control, in random order) and records test accuracy after each step.

    TGNN_DATA_MIRROR=../shared/data python benchmarks/heads.py

Writes ``benchmarks/results/heads.json`` and ``heads.md``.
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from common import RESULTS, machine
from tgnn_transformers.data import load_dataset
from tgnn_transformers.inspect import head_importance, prune_heads
from tgnn_transformers.train import fit, resolve_config, seed_everything
from tgnn_transformers.train.recipes import (node_recipe, node_splits,
                                             prepare_node_data)


def accuracy(model, data, mask) -> float:
    model.eval()
    with torch.no_grad():
        out = model(data.x, data.edge_index)
    return float((out[mask].argmax(-1) == data.y[mask]).float().mean())


def curve(model, data, test, order):
    """Test accuracy after removing the heads of ``order`` one by one."""
    points = [accuracy(model, data, test)]
    removed = {}
    convs = dict(model.named_modules())
    for name, head in order:
        chosen = removed.setdefault(name, [])
        if len(chosen) + 1 == convs[name].heads:
            continue  # every conv keeps one head
        chosen.append(head)
        points.append(accuracy(prune_heads(copy.deepcopy(model), removed),
                               data, test))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args()
    dataset = load_dataset("cora", root=tempfile.mkdtemp())
    rows = []
    for seed in args.seeds:
        config = resolve_config("node", "cora", "graph-transformer",
                                {"epochs": args.epochs})
        seed_everything(seed)
        recipe = node_recipe(dataset[0], dataset.num_classes, config,
                             split=seed)
        t0 = time.time()
        fit(recipe, epochs=config["epochs"], patience=config["patience"],
            quiet=True)
        data = prepare_node_data(dataset[0], config)
        _, val, test = node_splits(data, seed)
        model = recipe.model.eval()

        def val_loss(m):
            out = m(data.x, data.edge_index)
            return F.cross_entropy(out[val], data.y[val])

        scores = head_importance(model, val_loss)
        ranked = sorted(((float(s[h]), name, h) for name, s in scores.items()
                         for h in range(s.numel())))
        by_importance = [(name, h) for _, name, h in ranked]
        shuffled = by_importance[:]
        random.Random(seed).shuffle(shuffled)
        rows.append({"seed": seed, "train_seconds": time.time() - t0,
                     "importance": {k: v.tolist() for k, v in
                                    scores.items()},
                     "least_important_first": curve(model, data, test,
                                                    by_importance),
                     "random_order": curve(model, data, test, shuffled)})
        print(f"seed {seed}: {rows[-1]['least_important_first']}",
              flush=True)
    total = sum(len(v) for v in rows[0]["importance"].values())
    result = {"machine": machine(), "model": "graph-transformer",
              "dataset": "cora", "heads_total": total, "rows": rows}
    (RESULTS / "heads.json").write_text(json.dumps(result, indent=2) + "\n")

    def mean_curve(key):
        length = min(len(r[key]) for r in rows)
        return [(statistics.fmean(r[key][i] for r in rows),
                 statistics.pstdev(r[key][i] for r in rows))
                for i in range(length)]

    lines = ["# Head pruning on Cora", "",
             f"`graph-transformer` (packaged defaults, {len(rows)} seeds, "
             f"{args.epochs} epochs max), {total} heads in all.  Heads are "
             "removed for real (`inspect.prune_heads`) in order of "
             "importance (the rise of the validation loss when the head "
             "alone is masked) or in random order; test accuracy (%), mean "
             "± std over seeds.  Written by `benchmarks/heads.py`.", "",
             "| heads removed | least important first | random order |",
             "|---|---|---|"]
    for i, ((m1, s1), (m2, s2)) in enumerate(zip(
            mean_curve("least_important_first"),
            mean_curve("random_order"))):
        lines.append(f"| {i} | {100 * m1:.1f} ± {100 * s1:.1f} | "
                     f"{100 * m2:.1f} ± {100 * s2:.1f} |")
    (RESULTS / "heads.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
