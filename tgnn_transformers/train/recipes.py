"""Training recipes of the node, graph and link tasks: data preparation,
the model from the registry, one epoch of training and the evaluation."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.utils import add_remaining_self_loops, negative_sampling

from ..functional import select_rows, to_sparse_csr
from ..models import build_model, get_model
from ..nn import average_log_degree, degree_histogram
from . import distributed
from .config import model_options
from .device import run_setup
from .distributed import ShardSampler
from .loop import Recipe
from .sampling import neighbor_loader, sampled_blocks


def _delta(edge_indices, num_nodes) -> float:
    return average_log_degree(degree_histogram(edge_indices, num_nodes))


def _optimizer(model, config):
    return torch.optim.Adam(model.parameters(), lr=config["lr"],
                            weight_decay=config["weight_decay"])


class Tally:
    """Summed loss, correct predictions and count of one split on this
    rank; :func:`reduce_tallies` sums them over all ranks."""

    def __init__(self):
        self.loss, self.correct, self.count = 0.0, 0, 0

    def add(self, logits: torch.Tensor, y: torch.Tensor,
            loss_sum: Optional[float] = None) -> None:
        if loss_sum is None:
            loss_sum = float(F.cross_entropy(logits, y, reduction="sum"))
        self.loss += loss_sum
        self.correct += int((logits.argmax(-1) == y).sum())
        self.count += y.numel()


def reduce_tallies(*tallies: Tally) -> List[Tuple[float, float]]:
    """``(accuracy, mean loss)`` of each tally over all ranks (one
    all-reduce); NaN for a split without items."""
    sums = distributed.sum_across_ranks(*(v for t in tallies for v in (
        t.loss, t.correct, t.count)))
    results = []
    for loss, correct, count in zip(sums[0::3], sums[1::3], sums[2::3]):
        if count == 0:
            results.append((float("nan"), float("nan")))
        else:
            results.append((correct / count, loss / count))
    return results


# --------------------------------------------------------------------------
# Node classification
# --------------------------------------------------------------------------

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
    model = build_model("node", config["model"], data.num_features,
                        num_classes,
                        **model_options(config, delta=delta)).to(device)
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
        for batch in loader:
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


# --------------------------------------------------------------------------
# Graph classification
# --------------------------------------------------------------------------

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
    graphs = _with_features(dataset)
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
    model = build_model("graph", config["model"], graphs[0].num_features,
                        int(labels.max()) + 1,
                        **model_options(config, delta=delta,
                                        edge_dim=edge_dim)).to(device)

    def forward(module, batch):
        with precision.autocast():
            out = module(batch.x, batch.edge_index, batch.edge_attr,
                         batch.batch)
        return out.float(), batch.y

    return minibatch_recipe(model, _optimizer(model, config), precision,
                            loaders, forward)


# --------------------------------------------------------------------------
# Link prediction
# --------------------------------------------------------------------------

def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve by the rank statistic (ties averaged)."""
    scores, labels = scores.double(), labels.bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.double)
    # average ranks over ties
    uniq, inverse = torch.unique(scores, return_inverse=True)
    sums = torch.zeros(uniq.numel(), dtype=torch.double).index_add_(
        0, inverse, ranks)
    counts = torch.bincount(inverse, minlength=uniq.numel()).double()
    ranks = (sums / counts)[inverse]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) /
                 (n_pos * n_neg))


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
    model = build_model("link", config["model"], data.num_features,
                        **model_options(config, delta=delta)).to(device)
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


# --------------------------------------------------------------------------
# Text classification
# --------------------------------------------------------------------------

def _no_decay(name: str, param: torch.nn.Parameter) -> bool:
    return param.dim() < 2 or "embedding" in name or "norm" in name


def text_optimizer(model: torch.nn.Module, config: Dict[str, Any]):
    """Adam with L2 decay on everything, or AdamW with decoupled decay on
    the weight matrices only (not biases, norms, embeddings, scalars)."""
    if config["optimizer"] == "adam":
        return _optimizer(model, config)
    decay, rest = [], []
    for name, param in model.named_parameters():
        (rest if _no_decay(name, param) else decay).append(param)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config["weight_decay"]},
         {"params": rest, "weight_decay": 0.0}], lr=config["lr"])


