"""Link prediction on a node data set's graph: held-out edges against
sampled non-edges, scored by ROC-AUC."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from torch_geometric.utils import add_remaining_self_loops, negative_sampling

from ...data import load_dataset
from ...models import build_model
from ..config import model_options
from ..device import run_setup
from ..loop import Recipe
from .common import _delta, _optimizer, roc_auc, seed_runs

runs = seed_runs


def load(config: Mapping[str, Any], root=None, mirror=None):
    return load_dataset(config["dataset"], root=root, mirror=mirror)


def build(dataset, config: Mapping[str, Any], run: Dict[str, int]) -> Recipe:
    return link_recipe(dataset[0], config, run["seed"])


def _pairs_with_negatives(pos: torch.Tensor, edge_index: torch.Tensor,
                          num_nodes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The positive pairs ``pos`` ``[2, P]`` followed by negative pairs
    sampled outside ``edge_index``, and their float labels (1 for each
    positive, 0 for each negative), as ``(pairs, labels)``.

    ``negative_sampling`` is asked for ``P`` negatives but returns fewer
    when the graph has fewer non-edges (or rejects duplicates), so the
    labels follow the sizes actually returned.
    """
    neg = negative_sampling(edge_index, num_nodes,
                            num_neg_samples=pos.size(1))
    pairs = torch.cat([pos, neg], dim=1)
    labels = torch.cat([torch.ones(pos.size(1), device=pos.device),
                        torch.zeros(neg.size(1), device=pos.device)])
    return pairs, labels


def link_recipe(data: Data, config: Dict[str, Any], seed: int) -> Recipe:
    from torch_geometric.transforms import RandomLinkSplit
    torch.manual_seed(seed)
    split = RandomLinkSplit(num_val=config["val_ratio"],
                            num_test=config["test_ratio"], is_undirected=True,
                            add_negative_train_samples=False)
    train_data, val_data, test_data = split(Data(x=data.x,
                                                 edge_index=data.edge_index,
                                                 num_nodes=data.num_nodes))
    message_edges = train_data.edge_index
    if config["self_loops"]:
        message_edges, _ = add_remaining_self_loops(
            message_edges, num_nodes=data.num_nodes)
    delta = _delta([message_edges], [data.num_nodes])
    device, precision = run_setup(config)
    model = build_model("link", model_options(config, delta=delta),
                        data.num_features).to(device)
    optimizer = _optimizer(model, config)
    train_data, val_data, test_data, message_edges = (
        train_data.to(device), val_data.to(device), test_data.to(device),
        message_edges.to(device))

    def train_epoch() -> float:
        model.train()
        optimizer.zero_grad()
        pairs, labels = _pairs_with_negatives(train_data.edge_label_index,
                                              train_data.edge_index,
                                              data.num_nodes)
        with precision.autocast():
            logits = model.decode(model.encode(train_data.x, message_edges),
                                  pairs)
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
        precision.step(loss, optimizer)
        return loss.item()

    @torch.no_grad()
    def evaluate() -> Dict[str, float]:
        model.eval()
        with precision.autocast():
            z = model.encode(train_data.x, message_edges)
        result = {}
        for name, part in (("train", train_data), ("val", val_data),
                           ("test", test_data)):
            if name == "train":
                pairs, labels = _pairs_with_negatives(
                    part.edge_label_index, part.edge_index, data.num_nodes)
            else:
                pairs, labels = part.edge_label_index, part.edge_label
            with precision.autocast():
                logits = model.decode(z, pairs).float()
            result[name] = roc_auc(logits, labels)
            if name == "val":
                result["val_loss"] = float(
                    F.binary_cross_entropy_with_logits(logits, labels))
        return result

    return Recipe(model, optimizer, train_epoch, evaluate, metric="roc_auc")


