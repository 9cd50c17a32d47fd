"""End to end: one training epoch (forward, backward, optimizer step) of
the node classifier on Cora and Cornell5, built on this package's
``MultiHeadAttentionConv`` and on PyG's ``TransformerConv`` with the same
hyper-parameters."""
from __future__ import annotations

import argparse
import os
import tempfile

import torch

from common import machine, time_it, write_result
from tgnn_transformers.data import load_dataset
from tgnn_transformers.train import resolve_config
from tgnn_transformers.train.recipes import node_recipe


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--datasets", nargs="+",
                        default=["cora", "cornell5"])
    args = parser.parse_args(argv)
    root = os.environ.get("TGNN_DATA_ROOT") or tempfile.mkdtemp()
    rows = []
    for name in args.datasets:
        dataset = load_dataset(name, root=root)
        # The last variant keeps the input features dense, to measure what
        # the sparse CSR features buy.
        for label, model, overrides in (
                ("mha", "mha", {}),
                ("transformerconv", "transformerconv", {}),
                ("mha, dense features", "mha", {"sparse_features": False})):
            config = resolve_config("node", name, model, overrides)
            torch.manual_seed(0)
            task = node_recipe(dataset[0], dataset.num_classes, config)
            timing = time_it(task.train_epoch, args.repeats)
            rows.append({"dataset": name, "model": label,
                         "epoch": timing, "config": config})
            print(f"{name:9s} {label:20s} "
                  f"{1000 * timing['median_s']:8.1f} ms / epoch")
    print("wrote", write_result("e2e", {"machine": machine(),
                                        "rows": rows}))


if __name__ == "__main__":
    main()
