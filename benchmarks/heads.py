"""Head pruning: accuracy against the number of heads removed, on Cora and
on a trained text model (TREC).

Trains a model (3 seeds), scores every head by the rise of the validation
loss when it alone is masked, then removes heads for real in order of
increasing importance (and, as a control, in random order) and records test
accuracy after each step.  Cases:

- ``cora``: the ``graph-transformer`` node model, packaged defaults;
- ``trec``: the ``text`` task's ``mha`` model (2 layers x 4 heads, width
  64, sinusoidal positions, full sentence graphs), packaged defaults,
  TREC's coarse labels with its packaged 10 % validation hold-out.

    TGNN_DATA_MIRROR=../shared/data python benchmarks/heads.py \\
        --case cora trec

Writes ``benchmarks/results/heads.json`` and ``heads.md``; the cases not
run keep their stored results.
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

from common import RESULTS, machine
from tgnn_transformers.data import load_dataset, load_text_splits
from tgnn_transformers.inspect import head_importance, prune_heads
from tgnn_transformers.train import fit, resolve_config, seed_everything
from tgnn_transformers.train.recipes import (node_recipe, node_splits,
                                             prepare_node_data, text_graphs,
                                             text_recipe)

#: the epoch cap of each case unless ``--epochs`` says otherwise
EPOCHS = {"cora": 200, "trec": 10}
TITLES = {"cora": "Cora, `graph-transformer` node model",
          "trec": "TREC, `mha` text model (2 layers x 4 heads)"}


def curve(model, accuracy: Callable[[torch.nn.Module], float], order):
    """Test accuracy after removing the heads of ``order`` one by one."""
    points = [accuracy(model)]
    removed: Dict[str, List[int]] = {}
    convs = dict(model.named_modules())
    for name, head in order:
        chosen = removed.setdefault(name, [])
        if len(chosen) + 1 == convs[name].heads:
            continue  # every conv keeps one head
        chosen.append(head)
        points.append(accuracy(prune_heads(copy.deepcopy(model), removed)))
    return points


def cora_case(seed: int, epochs: int, state: dict) -> Tuple:
    """``(trained model, val_loss(model), test_accuracy(model))``."""
    if "dataset" not in state:
        state["dataset"] = load_dataset("cora", root=tempfile.mkdtemp())
    dataset = state["dataset"]
    config = resolve_config("node", "cora", "graph-transformer",
                            {"epochs": epochs})
    seed_everything(seed)
    recipe = node_recipe(dataset[0], dataset.num_classes, config, split=seed)
    fit(recipe, epochs=config["epochs"], patience=config["patience"],
        quiet=True)
    data = prepare_node_data(dataset[0], config)
    _, val, test = node_splits(data, seed)

    def val_loss(m):
        out = m(data.x, data.edge_index)
        return F.cross_entropy(out[val], data.y[val])

    @torch.no_grad()
    def test_accuracy(m) -> float:
        m.eval()
        out = m(data.x, data.edge_index)
        return float((out[test].argmax(-1) == data.y[test]).float().mean())

    return recipe.model.eval(), val_loss, test_accuracy


def trec_case(seed: int, epochs: int, state: dict) -> Tuple:
    """``(trained model, val_loss(model), test_accuracy(model))``."""
    from torch_geometric.data import Batch
    if "splits" not in state:
        state["splits"] = load_text_splits("trec")  # hold-out drawn with 0
    splits = state["splits"]
    config = resolve_config("text", "trec", "mha", {"epochs": epochs})
    seed_everything(seed)
    recipe = text_recipe(splits, config)
    fit(recipe, epochs=config["epochs"], patience=config["patience"],
        quiet=True)
    # the recipe's vocabulary and graphs again (built deterministically)
    _, graphs = text_graphs(splits, config)
    val = Batch.from_data_list(list(graphs["val"]))
    test = Batch.from_data_list(list(graphs["test"]))

    def logits(m, b):
        return m(b.x, b.edge_index, b.batch, b.position, b.virtual)

    def val_loss(m):
        return F.cross_entropy(logits(m, val), val.y)

    @torch.no_grad()
    def test_accuracy(m) -> float:
        m.eval()
        return float((logits(m, test).argmax(-1) == test.y).float().mean())

    return recipe.model.eval(), val_loss, test_accuracy


CASES = {"cora": ("graph-transformer", "cora", cora_case),
         "trec": ("mha", "trec", trec_case)}


def run_case(case: str, seeds: List[int], epochs: int) -> dict:
    model_name, dataset, train = CASES[case]
    rows, state = [], {}
    for seed in seeds:
        t0 = time.time()
        model, val_loss, test_accuracy = train(seed, epochs, state)
        train_seconds = time.time() - t0
        scores = head_importance(model, val_loss)
        ranked = sorted(((float(s[h]), name, h) for name, s in scores.items()
                         for h in range(s.numel())))
        by_importance = [(name, h) for _, name, h in ranked]
        shuffled = by_importance[:]
        random.Random(seed).shuffle(shuffled)
        rows.append({"seed": seed, "train_seconds": train_seconds,
                     "importance": {k: v.tolist() for k, v in
                                    scores.items()},
                     "least_important_first": curve(model, test_accuracy,
                                                    by_importance),
                     "random_order": curve(model, test_accuracy, shuffled)})
        print(f"{case} seed {seed}: {rows[-1]['least_important_first']}",
              flush=True)
    total = sum(len(v) for v in rows[0]["importance"].values())
    return {"machine": machine(), "model": model_name, "dataset": dataset,
            "epochs": epochs, "heads_total": total, "rows": rows}


def mean_curve(rows, key):
    length = min(len(r[key]) for r in rows)
    return [(statistics.fmean(r[key][i] for r in rows),
             statistics.pstdev(r[key][i] for r in rows))
            for i in range(length)]


def markdown(cases: Dict[str, dict]) -> str:
    lines = ["# Head pruning", "",
             "Heads are removed for real (`inspect.prune_heads`) in order of "
             "importance (the rise of the validation loss when the head "
             "alone is masked) or in random order, from a model trained with "
             "the packaged defaults (its weights at the end of training, not "
             "restored to the best epoch); every conv "
             "keeps one head.  Test accuracy (%), mean ± std over seeds.  "
             "Written by `benchmarks/heads.py`."]
    for case, result in cases.items():
        rows = result["rows"]
        lines += ["", f"## {TITLES.get(case, case)}", "",
                  f"`{result['model']}` on {result['dataset']}, "
                  f"{len(rows)} seeds, {result['epochs']} epochs max, "
                  f"{result['heads_total']} heads in all.", "",
                  "| heads removed | least important first | random order |",
                  "|---|---|---|"]
        for i, ((m1, s1), (m2, s2)) in enumerate(zip(
                mean_curve(rows, "least_important_first"),
                mean_curve(rows, "random_order"))):
            lines.append(f"| {i} | {100 * m1:.1f} ± {100 * s1:.1f} | "
                         f"{100 * m2:.1f} ± {100 * s2:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", nargs="+", choices=sorted(CASES),
                        default=sorted(CASES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"epoch cap (default: {EPOCHS})")
    args = parser.parse_args()
    path = RESULTS / "heads.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    cases = stored.get("cases", {})
    for case in args.case:
        cases[case] = run_case(case, args.seeds,
                               args.epochs or EPOCHS[case])
    cases = {case: cases[case] for case in CASES if case in cases}
    path.write_text(json.dumps({"cases": cases}, indent=2) + "\n")
    text = markdown(cases)
    (RESULTS / "heads.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
