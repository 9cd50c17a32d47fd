"""MultiHeadAttentionConv is a drop-in for PyG's TransformerConv."""
import pytest
import torch
from torch_geometric.nn import TransformerConv

from tgnn_transformers import MultiHeadAttentionConv

CASES = {
    "plain": dict(heads=2),
    "edge_dim": dict(heads=3, edge_dim=5),
    "beta": dict(heads=2, beta=True),
    "concat_false": dict(heads=4, concat=False),
    "concat_false_beta_edge": dict(heads=2, concat=False, beta=True,
                                   edge_dim=2),
    "no_root": dict(heads=2, root_weight=False),
    "no_bias": dict(heads=2, bias=False, edge_dim=3),
}


def random_graph(num_src=12, num_dst=12, num_edges=50, seed=0):
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.stack([
        torch.randint(0, num_src, (num_edges, ), generator=gen),
        torch.randint(0, num_dst, (num_edges, ), generator=gen),
    ])
    return edge_index


def run(conv, x, edge_index, edge_attr):
    out, (ei, alpha) = conv(x, edge_index, edge_attr,
                            return_attention_weights=True)
    return out, ei, alpha


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("bipartite", [False, True])
def test_same_state_dict_same_outputs_weights_and_gradients(name, bipartite):
    kwargs = CASES[name]
    in_channels = (6, 9) if bipartite else 6
    ref = TransformerConv(in_channels, 8, **kwargs)
    conv = MultiHeadAttentionConv(in_channels, 8, **kwargs)
    conv.load_state_dict(ref.state_dict(), strict=True)

    num_dst = 7 if bipartite else 12
    edge_index = random_graph(12, num_dst)
    edge_attr = (torch.randn(edge_index.size(1), kwargs["edge_dim"])
                 if "edge_dim" in kwargs else None)
    if bipartite:
        x_ref = (torch.randn(12, 6, requires_grad=True),
                 torch.randn(num_dst, 9, requires_grad=True))
        x = tuple(t.detach().clone().requires_grad_() for t in x_ref)
        leaves_ref, leaves = list(x_ref), list(x)
    else:
        x_ref = torch.randn(12, 6, requires_grad=True)
        x = x_ref.detach().clone().requires_grad_()
        leaves_ref, leaves = [x_ref], [x]

    out_ref, ei_ref, alpha_ref = run(ref, x_ref, edge_index, edge_attr)
    out, ei, alpha = run(conv, x, edge_index, edge_attr)
    torch.testing.assert_close(out, out_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(alpha, alpha_ref, atol=1e-6, rtol=1e-5)
    assert torch.equal(ei, ei_ref)

    grad = torch.randn_like(out)
    (out_ref * grad).sum().backward()
    (out * grad).sum().backward()
    for a, b in zip(leaves, leaves_ref):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)
    ref_grads = {k: p.grad for k, p in ref.named_parameters()
                 if p.grad is not None}
    for k, p in conv.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[k], atol=1e-5,
                                   rtol=1e-5)


def test_attention_weights_only_when_asked():
    conv = MultiHeadAttentionConv(4, 4, heads=2)
    x, edge_index = torch.randn(5, 4), random_graph(5, 5, 10)
    assert isinstance(conv(x, edge_index), torch.Tensor)
    assert isinstance(conv(x, edge_index, return_attention_weights=False),
                      torch.Tensor)
    out, (ei, alpha) = conv(x, edge_index, return_attention_weights=True)
    assert alpha.shape == (10, 2)


def test_lazy_in_channels():
    conv = MultiHeadAttentionConv(-1, 4, heads=2)
    out = conv(torch.randn(5, 7), random_graph(5, 5, 10))
    assert out.shape == (5, 8)
    assert conv.lin_query.in_channels == 7


def test_out_proj_is_standard_transformer_form():
    conv = MultiHeadAttentionConv(8, 4, heads=2, out_proj=True,
                                  root_weight=False)
    assert conv.out_proj.weight.shape == (8, 8)
    assert "lin_skip.weight" not in conv.state_dict()
    assert "out_proj=True" in repr(conv)


def test_isolated_nodes_get_finite_output_equal_to_root():
    conv = MultiHeadAttentionConv(4, 3, heads=2).eval()
    x = torch.randn(6, 4)
    edge_index = torch.tensor([[0, 1], [1, 0]])
    out = conv(x, edge_index)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[2:], conv.lin_skip(x[2:]))


def test_reset_parameters_changes_weights():
    conv = MultiHeadAttentionConv(4, 3, heads=2, beta=True, out_proj=True)
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    conv.reset_parameters()
    changed = [k for k, v in conv.state_dict().items()
               if k.endswith("weight") and not torch.equal(v, before[k])]
    assert len(changed) >= 5
