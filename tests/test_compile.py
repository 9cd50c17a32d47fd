"""torch.compile works on the layers (the sparse kernel itself runs eagerly
inside the compiled graph)."""
import pytest
import torch
from torch_geometric.data import Batch, Data

from tgnn_transformers import (GINAttentionConv, MultiHeadAttentionConv,
                               PNAAttentionConv)
from tgnn_transformers.transforms import SequenceToGraph


def test_compiled_conv_matches_eager():
    torch._dynamo.reset()
    conv = MultiHeadAttentionConv(16, 4, heads=2, edge_dim=2, beta=True)
    x = torch.randn(20, 16, requires_grad=True)
    edge_index = torch.randint(0, 20, (2, 60))
    edge_attr = torch.randn(60, 2)
    compiled = torch.compile(conv)
    out = compiled(x, edge_index, edge_attr)
    ref = conv(x, edge_index, edge_attr)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g_out = torch.autograd.grad(out.sum(), x)[0]
    g_ref = torch.autograd.grad(ref.sum(), x)[0]
    torch.testing.assert_close(g_out, g_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: GINAttentionConv(16, 4, heads=2, edge_dim=2),
    lambda: GINAttentionConv(16, 4, heads=2, top_k=2, root_weight=False,
                             out_proj=True),
    lambda: PNAAttentionConv(16, 4, heads=2, edge_dim=2, delta=1.2),
    lambda: PNAAttentionConv(16, 4, heads=2, delta=1.2, mixer="mlp",
                             aggregators=["sum", "max", "std"]),
], ids=["gin", "gin-top-k", "pna", "pna-mlp"])
def test_compiled_graph_aware_convs_match_eager(make):
    torch._dynamo.reset()
    conv = make()
    x = torch.randn(20, 16, requires_grad=True)
    edge_index = torch.randint(0, 20, (2, 60))
    edge_attr = torch.randn(60, 2) if conv.edge_dim else None
    compiled = torch.compile(conv)
    out = compiled(x, edge_index, edge_attr)
    ref = conv(x, edge_index, edge_attr)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g_out = torch.autograd.grad(out.pow(2).sum(), x)[0]
    g_ref = torch.autograd.grad(ref.pow(2).sum(), x)[0]
    torch.testing.assert_close(g_out, g_ref, atol=1e-5, rtol=1e-5)


# fullgraph=True cannot work, not even with backend="dense" on complete
# token graphs: before it may use scaled_dot_product_attention the kernel
# must read edge_index's values to recognise the token-graph pattern
# (functional.patterns.recognize_sequence_pattern compares the edges with
# the canonical complete graph of each sequence length), and a branch on
# tensor values is a graph break under Dynamo.  On other graphs the sparse
# kernel is a deliberate graph break (torch.compiler.disable around the CSR
# index building and sparse products).  So the dense path is compiled with
# graph breaks and checked against eager here.
@pytest.mark.parametrize("cls", [MultiHeadAttentionConv, GINAttentionConv])
def test_compiled_dense_backend_on_token_graphs(cls):
    torch._dynamo.reset()
    t = SequenceToGraph("full")
    batch = Batch.from_data_list([t(Data(x=torch.randn(n, 16)))
                                  for n in (5, 5, 5)])
    conv = cls(16, 4, heads=2, backend="dense", root_weight=False,
               out_proj=True)
    x = batch.x.clone().requires_grad_()
    compiled = torch.compile(conv)
    out = compiled(x, batch.edge_index, batch=batch.batch)
    ref = conv(x, batch.edge_index, batch=batch.batch)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g_out = torch.autograd.grad(out.sum(), x)[0]
    g_ref = torch.autograd.grad(ref.sum(), x)[0]
    # GIN's per-head LayerNorm backward is fused by inductor: float32
    # round-off of a few 1e-5.
    torch.testing.assert_close(g_out, g_ref, atol=1e-4, rtol=1e-4)
