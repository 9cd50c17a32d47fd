"""Sentence classification on token graphs (SST-2, TREC, R8)."""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Tuple

import torch

from ...functional import sequence_edge_index
from ...models import build_model
from ..config import model_options
from ..device import run_setup
from ..loop import Recipe
from .common import (_delta, minibatch_recipe, scheduled_optimizer,
                     seed_runs, shard_loader)

runs = seed_runs
log = logging.getLogger("tgnn_transformers.train")


def load(config: Mapping[str, Any], root=None, mirror=None):
    from ...data import load_text_splits
    return load_text_splits(config["dataset"], root=root, mirror=mirror)


def build(splits, config: Mapping[str, Any], run: Dict[str, int]) -> Recipe:
    return text_recipe(splits, config)


def check_config(config: Dict[str, Any], explicit: Dict[str, str]) -> None:
    """``pooling: auto`` becomes ``cls`` or ``mean`` for the pattern
    (:func:`text_pooling`), recorded in the run's configuration."""
    if config["pooling"] == "auto":
        config["pooling"], why = text_pooling(config)
        log.info("pooling auto -> %s: %s", config["pooling"], why)


def cls_receptive_field(pattern: str, kwargs: Dict[str, int],
                        num_layers: int, length: int) -> int:
    """How many of a sentence's ``length`` tokens (``[CLS]`` first) reach
    the ``[CLS]`` token's state through ``num_layers`` layers of attention
    on ``pattern``'s graph."""
    edge_index = sequence_edge_index(length, pattern, **kwargs)
    num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else length
    reached = torch.zeros(max(num_nodes, length), dtype=torch.bool)
    reached[0] = True
    source, target = edge_index
    for _ in range(num_layers):
        step = reached.clone()
        step[source[reached[target]]] = True
        reached = step
    return int(reached[:length].sum())


def text_pooling(config: Mapping[str, Any]) -> Tuple[str, str]:
    """``(pooling, reason)`` for ``pooling: auto``: ``"cls"`` when the
    ``[CLS]`` token hears every token of every sentence up to
    ``max_length`` through the model's ``num_layers`` layers on the
    attention pattern (full, global-window; a window as wide as the
    sentences; binary-partition with two layers or more), ``"mean"``
    otherwise (causal: ``[CLS]``, first, hears only itself; window,
    dilated: a few neighbours per layer)."""
    pattern, kwargs = text_pattern(config)
    layers, longest = config["num_layers"], config["max_length"]
    lengths = sorted({longest} | {n for n in (2, 3, 4, 8, 16, 32, 64, 128,
                                              256) if n < longest})
    for length in lengths:
        heard = cls_receptive_field(pattern, kwargs, layers, length)
        if heard < length:
            return "mean", (f"on the {config['pattern']} pattern the [CLS] "
                            f"token of a {length}-token sentence hears "
                            f"{heard} of its tokens after {layers} "
                            f"layer(s)")
    return "cls", (f"on the {config['pattern']} pattern the [CLS] token "
                   f"hears every token after {layers} layer(s)")


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


