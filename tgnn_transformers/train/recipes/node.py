"""Node classification: full-batch or on neighbour-sampled mini-batches,
on Planetoid, LINKX, heterophilous and OGB graphs, over the data set's
splits and the seeds."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from torch_geometric.utils import add_remaining_self_loops

from ...data import get_source, load_dataset, positional_encodings
from ...functional import select_rows, to_sparse_csr
from ...models import build_model, get_model
from ...transforms import graph_positional_encoding
from .. import distributed
from ..config import model_options
from ..device import run_setup
from ..distributed import ShardSampler
from ..loop import Recipe, track
from ..sampling import neighbor_loader, sampled_blocks
from .common import Tally, _delta, _optimizer, reduce_tallies, roc_auc

log = logging.getLogger("tgnn_transformers.train")


class NodeDataset(NamedTuple):
    """What :func:`load` gives :func:`build`: the graph (with its split
    masks), its number of classes, and its positional encoding (``None``
    without ``pe``)."""
    data: Data
    num_classes: int
    pe: Optional[torch.Tensor] = None


def runs(config: Mapping[str, Any]) -> List[Dict[str, int]]:
    """One run per split of the data set (``splits``) and seed: a data set
    with one split (Planetoid, OGB) runs once per seed (``{"seed": s}``),
    one with several (the heterophilous graphs' 10 fixed splits, the LINKX
    graphs' random ones) once per split and seed (``{"split": k, "seed":
    s}``).  Seeds fix the model's initialisation and training; splits fix
    the nodes it trains, selects and is tested on."""
    seeds = config["seeds"]
    if get_source(config["dataset"]).splits == 1:
        return [{"seed": seed} for seed in seeds]
    return [{"split": split, "seed": seed} for split in config["splits"]
            for seed in seeds]


def load(config: Mapping[str, Any], root=None, mirror=None) -> NodeDataset:
    """The data set's graph (an OGB graph with its split as masks and its
    edges made undirected), and with ``pe`` its encoding, cached in the
    data root."""
    loaded = load_dataset(config["dataset"], root=root, mirror=mirror)
    if config["dataset"].startswith("ogbn-"):
        dataset, split, _ = loaded
        data = _ogb_graph(dataset[0], split)
    else:
        dataset, data = loaded, loaded[0]
    pe = None
    if config.get("pe") is not None:
        pe = positional_encodings(config["dataset"], [data], config["pe"],
                                  config["pe_dim"], root)[0]
    return NodeDataset(data, dataset.num_classes, pe)


def build(dataset: NodeDataset, config: Mapping[str, Any],
          run: Dict[str, int]) -> Recipe:
    return node_recipe(dataset.data, dataset.num_classes, config,
                       split=run.get("split", 0), pe=dataset.pe)


def check_config(config: Dict[str, Any], explicit: Dict[str, str]) -> None:
    """``splits``: indices of the data set's splits (all of them when not
    given; any index of random ones).  Mini-batches: ``num_neighbors`` has
    one value or one per layer, none of them 0; ``batch_size`` without it
    is an error rather than silently ignored (full-batch runs record
    ``batch_size: null``).  ``explicit`` maps the options set explicitly to
    where they were set."""
    source = get_source(config["dataset"])
    splits = config.get("splits")
    if splits is None:
        config["splits"] = list(range(source.splits))
    elif not source.random_splits and max(splits) >= source.splits:
        available = "0" if source.splits == 1 else \
            f"0-{source.splits - 1}"
        raise ValueError(f"splits: dataset {config['dataset']!r} has "
                         f"{source.splits} split(s), {available}; got "
                         f"{list(splits)}")
    elif len(set(splits)) != len(splits):
        raise ValueError(f"splits: each split once, got {list(splits)}")
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


def _ogb_graph(data: Data, split: Dict[str, torch.Tensor]) -> Data:
    """An OGB graph with its split as masks and undirected edges."""
    n = data.num_nodes
    for name, key in (("train_mask", "train"), ("val_mask", "valid"),
                      ("test_mask", "test")):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[split[key]] = True
        data[name] = mask
    from torch_geometric.utils import to_undirected
    data.edge_index = to_undirected(data.edge_index, num_nodes=n)
    return data


def prepare_node_data(data: Data, config: Dict[str, Any]) -> Data:
    """Normalised features, self-loops, flat labels and (where it pays)
    sparse features, as ``config`` asks (never sparse when a positional
    encoding is added to them, ``pe_mode: add``: the sum is dense)."""
    data = data.clone()
    if config["self_loops"]:
        _add_self_loops(data)
    if config["normalize_features"]:
        # Row-normalised bag-of-words features, as in the GAT/GCN papers.
        data.x = data.x / data.x.sum(dim=1, keepdim=True).clamp(min=1e-12)
    data.y = data.y.view(-1)
    adds_encoding = config.get("pe") is not None and \
        config.get("pe_mode") == "add"
    if config["sparse_features"] and not adds_encoding:
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


def binary_scores(logits: torch.Tensor) -> torch.Tensor:
    """The score of the positive class of two-class logits, ``z_1 - z_0``
    (the logit of its softmax probability; ranks as that probability)."""
    return logits[:, 1] - logits[:, 0]


def node_recipe(data: Data, num_classes: int, config: Dict[str, Any],
                split: int = 0, pe: Optional[torch.Tensor] = None) -> Recipe:
    """Node classification, full-batch or (with ``num_neighbors``) on
    neighbour-sampled mini-batches of ``batch_size`` seed nodes, on split
    ``split`` of the data set (see :func:`node_splits`), scored by the data
    set's metric (accuracy, or ROC-AUC for the binary heterophilous
    graphs).  With ``pe`` in ``config`` the model takes the positional
    encoding ``pe`` (``[N, pe_dim]``; computed here, uncached, when not
    given).  Under ``torchrun`` each rank trains on its shard of the
    training nodes; evaluation runs the whole graph (full neighbourhoods)
    and sums the accuracy of each rank's shard of the evaluated nodes
    (ROC-AUC, a ranking of all of them, is computed on every rank from the
    whole graph's logits)."""
    minibatch = config.get("num_neighbors") is not None
    metric = get_source(config["dataset"]).metric
    if metric == "roc_auc" and num_classes != 2:
        raise ValueError(f"dataset {config['dataset']!r} is scored by "
                         f"ROC-AUC, which needs 2 classes, got {num_classes}")
    if config.get("pe") is not None and pe is None:
        log.info("computing the %s encoding of %s (uncached)", config["pe"],
                 config["dataset"])
        pe = graph_positional_encoding(data.edge_index, data.num_nodes,
                                       config["pe"], config["pe_dim"])
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
    full_pe = None if pe is None else pe.to(device)
    # Each rank evaluates (and, full-batch, trains on) its shard of nodes.
    whole = [mask.nonzero().view(-1) for mask in masks]
    shards = [idx[ShardSampler(idx.numel(), shuffle=False).indices()]
              .to(device) for idx in whole]
    whole = [idx.to(device) for idx in whole]

    if minibatch:
        train_epoch = _sampled_node_epoch(net, optimizer, precision, data,
                                          masks[0], config, device, pe)
    else:
        def train_epoch() -> float:
            net.train()
            optimizer.zero_grad()
            with precision.autocast():
                out = net(full.x, full.edge_index, pe=full_pe)
            loss = F.cross_entropy(out[shards[0]].float(),
                                   full.y[shards[0]])
            precision.step(loss, optimizer)
            return loss.item()

    @torch.no_grad()
    def evaluate() -> Dict[str, float]:
        model.eval()
        with precision.autocast():
            out = model(full.x, full.edge_index, pe=full_pe)
        out = out.float()
        tallies = []
        for idx in shards:
            tally = Tally()
            tally.add(out[idx], full.y[idx])
            tallies.append(tally)
        (train, _), (val, val_loss), (test, _) = reduce_tallies(*tallies)
        if metric == "roc_auc":
            scores = binary_scores(out)
            train, val, test = (roc_auc(scores[idx], full.y[idx])
                                for idx in whole)
        return {"val_loss": val_loss, "train": train, "val": val,
                "test": test}

    return Recipe(model, optimizer, train_epoch, evaluate, metric=metric)


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
                        device: torch.device,
                        pe: Optional[torch.Tensor] = None):
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
            batch_pe = None if pe is None else pe[batch.n_id].to(device)
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
                out = net(x, edge_index, blocks=blocks,
                          pe=batch_pe)[:seeds]
            loss = F.cross_entropy(out.float(), y)
            precision.step(loss, optimizer)
            tally.add(out.detach().float(), y, loss.item() * y.numel())
        return reduce_tallies(tally)[0][1]

    return train_epoch