def lr_factor(step: int, total: int, warmup: float, schedule: str) -> float:
    """The learning-rate multiplier at optimizer step ``step`` (0-based) of
    ``total``: linear warm-up over ``warmup * total`` steps, then constant,
    linear decay to 0 or cosine decay to 0."""
    warm = int(round(warmup * total))
    if step < warm:
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warm) / max(1, total - warm))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + float(np.cos(np.pi * progress)))


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
    from ..data import SentenceGraphDataset, Vocabulary
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
    model = build_model("text", config["model"], len(vocab),
                        splits.num_classes,
                        **model_options(config, delta=delta)).to(device)

    def forward(module, batch):
        # (sentence batches are collated on the CPU, then moved)
        batch = batch.to(device, non_blocking=True)
        with precision.autocast():
            out = module(batch.x, batch.edge_index, batch.batch,
                        batch.position, batch.virtual)
        return out.float(), batch.y

    return _text_minibatch_recipe(model, config, precision, loaders,
                                  forward)


def scheduled_optimizer(model: torch.nn.Module, config: Dict[str, Any],
                        steps_per_epoch: int):
    """The text tasks' ``(optimizer, scheduler)``: AdamW or Adam, linear
    warm-up then constant/linear/cosine decay per step."""
    optimizer = text_optimizer(model, config)
    total = config["epochs"] * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, config["warmup"],
                                          config["schedule"]))
    return optimizer, scheduler


def shard_loader(dataset, batch_size: int, train: bool = False):
    """A PyG ``DataLoader`` over this rank's shard of ``dataset``: for
    training shuffled anew every pass by the global RNG (which checkpoints
    save and restore, so a resumed run sees the batches an uninterrupted
    one sees), for evaluation in order (see
    :class:`~tgnn_transformers.train.distributed.ShardSampler`)."""
    return DataLoader(dataset, batch_size=batch_size,
                      sampler=ShardSampler(len(dataset), shuffle=train))


def minibatch_recipe(model: torch.nn.Module, optimizer, precision,
                     loaders: Dict[str, Any], forward, *, scheduler=None,
                     label_smoothing: float = 0.0,
                     clip_grad: float = 0.0) -> Recipe:
    """Classification over mini-batches (graph, text and finetune tasks):
    ``loaders`` maps ``train``/``val``/``test`` to re-iterable batch
    sources of this rank's shard, ``forward(module, batch) -> (logits,
    labels)``; training runs through the data-parallel wrapper, evaluation
    through ``model`` itself, and the counts are summed over the ranks.
    The scheduler is stepped per batch.  Training accuracy is counted
    during the epoch (in training mode) rather than by a second pass over
    the training data, which cost a quarter of the run time on PROTEINS."""
    train_accuracy = float("nan")
    trainable = [p for p in model.parameters() if p.requires_grad]
    net = distributed.wrap(model)

    def train_epoch() -> float:
        nonlocal train_accuracy
        net.train()
        tally = Tally()
        for batch in loaders["train"]:
            optimizer.zero_grad()
            out, y = forward(net, batch)
            loss = F.cross_entropy(out, y, label_smoothing=label_smoothing)
            precision.step(loss, optimizer, clip_grad=clip_grad,
                           parameters=trainable)
            if scheduler is not None:
                scheduler.step()
            tally.add(out.detach(), y, loss.item() * y.numel())
        train_accuracy, loss = reduce_tallies(tally)[0]
        return loss

    @torch.no_grad()
    def evaluate() -> Dict[str, float]:
        model.eval()
        tallies = []
        for name in ("val", "test"):
            tally = Tally()
            for batch in loaders[name]:
                tally.add(*forward(model, batch))
            tallies.append(tally)
        (val, val_loss), (test, _) = reduce_tallies(*tallies)
        return {"val_loss": val_loss, "train": train_accuracy, "val": val,
                "test": test}

    return Recipe(model, optimizer, train_epoch, evaluate,
                  scheduler=scheduler)


def _text_minibatch_recipe(model, config, precision, loaders, forward):
    optimizer, scheduler = scheduled_optimizer(model, config,
                                               len(loaders["train"]))
    return minibatch_recipe(model, optimizer, precision, loaders, forward,
                            scheduler=scheduler,
                            label_smoothing=config["label_smoothing"],
                            clip_grad=config["clip_grad"])


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
    model = build_model("finetune", config["model"], None,
                        splits.num_classes,
                        **model_options(config)).to(device)
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
