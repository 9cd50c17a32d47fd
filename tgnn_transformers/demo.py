"""A transformer is a GNN: a short demonstration.

Runs ``torch.nn.MultiheadAttention`` on a ragged batch of sentences and the
same weights as a :class:`MultiHeadAttentionConv` on their token graphs,
through both the sparse (edge) and the dense (fused SDPA) paths, and prints
the largest differences.  ``python -m tgnn_transformers.demo``
"""
from __future__ import annotations

import torch
from torch_geometric.data import Batch, Data

from .nn import MultiHeadAttentionConv
from .transforms import SequenceToGraph


def main() -> None:
    torch.manual_seed(0)
    embed_dim, heads, lengths = 64, 4, [5, 17, 64, 1, 33]
    mha = torch.nn.MultiheadAttention(embed_dim, heads,
                                      batch_first=True).eval()
    sentences = [torch.randn(n, embed_dim) for n in lengths]
    print(f"{len(lengths)} sequences of lengths {lengths}, d={embed_dim}, "
          f"{heads} heads")
    for pattern in ("full", "causal"):
        transform = SequenceToGraph(pattern)
        batch = Batch.from_data_list(
            [transform(Data(x=s)) for s in sentences])
        refs = []
        for s in sentences:
            mask = (torch.nn.Transformer.generate_square_subsequent_mask(
                s.size(0)) if pattern == "causal" else None)
            refs.append(mha(s[None], s[None], s[None], attn_mask=mask)[0][0])
        ref = torch.cat(refs)
        for backend in ("sparse", "dense"):
            conv = MultiHeadAttentionConv.from_torch(mha, backend=backend)
            out = conv(batch.x, batch.edge_index, batch=batch.batch)
            err = (out - ref).abs().max().item()
            print(f"  {pattern:6s} graph ({batch.num_edges:5d} edges), "
                  f"{backend:6s} path: max |conv - MultiheadAttention| = "
                  f"{err:.2e}")


if __name__ == "__main__":
    main()
