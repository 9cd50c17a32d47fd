"""Neighbour-sampled mini-batches for the node task: PyG's
``NeighborLoader`` does the sampling; :func:`sampled_blocks` cuts its
subgraph into one bipartite block per layer, so that layer ``l`` of ``L``
computes only the nodes within ``L - 1 - l`` hops of the seeds (the last
layer only the seeds), as in GraphSAGE's and DGL's block formulation.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import add_remaining_self_loops

#: One layer's block: its edges (targets ``< num_targets``) and
#: ``num_targets``, the number of leading nodes it computes.
Block = Tuple[Tensor, int]


def neighbor_loader(data: Data, num_neighbors: Sequence[int],
                    input_nodes: Tensor, batch_size: int, sampler=None):
    """PyG's ``NeighborLoader`` over ``input_nodes`` with the batch order
    of ``sampler`` (default: this rank's shard, reshuffled every pass; see
    :class:`~tgnn_transformers.train.distributed.ShardSampler`)."""
    from torch_geometric.loader import NeighborLoader
    from .distributed import ShardSampler
    if sampler is None:
        sampler = ShardSampler(input_nodes.numel(), shuffle=True)
    with warnings.catch_warnings():
        # Without pyg-lib (no PyPI wheels) PyG samples with torch-sparse,
        # the engine of the `scatter` extra, and says so on every loader.
        warnings.filterwarnings("ignore", message=".*without a 'pyg-lib'")
        return NeighborLoader(data, num_neighbors=list(num_neighbors),
                              input_nodes=input_nodes,
                              batch_size=batch_size, sampler=sampler)


def hop_distances(edge_index: Tensor, num_nodes: int, num_seeds: int,
                  num_hops: int) -> Tensor:
    """Each node's distance in messages from the first ``num_seeds`` nodes
    (messages flow ``edge_index[0] -> edge_index[1]``), ``num_hops + 1``
    beyond ``num_hops``."""
    far = num_hops + 1
    dist = torch.full((num_nodes, ), far, dtype=torch.long,
                      device=edge_index.device)
    dist[:num_seeds] = 0
    src, dst = edge_index
    for hop in range(num_hops):
        into = dist[dst] == hop
        dist.scatter_reduce_(0, src[into], torch.full_like(src[into],
                                                           hop + 1), "amin")
    return dist


def sampled_blocks(edge_index: Tensor, num_nodes: int, num_seeds: int,
                   num_layers: int, self_loops: bool = True
                   ) -> Optional[List[Block]]:
    """The blocks of a sampled subgraph whose first ``num_seeds`` nodes are
    the seeds, one per layer: layer ``l`` takes the edges into the nodes
    within ``num_layers - 1 - l`` hops (with their self-loops when
    ``self_loops``), whose sources lie within one more hop.  ``None`` when
    the nodes are not ordered by hop (the samplers PyG ships order them so);
    then run the whole subgraph."""
    dist = hop_distances(edge_index, num_nodes, num_seeds, num_layers)
    if num_nodes > 1 and bool((dist[1:] < dist[:-1]).any()):
        return None
    within = torch.bincount(dist, minlength=num_layers + 2).cumsum(0)
    blocks = []
    for layer in range(num_layers):
        targets = int(within[num_layers - 1 - layer])
        edges = edge_index[:, edge_index[1] < targets]
        if self_loops:
            edges, _ = add_remaining_self_loops(edges, num_nodes=targets)
        blocks.append((edges, targets))
    return blocks
