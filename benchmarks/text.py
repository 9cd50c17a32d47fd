"""Text classification as graphs: accuracy, parameters and time per epoch of
the text task, the train/validation loss curves of GIN-Attention against
standard attention (the paper's first claim) and the cost of the sparse
patterns against ``full``.

    TGNN_DATA_MIRROR=../shared/data python benchmarks/text.py accuracy \\
        --datasets trec --models mha gin-attention --patterns full \\
        --pos sinusoidal --seeds 0 1 2 --epochs 5 --out benchmarks/results/text
    python benchmarks/text.py cost --out benchmarks/results/text
    python benchmarks/text.py report --out benchmarks/results/text

``accuracy`` appends one JSON line per run to ``runs.jsonl`` (test accuracy
at the best validation epoch, per-epoch train/val loss, seconds per epoch,
parameters); ``cost`` writes ``cost.json`` (edges per pattern and the time
of a training pass over the same batches); ``report`` writes ``text.md``
and ``loss_gap.png`` from them.  Validation picks the epoch; the test split
is only read at that epoch.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from tgnn_transformers.data import load_text_splits
from tgnn_transformers.models.registry import OPTIONS
from tgnn_transformers.train.config import resolve_config
from tgnn_transformers.train.loop import seed_everything
from tgnn_transformers.train.recipes import text_graphs, text_recipe


def accuracy(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    extra = _parse_set(args.set)
    if args.pooling is not None:
        extra["pooling"] = args.pooling
    variant = ",".join(f"{k}={v}" for k, v in sorted(extra.items()))
    if args.preset is not None:
        variant = ",".join(filter(None, [f"preset={args.preset}", variant]))
    for dataset in args.datasets:
        splits = load_text_splits(dataset)
        for model in args.models:
            for pattern in args.patterns:
                for pos in args.pos:
                    for seed in args.seeds:
                        overrides = {**extra, "pattern": pattern,
                                     "pos": pos, "epochs": args.epochs}
                        config = resolve_config("text", dataset, model,
                                                overrides,
                                                preset=args.preset)
                        seed_everything(seed)
                        recipe = text_recipe(splits, config)
                        params = sum(p.numel() for p in
                                     recipe.model.parameters())
                        history, best = [], None
                        for epoch in range(1, args.epochs + 1):
                            t0 = time.time()
                            loss = recipe.train_epoch()
                            seconds = time.time() - t0
                            row = recipe.evaluate()
                            row.update(epoch=epoch, train_loss=loss,
                                       seconds=seconds)
                            history.append(row)
                            print(dataset, model, pattern, pos, seed, epoch,
                                  f"loss {loss:.3f} val_loss "
                                  f"{row['val_loss']:.3f} val {row['val']:.3f}"
                                  f" {seconds:.0f}s", flush=True)
                            if best is None or row["val"] > best["val"]:
                                best = row
                        record = {
                            "dataset": dataset, "model": model,
                            "pattern": pattern, "pos": pos,
                            "variant": variant, "seed": seed,
                            "params": params, "best_epoch": best["epoch"],
                            "val": best["val"], "test": best["test"],
                            "seconds_per_epoch": statistics.fmean(
                                r["seconds"] for r in history),
                            "history": [{k: r[k] for k in (
                                "epoch", "train_loss", "val_loss", "train",
                                "val")} for r in history],
                            "config": config}
                        with open(out / "runs.jsonl", "a") as f:
                            f.write(json.dumps(record) + "\n")


def _parse_set(items) -> dict:
    """``--set KEY=VALUE`` options of the text task (values read as JSON
    where they parse, as strings otherwise)."""
    extra = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        try:
            extra[key] = json.loads(value)
        except json.JSONDecodeError:
            extra[key] = value
    return extra


def cost(args) -> None:
    """Edges of every pattern on a data set's training sentences and the
    time of a training pass of ``mha`` over the same first batches (median
    of ``--repeats`` passes after one warm-up pass)."""
    from torch_geometric.loader import DataLoader
    from common import machine, time_it
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for dataset in args.datasets:
        splits = load_text_splits(dataset)
        for pattern in ("full", "window", "dilated", "global-window",
                        "binary-partition", "causal"):
            config = resolve_config("text", dataset, "mha",
                                    {"pattern": pattern, "epochs": 1})
            _, graphs = text_graphs(splits, config)
            train = graphs["train"]
            nodes = int(train._data.x.size(0))
            edges = int(train._data.edge_index.size(1))
            sentences = len(train)
            timed = min(args.cost_sentences, sentences)
            batches = list(DataLoader(train[:timed], batch_size=32))
            # Long documents on full graphs are big (R8: 81M edges): one
            # copy at a time, the recipe builds its own.
            del graphs, train
            seed_everything(0)
            recipe = text_recipe(splits, config)
            model, opt = recipe.model, recipe.optimizer
            model.train()

            def one_pass():
                for batch in batches:
                    opt.zero_grad()
                    logits = model(batch.x, batch.edge_index, batch.batch,
                                   batch.position, batch.virtual)
                    torch.nn.functional.cross_entropy(
                        logits, batch.y).backward()
                    opt.step()

            timing = time_it(one_pass, repeats=args.repeats)
            del recipe, model, opt
            results.append({"dataset": dataset, "pattern": pattern,
                            "sentences": sentences, "nodes": nodes,
                            "edges": edges, "timed_sentences": timed,
                            "seconds": timing["median_s"],
                            "repeats": args.repeats})
            print(results[-1], flush=True)
    (out / "cost.json").write_text(json.dumps(
        {"machine": machine(), "rows": results}, indent=1))


def _mean_std(values):
    values = list(values)
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std


# The grid of the issue (models x patterns x positions) and the settings it
# runs at: epochs per data set; [CLS] pooling on full graphs and mean
# pooling on windows, whose [CLS] token sees only 2 * window * layers
# neighbours.
GRID_EPOCHS = {"sst2": 4, "trec": 10, "r8": 8}
GRID_VARIANT = {"full": "", "window": "pooling=mean"}
GRID_MODELS = ("mha", "gin-attention", "pna-attention")
GRID_COLUMNS = [("full", "sinusoidal"), ("full", "rope"),
                ("window", "sinusoidal"), ("window", "rope")]


def _grid(groups) -> list:
    """Test accuracy (mean ± std over seeds) of the grid's configurations,
    one row per data set and model; the best cell of each data set bold."""
    lines = ["## Grid", "",
             "Test accuracy %, mean ± std over seeds 0, 1, 2 (fewer where "
             "marked); epochs " + ", ".join(
                 f"{ds} {e}" for ds, e in GRID_EPOCHS.items()) +
             "; `[CLS]` pooling on full graphs, mean pooling on windows.", "",
             "| data set | model | " + " | ".join(
                 f"{p} + {q}" for p, q in GRID_COLUMNS) + " |",
             "|---|---|" + "---|" * len(GRID_COLUMNS)]
    for ds, epochs in GRID_EPOCHS.items():
        cells = {}
        for model in GRID_MODELS:
            for pattern, pos in GRID_COLUMNS:
                rs = groups.get((ds, model, pattern, pos,
                                 GRID_VARIANT[pattern], epochs))
                if rs:
                    cells[model, pattern, pos] = rs
        if not cells:
            continue
        best = max(cells, key=lambda k: _mean_std(
            r["test"] for r in cells[k])[0])
        for model in GRID_MODELS:
            row = []
            for pattern, pos in GRID_COLUMNS:
                rs = cells.get((model, pattern, pos))
                if rs is None:
                    row.append("not run")
                    continue
                t, ts = _mean_std(r["test"] for r in rs)
                cell = f"{100 * t:.1f} ± {100 * ts:.1f}"
                if (model, pattern, pos) == best:
                    cell = f"**{cell}**"
                if len(rs) < 3:
                    cell += f" ({len(rs)} seed{'s' if len(rs) > 1 else ''})"
                row.append(cell)
            lines.append(f"| {ds} | {model} | " + " | ".join(row) + " |")
    return lines + [""]


def report(args) -> None:
    out = Path(args.out)
    runs = [json.loads(line) for line in
            (out / "runs.jsonl").read_text().splitlines() if line.strip()]
    # One configuration: data set, model, pattern, positions and the other
    # options given (``variant``: pooling, preset, --set); a later run of the
    # same configuration, epochs and seed replaces an earlier one.
    latest = {}
    for r in runs:
        key = (r["dataset"], r["model"], r["pattern"], r["pos"],
               r.get("variant", ""), len(r["history"]))
        latest[key + (r["seed"],)] = r
    groups = {}
    for (*key, _), r in latest.items():
        groups.setdefault(tuple(key), []).append(r)
    lines = ["| data set | model | pattern | pos | options | test accuracy | "
             "seeds | val accuracy | params | s / epoch | epochs |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (ds, model, pattern, pos, variant, _), rs in sorted(groups.items()):
        t, ts = _mean_std(r["test"] for r in rs)
        v, vs = _mean_std(r["val"] for r in rs)
        lines.append(
            f"| {ds} | {model} | {pattern} | {pos} | {variant} | "
            f"{100 * t:.1f} ± "
            f"{100 * ts:.1f} | "
            f"{','.join(str(s) for s in sorted(r['seed'] for r in rs))} | "
            f"{100 * v:.1f} ± {100 * vs:.1f} | {rs[0]['params']:,} | "
            f"{statistics.fmean(r['seconds_per_epoch'] for r in rs):.0f} | "
            f"{len(rs[0]['history'])} |")
    text = ["# Text classification as graphs", "",
            "Written by `benchmarks/text.py report` from `runs.jsonl`; test "
            "accuracy at the best validation epoch, mean ± std over seeds.",
            "", *_grid(groups), "## Every configuration run", "",
            "s / epoch: wall time of one training pass, one thread, while "
            "other jobs shared the machine's cores (a rough guide; the "
            "`cost` command measures time on its own).", "", *lines, ""]
    # The first claim: train/val loss gap, GIN-Attention vs standard.
    gap_rows = ["| data set | model | pattern | pos | options | epochs | seed "
                "| final train loss | final val loss | gap (val - train) | "
                "min val loss |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (ds, model, pattern, pos, variant, epochs), rs in sorted(
            groups.items()):
        gaps = [r["history"][-1]["val_loss"] - r["history"][-1]["train_loss"]
                for r in rs]
        for r in sorted(rs, key=lambda r: r["seed"]):
            last = r["history"][-1]
            gap_rows.append(
                f"| {ds} | {model} | {pattern} | {pos} | {variant} | "
                f"{epochs} | {r['seed']} | "
                f"{last['train_loss']:.3f} "
                f"| {last['val_loss']:.3f} | "
                f"{last['val_loss'] - last['train_loss']:+.3f} | "
                f"{min(h['val_loss'] for h in r['history']):.3f} |")
        g, gs = _mean_std(gaps)
        gap_rows.append(f"| {ds} | {model} | {pattern} | {pos} | {variant} "
                        f"| {epochs} | mean | | |"
                        f" **{g:+.3f} ± {gs:.3f}** | |")
    text += ["## Loss gap (GIN-Attention vs standard attention)", "",
             "Train loss is the mean over the epoch with label smoothing "
             "and dropout on; validation loss is plain cross-entropy in "
             "eval mode.", "", *gap_rows, ""]
    cost_path = out / "cost.json"
    if cost_path.exists():
        saved = json.loads(cost_path.read_text())
        rows = saved["rows"] if isinstance(saved, dict) else saved
        full = {r["dataset"]: r for r in rows if r["pattern"] == "full"}
        about = "one training pass over the first sentences of each " \
            "training split (`timed` of them, batches of 32)"
        if isinstance(saved, dict):
            m = saved["machine"]
            about += (f", median of {rows[0]['repeats']} passes; "
                      f"{m['platform']}, {m['cpus']} CPUs, "
                      f"{m['torch_threads']} torch thread(s), torch "
                      f"{m['torch']}")
        text += ["## Pattern cost against `full`", "",
                 f"`mha`, {about}.", "",
                 "| data set | pattern | nodes | edges | edges / full | "
                 "timed | train pass s | time / full |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            f = full[r["dataset"]]
            text.append(f"| {r['dataset']} | {r['pattern']} | {r['nodes']:,}"
                        f" | {r['edges']:,} | {r['edges'] / f['edges']:.2f} |"
                        f" {r['timed_sentences']} | {r['seconds']:.2f} | "
                        f"{r['seconds'] / f['seconds']:.2f} |")
        text.append("")
    (out / "text.md").write_text("\n".join(text))
    _plot(groups, out / "loss_gap.png")
    print("\n".join(text))


def _plot(groups, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    # the first claim's comparison, per data set: the configurations
    # (pattern, pos, options) run with both mha and gin-attention, full
    # graphs with sinusoidal positions and default options first
    keys = []
    for ds in sorted({k[0] for k in groups}):
        shared = sorted({k[2:] for k in groups if k[0] == ds and
                         k[1] == "mha"} & {k[2:] for k in groups if
                                          k[0] == ds and
                                          k[1] == "gin-attention"},
                        key=lambda c: (c[:3] != ("full", "sinusoidal", ""),
                                       c))
        if shared:
            keys += [(ds, m, *shared[0]) for m in ("mha", "gin-attention")]
    datasets = sorted({k[0] for k in keys})
    fig, grid = plt.subplots(len(datasets), 2, figsize=(11, 4 *
                                                         len(datasets)),
                             squeeze=False)
    colors = {"mha": "tab:blue", "gin-attention": "tab:red",
              "pna-attention": "tab:green"}
    for key in keys:
        ds, model, pattern, pos, variant, _ = key
        axes = grid[datasets.index(ds)]
        axes[0].set_title(f"{ds} ({pattern}, {pos}{', ' if variant else ''}"
                          f"{variant}): train (solid) and validation "
                          "(dashed) loss", fontsize=9)
        for r in groups[key]:
            ep = [h["epoch"] for h in r["history"]]
            c = colors.get(model, "gray")
            label = f"{model} seed {r['seed']}"
            axes[0].plot(ep, [h["train_loss"] for h in r["history"]], c=c,
                         lw=0.8, label=label + " train")
            axes[0].plot(ep, [h["val_loss"] for h in r["history"]], c=c,
                         lw=0.8, ls="--")
            axes[1].plot(ep, [h["val_loss"] - h["train_loss"]
                              for h in r["history"]], c=c, lw=0.8,
                         label=label)
    for ds, axes in zip(datasets, grid):
        axes[0].set(xlabel="epoch", ylabel="loss")
        axes[1].set(xlabel="epoch", ylabel="val - train loss",
                    title=f"{ds}: gap")
        axes[1].axhline(0, c="k", lw=0.5)
        axes[0].legend(fontsize=6)
        axes[1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("accuracy", "cost", "report"))
    parser.add_argument("--datasets", nargs="+", default=["sst2", "trec",
                                                          "r8"])
    parser.add_argument("--models", nargs="+",
                        default=["mha", "gin-attention", "pna-attention"])
    parser.add_argument("--patterns", nargs="+", default=["full", "window"])
    parser.add_argument("--pos", nargs="+", default=["sinusoidal", "rope"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--pooling", choices=OPTIONS["pooling"].choices,
                        default=None,
                        help="pooling of the text model (default: the "
                        "packaged defaults)")
    parser.add_argument("--preset", default=None,
                        help="a model preset, e.g. 'paper'")
    parser.add_argument("--set", nargs="+", metavar="KEY=VALUE",
                        help="further text-task options, e.g. hidden=128 "
                        "window=3")
    parser.add_argument("--cost-sentences", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=3,
                        help="cost: timed passes (the median is kept)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/text")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    {"accuracy": accuracy, "cost": cost, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
