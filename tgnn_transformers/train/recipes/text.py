"""Sentence classification on token graphs (SST-2, TREC, R8)."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

from ...models import build_model
from ..config import model_options
from ..device import run_setup
from ..loop import Recipe
from .common import (_delta, minibatch_recipe, scheduled_optimizer,
                     seed_runs, shard_loader)

runs = seed_runs


def load(config: Mapping[str, Any], root=None, mirror=None):
    from ...data import load_text_splits
    return load_text_splits(config["dataset"], root=root, mirror=mirror)


def build(splits, config: Mapping[str, Any], run: Dict[str, int]) -> Recipe:
    return text_recipe(splits, config)


def text_pattern(config: Dict[str, Any]) -> Tuple[str, Dict[str, int]]:
    """``--pattern`` as a :func:`sequence_to_graph` pattern and arguments."""
    pattern = config["pattern"].replace("-", "_")
    kwargs: Dict[str, int] = {}
    if pattern in ("window", "dilated", "global_window", "binary_partition"):
        kwargs["window"] = config["window"]
    if pattern == "dilated":
        kwargs["dilation"] = 2
    if pattern == "global_window":
        kwargs["num_global"] = 1  # the [CLS] token
    return pattern, kwargs


def text_graphs(splits, config: Dict[str, Any]):
    """The vocabulary and the sentence-graph datasets of every split."""
    from ...data import SentenceGraphDataset, Vocabulary
    vocab = Vocabulary.build(splits.splits["train"][0], config["min_freq"])
    pattern, kwargs = text_pattern(config)
    graphs = {name: SentenceGraphDataset(sentences, labels, vocab, pattern,
                                         max_length=config["max_length"],
                                         **kwargs)
              for name, (sentences, labels) in splits.splits.items()}
    return vocab, graphs


def text_recipe(splits, config: Dict[str, Any]) -> Recipe:
    """Sentence classification on token graphs (``splits``: a
    :class:`~tgnn_transformers.data.TextSplits`): mini-batches of sentence
    graphs, AdamW or Adam, linear warm-up then linear/cosine decay per
    step, gradient clipping, label smoothing."""
    vocab, graphs = text_graphs(splits, config)
    train = graphs["train"]
    delta = _delta([train._data.edge_index],
                   [int(train._data.num_nodes or train._data.x.size(0))])
    loaders = {"train": shard_loader(train, config["batch_size"],
                                     train=True),
               "val": shard_loader(graphs["val"], 256),
               "test": shard_loader(graphs["test"], 256)}
    device, precision = run_setup(config)
    model = build_model("text", model_options(config, delta=delta),
                        len(vocab), splits.num_classes).to(device)

    def forward(module, batch):
        # (sentence batches are collated on the CPU, then moved)
        batch = batch.to(device, non_blocking=True)
        with precision.autocast():
            out = module(batch.x, batch.edge_index, batch.batch,
                        batch.position, batch.virtual)
        return out.float(), batch.y

    return _text_minibatch_recipe(model, config, precision, loaders,
                                  forward)


def _text_minibatch_recipe(model, config, precision, loaders, forward):
    optimizer, scheduler = scheduled_optimizer(model, config,
                                               len(loaders["train"]))
    return minibatch_recipe(model, optimizer, precision, loaders, forward,
                            scheduler=scheduler,
                            label_smoothing=config["label_smoothing"],
                            clip_grad=config["clip_grad"])


