"""torch.compile works on the layers (the sparse kernel itself runs eagerly
inside the compiled graph)."""
import torch

from tgnn_transformers import MultiHeadAttentionConv


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
