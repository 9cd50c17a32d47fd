"""``tgnn``: the command line over :mod:`tgnn_transformers.train`."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from .models import MODELS
from .train.config import TASKS, resolve_config

EPILOG = """examples:
  tgnn train --task node --dataset cora --model gin-attention --seeds 0 1 2 \\
      --out runs/cora-gin
  tgnn train --task graph --dataset mutag --model mha --folds 10
  tgnn train --task link --dataset cora --model mha

data: raw files are read from --root (or $TGNN_DATA_ROOT); with --mirror
(or $TGNN_DATA_MIRROR) they are copied from that offline mirror instead of
downloaded.  Defaults per task and data set live in
tgnn_transformers/configs/defaults.json; every flag below overrides them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tgnn", description="Transformers as graph neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train", help="train and evaluate a model",
        description="Train a model on a data set over several seeds (node, "
        "link) or folds (graph) and write metrics.json, history.csv and "
        "curves.png into --out.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--task", choices=TASKS, default="node",
                       help="node classification, graph classification or "
                       "link prediction (default: node)")
    train.add_argument("--dataset", default="cora",
                       help="cora, citeseer, pubmed, cornell5, ogbn-arxiv, "
                       "mutag, proteins (default: cora)")
    train.add_argument("--model", choices=MODELS, default="mha",
                       help="attention model or PyG baseline (default: mha)")
    train.add_argument("--seeds", type=int, nargs="+", default=None,
                       help="random seeds, one run each (default: 0)")
    train.add_argument("--folds", type=int, default=None,
                       help="number of cross-validation folds (graph task)")
    train.add_argument("--out", default=None,
                       help="output folder (default: runs/<task>-<dataset>-"
                       "<model>)")
    train.add_argument("--root", default=None,
                       help="data root (default: $TGNN_DATA_ROOT or "
                       "~/.cache/tgnn_transformers/data)")
    train.add_argument("--mirror", default=None,
                       help="offline data mirror (default: "
                       "$TGNN_DATA_MIRROR)")
    train.add_argument("--config", default=None,
                       help="a JSON file replacing the packaged defaults")
    hp = train.add_argument_group("hyper-parameters (override the defaults)")
    hp.add_argument("--epochs", type=int)
    hp.add_argument("--patience", type=int,
                    help="early stopping: epochs without validation gain")
    hp.add_argument("--hidden", type=int, help="hidden width")
    hp.add_argument("--heads", type=int, help="attention heads")
    hp.add_argument("--out-heads", type=int, dest="out_heads",
                    help="heads of the last layer (averaged)")
    hp.add_argument("--layers", type=int, help="number of layers")
    hp.add_argument("--lr", type=float, help="learning rate")
    hp.add_argument("--weight-decay", type=float, dest="weight_decay")
    hp.add_argument("--dropout", type=float, help="feature dropout")
    hp.add_argument("--attn-dropout", type=float, dest="attn_dropout",
                    help="attention dropout")
    hp.add_argument("--root-weight", dest="root_weight",
                    action=argparse.BooleanOptionalAction,
                    help="skip weight W_skip x_i in the attention convs")
    hp.add_argument("--mlp-multiplier", type=float, dest="mlp_multiplier",
                    help="GIN-Attention MLP width multiplier (gamma)")
    hp.add_argument("--normalization", choices=["softmax", "relu"],
                    help="GIN-Attention scores: softmax or non-normalised "
                    "ReLU (sum-like, keeps degree information)")
    hp.add_argument("--batch-size", type=int, dest="batch_size",
                    help="graphs per batch (graph task)")
    hp.add_argument("--pool", choices=["add", "mean"],
                    help="global pooling (graph task)")
    hp.add_argument("--readout", choices=["last", "layers"],
                    help="graph task: classify the pooled last layer, or sum "
                    "one linear head per layer as in GIN")
    hp.add_argument("--edge-features", dest="edge_features",
                    action=argparse.BooleanOptionalAction,
                    help="attend with the data set's edge features (graph "
                    "task, e.g. MUTAG bond types; default: on)")
    hp.add_argument("--sparse-features", dest="sparse_features",
                    action=argparse.BooleanOptionalAction,
                    help="keep sparse node features as a CSR tensor (node "
                    "task; default: on)")
    hp.add_argument("--attention", choices=["mha", "gin", "pna"],
                    help="attention inside graph-transformer")
    hp.add_argument("--decoder", choices=["dot", "mlp"],
                    help="link decoder (link task)")
    hp.add_argument("--checkpoint-every", type=int, dest="checkpoint_every",
                    help="epochs between checkpoints (default: 1)")
    run = train.add_argument_group("run control")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run in --out")
    run.add_argument("--quiet", action="store_true",
                     help="no progress output")
    return parser


OVERRIDES = ("epochs", "patience", "hidden", "heads", "out_heads", "layers",
             "lr", "weight_decay", "dropout", "attn_dropout", "batch_size",
             "root_weight", "mlp_multiplier", "normalization",
             "attention", "decoder", "checkpoint_every", "folds", "seeds",
             "pool", "readout", "edge_features", "sparse_features")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from .data import DataSourceError
    from .train.runner import run_experiment
    overrides = {k: getattr(args, k) for k in OVERRIDES}
    config = resolve_config(args.task, args.dataset, args.model, overrides,
                            args.config)
    out = args.out or f"runs/{args.task}-{args.dataset}-{args.model}"
    try:
        metrics = run_experiment(config, out, resume=args.resume,
                                 quiet=args.quiet, root=args.root,
                                 mirror=args.mirror)
    except DataSourceError as exc:
        print(f"tgnn: error: {exc}", file=sys.stderr)
        return 2
    test = metrics["test"]
    print(f"{config['dataset']} / {config['model']}: test {metrics['metric']}"
          f" {100 * test['mean']:.2f} ± {100 * test['std']:.2f} over "
          f"{test['n']} run(s); results in {out}/metrics.json")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
