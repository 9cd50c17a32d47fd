"""Graph classification with stratified cross-validation folds (TU data
sets)."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import torch
from torch_geometric.utils import add_remaining_self_loops

from ...data import load_dataset, positional_encodings
from ...models import build_model, get_model
from ...transforms import graph_positional_encoding
from ..config import model_options
from ..device import run_setup
from ..loop import Recipe
from .common import _delta, _optimizer, minibatch_recipe, shard_loader


def load(config: Mapping[str, Any], root=None, mirror=None):
    """The data set; with ``pe``, its graphs as a list, each with its
    encoding ``pe`` (cached in the data root)."""
    dataset = load_dataset(config["dataset"], root=root, mirror=mirror)
    if config.get("pe") is None:
        return dataset
    graphs = list(dataset)
    encodings = positional_encodings(config["dataset"], graphs, config["pe"],
                                     config["pe_dim"], root)
    for graph, pe in zip(graphs, encodings):
        graph.pe = pe
    return graphs


def check_config(config: Dict[str, Any], explicit: Dict[str, str]) -> None:
    """``folds`` no larger than the data set's graphs (known from
    :data:`~tgnn_transformers.data.SOURCES` before any data loads; see
    :func:`check_data` for the rest): a fold without graphs would average
    an empty test set in."""
    from ...data import get_source
    graphs = get_source(config["dataset"]).facts.get("num_graphs")
    if graphs is not None:
        _check_folds(config["folds"], graphs, config["dataset"])


def check_data(dataset, config: Mapping[str, Any]) -> None:
    """:func:`check_config`'s check on the loaded graphs, before any
    training (for data sets whose size is not known in advance)."""
    _check_folds(config["folds"], len(dataset), config["dataset"])


def _check_folds(folds: int, graphs: int, name: str) -> None:
    if folds > graphs:
        raise ValueError(f"option 'folds' of the graph task must be at most "
                         f"the number of graphs of {name} ({graphs}), got "
                         f"{folds}: a fold without graphs has no test set")


def runs(config: Mapping[str, Any]) -> List[Dict[str, int]]:
    """One run per fold (with the first seed)."""
    return [{"seed": config["seeds"][0], "fold": fold}
            for fold in range(config["folds"])]


def build(dataset, config: Mapping[str, Any], run: Dict[str, int]) -> Recipe:
    return graph_recipe(dataset, config, run["fold"], run["seed"])


def stratified_folds(labels: torch.Tensor, folds: int,
                     seed: int = 0) -> List[torch.Tensor]:
    """Test indices of ``folds`` stratified folds (fixed by ``seed``)."""
    gen = torch.Generator().manual_seed(seed)
    parts: List[List[torch.Tensor]] = [[] for _ in range(folds)]
    for c in labels.unique():
        idx = (labels == c).nonzero().view(-1)
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        for f, chunk in enumerate(idx.tensor_split(folds)):
            parts[f].append(chunk)
    return [torch.cat(p).sort().values for p in parts]


def _with_features(dataset):
    """Graphs with at least one node feature (constant 1 if none)."""
    graphs = []
    for g in dataset:
        if g.x is None:
            g.x = torch.ones(g.num_nodes, 1)
        g.x = g.x.float()
        if g.get("edge_attr") is not None:
            g.edge_attr = g.edge_attr.float().view(g.num_edges, -1)
        graphs.append(g)
    return graphs


def _edge_dim(graphs, config: Dict[str, Any]) -> Optional[int]:
    """Width of the edge features the convs attend with (MUTAG's bond
    types), or ``None`` without them or with ``edge_features: false``."""
    attr = graphs[0].get("edge_attr")
    if not config["edge_features"] or attr is None:
        return None
    if not get_model(config["model"]).edge_features:
        return None
    return attr.size(1)


def graph_recipe(dataset, config: Dict[str, Any], fold: int,
               seed: int) -> Recipe:
    """Graph classification on fold ``fold`` of ``config["folds"]``
    stratified folds (a ninth of the rest for validation, drawn by
    ``seed``); with ``pe`` in ``config`` each graph's ``pe`` goes to the
    model (computed here, uncached, for graphs without one)."""
    graphs = _with_features(dataset)
    if config.get("pe") is not None:
        for g in graphs:
            if g.get("pe") is None:
                g.pe = graph_positional_encoding(
                    g.edge_index, g.num_nodes, config["pe"],
                    config["pe_dim"])
    labels = torch.tensor([int(g.y) for g in graphs])
    folds = stratified_folds(labels, config["folds"], seed=12345)
    test_idx = folds[fold]
    rest = torch.tensor(sorted(set(range(len(graphs))) -
                               set(test_idx.tolist())))
    gen = torch.Generator().manual_seed(seed)
    rest = rest[torch.randperm(rest.numel(), generator=gen)]
    n_val = max(1, rest.numel() // 9)  # ~10% of all graphs for validation
    val_idx, train_idx = rest[:n_val], rest[n_val:]
    edge_dim = _edge_dim(graphs, config)
    if not edge_dim:
        for g in graphs:
            if "edge_attr" in g:
                del g.edge_attr
    if config["self_loops"]:
        for g in graphs:
            # Self loops get an all-zero edge feature: no bond type.
            edge_index, edge_attr = add_remaining_self_loops(
                g.edge_index, g.get("edge_attr"), fill_value=0.0,
                num_nodes=g.num_nodes)
            g.edge_index = edge_index
            if edge_attr is not None:
                g.edge_attr = edge_attr
    delta = _delta([graphs[i].edge_index for i in train_idx],
                   [graphs[i].num_nodes for i in train_idx])
    device, precision = run_setup(config)
    graphs = [g.to(device) for g in graphs]  # once; batches form there
    subset = lambda idx: [graphs[i] for i in idx]  # noqa: E731
    bs = config["batch_size"]
    loaders = {"train": shard_loader(subset(train_idx), bs, train=True),
               "val": shard_loader(subset(val_idx), 256),
               "test": shard_loader(subset(test_idx), 256)}
    model = build_model("graph", model_options(config, delta=delta,
                                               edge_dim=edge_dim),
                        graphs[0].num_features,
                        int(labels.max()) + 1).to(device)

    def forward(module, batch):
        with precision.autocast():
            out = module(batch.x, batch.edge_index, batch.edge_attr,
                         batch.batch, pe=batch.get("pe"))
        return out.float(), batch.y

    return minibatch_recipe(model, _optimizer(model, config), precision,
                            loaders, forward)


