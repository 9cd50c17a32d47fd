"""Fine-tuning a pretrained encoder (with an adapter) on a text data
set."""
from __future__ import annotations

from typing import Any, Dict, Mapping

import torch

from ...models import build_model
from ..config import model_options
from ..device import run_setup
from ..distributed import ShardSampler
from ..loop import Recipe
from .common import seed_runs
from .text import _text_minibatch_recipe
from .text import load  # noqa: F401  (the same text data sets)

runs = seed_runs


def check_config(config: Dict[str, Any], explicit: Dict[str, str]) -> None:
    """``pooling: auto`` is the mean for pretrained sentence encoders (the
    pooling they were trained with), recorded in the configuration."""
    if config["pooling"] == "auto":
        config["pooling"] = "mean"


def build(splits, config: Mapping[str, Any], run: Dict[str, int]) -> Recipe:
    return finetune_recipe(splits, config)


class _SentenceBatches:
    """Re-iterable tokenized mini-batches of this rank's shard of one split
    (with ``shuffle``, in a new order each pass; see
    :class:`~tgnn_transformers.train.distributed.ShardSampler`)."""

    def __init__(self, model, sentences, labels, size: int,
                 max_length: int, shuffle: bool = False):
        self.model, self.sentences, self.labels = model, sentences, labels
        self.size, self.max_length = size, max_length
        self.sampler = ShardSampler(len(sentences), shuffle)

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.size)

    def __iter__(self):
        order = self.sampler.indices().tolist()
        for start in range(0, len(order), self.size):
            ids = order[start:start + self.size]
            words = [self.sentences[i] for i in ids]
            labels = torch.tensor([self.labels[i] for i in ids])
            yield self.model.tokenize(words, self.max_length), labels


def finetune_recipe(splits, config: Dict[str, Any]) -> Recipe:
    """A pretrained encoder (registry model, e.g. ``minilm``) with a
    classification head, fine-tuned by its ``adapter`` on a text data set
    (``splits``: :class:`~tgnn_transformers.data.TextSplits`), with the text
    task's optimiser options."""
    device, precision = run_setup(config)
    model = build_model("finetune", model_options(config), None,
                        splits.num_classes).to(device)
    size, length = config["batch_size"], config["max_length"]
    loaders = {name: _SentenceBatches(model, *splits.splits[name],
                                      size if name == "train" else 128,
                                      length, shuffle=name == "train")
               for name in ("train", "val", "test")}

    def forward(module, batch):
        tokens, labels = batch
        tokens = {k: v.to(device) for k, v in tokens.items()}
        with precision.autocast():
            out = module(**tokens)
        return out.float(), labels.to(device)

    return _text_minibatch_recipe(model, config, precision, loaders,
                                  forward)
