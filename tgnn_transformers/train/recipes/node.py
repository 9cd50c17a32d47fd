"""Node classification: full-batch or on neighbour-sampled mini-batches,
on Planetoid, LINKX and OGB graphs."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from torch_geometric.utils import add_remaining_self_loops

from ...data import load_dataset
from ...functional import select_rows, to_sparse_csr
from ...models import build_model, get_model
from .. import distributed
from ..config import model_options
from ..device import run_setup
from ..distributed import ShardSampler
from ..loop import Recipe, track
from ..sampling import neighbor_loader, sampled_blocks
from .common import Tally, _delta, _optimizer, reduce_tallies, seed_runs

runs = seed_runs


def load(config: Mapping[str, Any], root=None, mirror=None):
    return load_dataset(config["dataset"], root=root, mirror=mirror)


def build(dataset, config: Mapping[str, Any], run: Dict[str, int]) -> Recipe:
    if config["dataset"].startswith("ogbn-"):
        return _ogb_node_recipe(config, dataset)
    return node_recipe(dataset[0], dataset.num_classes, config,
                       split=run["seed"])


def check_config(config: Dict[str, Any], explicit: Dict[str, str]) -> None:
    """Mini-batches: ``num_neighbors`` has one value or one per layer, none
    of them 0; ``batch_size`` without it is an error rather than silently
    ignored (full-batch runs record ``batch_size: null``).  ``explicit``
    maps the options set explicitly to where they were set."""
    hops = config["num_neighbors"]
    if hops is None:
        if "batch_size" in explicit:
            raise ValueError(f"{explicit['batch_size']}: batch_size on the "
                             "node task sets the seed nodes of neighbour-"
                             "sampled mini-batches and needs num_neighbors "
                             "too (e.g. --num-neighbors 15 10; -1 takes all "
                             "neighbours)")
        config["batch_size"] = None
        return
    layers = config.get("num_layers")
    if len(hops) != 1 and layers is not None and len(hops) != layers:
        raise ValueError(f"num_neighbors needs one value or one per layer "
                         f"({layers} for num_layers={layers}), got "
                         f"{len(hops)}: {list(hops)}")
    if 0 in hops:
        raise ValueError(f"num_neighbors: 0 neighbours leaves a layer "
                         f"without messages; expected -1 (all) or a "
                         f"positive count, got {list(hops)}")


def _ogb_node_recipe(config, loaded):
    dataset, split, _ = loaded
    data = dataset[0]
    n = data.num_nodes
    for name, key in (("train_mask", "train"), ("val_mask", "valid"),
                      ("test_mask", "test")):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[split[key]] = True
        data[name] = mask
    from torch_geometric.utils import to_undirected
    data.edge_index = to_undirected(data.edge_index, num_nodes=n)
    return node_recipe(data, dataset.num_classes, config)


def prepare_node_data(data: Data, config: Dict[str, Any]) -> Data:
    """Normalised features, self-loops, flat labels and (where it pays)
    sparse features, as ``config`` asks."""
    data = data.clone()
    if config["self_loops"]:
        _add_self_loops(data)
    if config["normalize_features"]:
        # Row-normalised bag-of-words features, as in the GAT/GCN papers.
        data.x = data.x / data.x.sum(dim=1, keepdim=True).clamp(min=1e-12)
    data.y = data.y.view(-1)
    if config["sparse_features"]:
        data.x = _maybe_sparse(data.x, config["model"])
    return data


# Below this share of nonzeros a CSR copy of the features pays off.
SPARSE_FEATURE_DENSITY = 0.1


def _maybe_sparse(x: torch.Tensor, model: str) -> torch.Tensor:
    """Bag-of-words features as a sparse CSR tensor: the first layer's
    projections and the input dropout then cost per nonzero, not per entry
    (Cora: 1.3 % nonzero, 3x faster epochs in bench_e2e.py)."""
    if (not get_model(model).sparse_features or x.layout != torch.strided
            or x.dim() != 2):
        return x
    if torch.count_nonzero(x) > SPARSE_FEATURE_DENSITY * x.numel():
        return x
    return to_sparse_csr(x)


def node_splits(data: Data, split: int = 0) -> Tuple[torch.Tensor, ...]:
    """Train/val/test masks.  Multi-split data sets have one mask column per
    split; data sets without masks (the LINKX Facebook graphs) get the LINKX
    protocol's random 50/25/25 split of the labelled nodes, seeded by
    ``split``."""
    labelled = data.y >= 0
    if "train_mask" not in data:
        idx = labelled.nonzero().view(-1)
        gen = torch.Generator().manual_seed(split)
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        cut1, cut2 = idx.numel() // 2, (3 * idx.numel()) // 4
        masks = []
        for part in (idx[:cut1], idx[cut1:cut2], idx[cut2:]):
            mask = torch.zeros(data.num_nodes, dtype=torch.bool)
            mask[part] = True
            masks.append(mask)
        return tuple(masks)
    masks = []
    for name in ("train_mask", "val_mask", "test_mask"):
        mask = data[name]
        if mask.dim() == 2:
            mask = mask[:, split % mask.size(1)]
        masks.append(mask)
    return tuple(m & labelled for m in masks)


def node_recipe(data: Data, num_classes: int, config: Dict[str, Any],
                split: int = 0) -> Recipe:
    """Node classification, full-batch or (with ``num_neighbors``) on
    neighbour-sampled mini-batches of ``batch_size`` seed nodes.  Under
    ``torchrun`` each rank trains on its shard of the training nodes;
    evaluation runs the whole graph (full neighbourhoods) and sums the
    metrics of each rank's shard of the evaluated nodes."""
    minibatch = config.get("num_neighbors") is not None
    # Sampling runs on the graph without self-loops (each sampled subgraph
    # gets its own: a sampled neighbourhood need not contain the node);
    # full-graph passes take the graph with them.
    data = prepare_node_data(data, {**config, "self_loops": False})
    masks = node_splits(data, split)
    full = data
    if config["self_loops"]:
        full = _add_self_loops(data.clone())
    delta = _delta([full.edge_index], [data.num_nodes])
    device, precision = run_setup(config)
    model = build_model("node", model_options(config, delta=delta),
                        data.num_features, num_classes).to(device)
    net = distributed.wrap(model)
    optimizer = _optimizer(model, config)
    if precision.dtype is not None and full.x.layout != torch.strided:
        # torch has no low-precision sparse CSR matmul for the first
        # projection under autocast: mixed precision takes dense features.
        full.x = full.x.to_dense()
    full = full.to(device)  # once
    # Each rank evaluates (and, full-batch, trains on) its shard of nodes.
    shards = [mask.nonzero().view(-1) for mask in masks]
    shards = [idx[ShardSampler(idx.numel(), shuffle=False).indices()]
              .to(device) for idx in shards]

    if minibatch:
        train_epoch = _sampled_node_epoch(net, optimizer, precision, data,
                                          masks[0], config, device)
    else:
        def train_epoch() -> float:
            net.train()
            optimizer.zero_grad()
            with precision.autocast():
                out = net(full.x, full.edge_index)
            loss = F.cross_entropy(out[shards[0]].float(),
                                   full.y[shards[0]])
            precision.step(loss, optimizer)
            return loss.item()

    @torch.no_grad()
    def evaluate() -> Dict[str, float]:
        model.eval()
        with precision.autocast():
            out = model(full.x, full.edge_index)
        out = out.float()
        tallies = []
        for idx in shards:
            tally = Tally()
            tally.add(out[idx], full.y[idx])
            tallies.append(tally)
        (train, _), (val, val_loss), (test, _) = reduce_tallies(*tallies)
        return {"val_loss": val_loss, "train": train, "val": val,
                "test": test}

    return Recipe(model, optimizer, train_epoch, evaluate)


def _add_self_loops(data: Data) -> Data:
    """Adds ``data``'s missing self-loops (in place) and returns it."""
    data.edge_index, _ = add_remaining_self_loops(data.edge_index,
                                                  num_nodes=data.num_nodes)
    return data


def neighbor_hops(config: Dict[str, Any]) -> List[int]:
    """``num_neighbors`` with one entry per layer (a single value applies to
    every layer; -1 takes all neighbours)."""
    hops = list(config["num_neighbors"])
    if len(hops) == 1 and "num_layers" in config:
        return hops * config["num_layers"]
    return hops


def _sampled_node_epoch(net, optimizer, precision, data: Data,
                        train_mask: torch.Tensor, config: Dict[str, Any],
                        device: torch.device):
    """One epoch over PyG ``NeighborLoader`` mini-batches of this rank's
    training nodes (seed nodes first in each sampled subgraph; the loss is
    taken on them).  Models whose convs take bipartite input run layer by
    layer on the subgraph's blocks (:func:`sampled_blocks`); the others run
    the whole subgraph."""
    train_idx = train_mask.nonzero().view(-1)
    # The loader samples the structure only; features are gathered per
    # batch from the (possibly sparse CSR) matrix, never densified whole.
    loader = neighbor_loader(
        Data(edge_index=data.edge_index, y=data.y, num_nodes=data.num_nodes),
        neighbor_hops(config), train_idx, config["batch_size"],
        ShardSampler(train_idx.numel(), shuffle=True))
    features = data.x
    if precision.dtype is not None and features.layout != torch.strided:
        features = features.to_dense()  # no low-precision CSR matmul
    model = getattr(net, "module", net)
    layers = len(neighbor_hops(config))
    use_blocks = model.takes_blocks and layers == len(model.encoder.convs)

    def train_epoch() -> float:
        net.train()
        tally = Tally()
        for batch in track(loader, "train"):
            seeds = batch.batch_size
            x = select_rows(features, batch.n_id).to(device)
            edge_index = batch.edge_index.to(device)
            y = batch.y[:seeds].to(device)
            blocks = sampled_blocks(edge_index, batch.num_nodes, seeds,
                                    layers, config["self_loops"]) \
                if use_blocks else None
            if blocks is None and config["self_loops"]:
                edge_index, _ = add_remaining_self_loops(
                    edge_index, num_nodes=batch.num_nodes)
            optimizer.zero_grad()
            with precision.autocast():
                out = net(x, edge_index, blocks=blocks)[:seeds]
            loss = F.cross_entropy(out.float(), y)
            precision.step(loss, optimizer)
            tally.add(out.detach().float(), y, loss.item() * y.numel())
        return reduce_tallies(tally)[0][1]

    return train_epoch


