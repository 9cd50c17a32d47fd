"""The GPS layer: equal to PyG's ``GPSConv`` given the same parts (eval and
training, outputs and gradients), with any attention conv of the package
over complete, local or given attention graphs; the ``gps`` registry
model with every local conv."""
import copy

import pytest
import torch
from torch_geometric.nn import GATConv, GCNConv, GINConv
from torch_geometric.nn import GPSConv as PyGGPSConv
from torch_geometric.nn import MLP

from tgnn_transformers.functional import complete_edge_index
from tgnn_transformers.models import MODELS, OPTIONS, build_model
from tgnn_transformers.nn import (GINAttentionConv, GPSConv,
                                  MultiHeadAttentionConv)


def graphs(channels=16, seed=0):
    """Three graphs of 5, 3 and 6 nodes: features, edges, batch."""
    gen = torch.Generator().manual_seed(seed)
    sizes = [5, 3, 6]
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    edges, start = [], 0
    for n in sizes:
        src = torch.randint(0, n, (2 * n, ), generator=gen) + start
        dst = torch.randint(0, n, (2 * n, ), generator=gen) + start
        edges.append(torch.stack([src, dst]))
        start += n
    x = torch.randn(batch.numel(), channels, generator=gen)
    return x, torch.cat(edges, 1), batch


LOCAL_CONVS = {
    "gin": lambda c: GINConv(MLP([c, c, c], norm=None)),
    "gcn": lambda c: GCNConv(c, c),
    "gat": lambda c: GATConv(c, c // 4, heads=4),
    None: lambda c: None,
}


@pytest.mark.parametrize("local", list(LOCAL_CONVS))
@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_equals_pyg_gps_conv_in_eval(local, act):
    torch.manual_seed(1)
    theirs = PyGGPSConv(16, LOCAL_CONVS[local](16), heads=4, dropout=0.3,
                        act=act).eval()
    # Trained batch-norm statistics, not the initial ones.
    for norm in (theirs.norm1, theirs.norm2, theirs.norm3):
        if norm is not None:
            norm.module.running_mean.uniform_(-1, 1)
            norm.module.running_var.uniform_(0.5, 2)
    ours = GPSConv.from_pyg(theirs)
    assert not ours.training
    x, edge_index, batch = graphs()
    expected = theirs(x, edge_index, batch)
    torch.testing.assert_close(ours(x, edge_index, batch), expected,
                               atol=1e-5, rtol=1e-5)


def test_equals_pyg_gps_conv_in_training_outputs_and_gradients():
    """Training mode: batch statistics and feature dropout (drawn in the
    same order from the same generator), gradients of input and weights."""
    torch.manual_seed(2)
    theirs = PyGGPSConv(16, GINConv(MLP([16, 16, 16])), heads=2,
                        dropout=0.25).train()
    ours = GPSConv.from_pyg(theirs)
    assert ours.training
    x, edge_index, batch = graphs(seed=3)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(7)
    expected = theirs(x1, edge_index, batch)
    torch.manual_seed(7)
    got = ours(x2, edge_index, batch)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    weight = torch.randn_like(got)
    (expected * weight).sum().backward()
    (got * weight).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.ffn.lin1.weight.grad,
                               theirs.mlp[0].weight.grad, atol=1e-5,
                               rtol=1e-5)
    w_q = theirs.attn.in_proj_weight.grad.chunk(3)[0]
    torch.testing.assert_close(ours.attention.lin_query.weight.grad, w_q,
                               atol=1e-5, rtol=1e-5)
    # The running statistics moved alike.
    torch.testing.assert_close(ours.norm3.module.running_mean,
                               theirs.norm3.module.running_mean)


def test_from_pyg_refuses_what_it_does_not_reproduce():
    with pytest.raises(TypeError, match="GPSConv"):
        GPSConv.from_pyg(torch.nn.Linear(2, 2))
    layer = PyGGPSConv(8, None, heads=2, norm="layer_norm")
    with pytest.raises(ValueError, match="batch_norm"):
        GPSConv.from_pyg(layer)


def _reference(layer, x, edge_index, attention_edges, **kwargs):
    """The GPS formulas with the layer's own parts, called one by one."""
    def norm(module, h):
        return h if module is None else module(h)

    branches = []
    if layer.conv is not None:
        branches.append(norm(layer.norm1, layer.conv(x, edge_index) + x))
    branches.append(norm(layer.norm2, layer.attention(x, attention_edges,
                                                      **kwargs) + x))
    h = sum(branches)
    return norm(layer.norm3, h + layer.ffn(h))


@pytest.mark.parametrize("attention", ["mha", "gin-attention",
                                       "pna-attention"])
def test_any_attention_conv_over_complete_graphs(attention):
    kwargs = {"deg": torch.tensor([0, 2, 3, 1])} \
        if attention == "pna-attention" else {}
    layer = GPSConv(16, GCNConv(16, 16), heads=4, norm="layer",
                    attention=attention, attention_kwargs=kwargs).eval()
    x, edge_index, batch = graphs()
    complete = complete_edge_index(torch.bincount(batch))
    expected = _reference(layer, x, edge_index, complete, batch=batch)
    torch.testing.assert_close(layer(x, edge_index, batch), expected)
    # The graphs of a batch never meet: changing one leaves the others.
    changed = x.clone()
    changed[batch == 1] += 1.0
    out, out2 = layer(x, edge_index, batch), layer(changed, edge_index,
                                                    batch)
    keep = batch != 1
    torch.testing.assert_close(out[keep], out2[keep])
    assert not torch.allclose(out[~keep], out2[~keep])


def test_local_and_given_attention_graphs():
    attention = GINAttentionConv(16, 4, heads=4, root_weight=False,
                                 out_proj=True)
    layer = GPSConv(16, None, norm=None, attention=attention,
                    attention_graph="local").eval()
    x, edge_index, batch = graphs()
    torch.testing.assert_close(layer(x, edge_index, batch),
                               _reference(layer, x, edge_index, edge_index,
                                          batch=batch))
    ring = torch.stack([torch.arange(14), torch.arange(14).roll(1)])
    torch.testing.assert_close(
        layer(x, edge_index, batch, attention_edge_index=ring),
        _reference(layer, x, edge_index, ring, batch=batch))


def test_complete_graph_is_kept_for_the_same_batch():
    layer = GPSConv(8, None, heads=2).eval()
    x, edge_index, batch = graphs(8)
    first = layer.complete_graph(x.size(0), batch, x.device)
    assert layer.complete_graph(x.size(0), batch, x.device) is first
    single = layer.complete_graph(x.size(0), None, x.device)
    assert single.size(1) == x.size(0) ** 2
    assert layer.complete_graph(x.size(0), None, x.device) is single
    with pytest.raises(ValueError, match="batch must be sorted"):
        layer(x, edge_index, batch.flip(0))


def test_bad_arguments_name_what_is_wrong():
    with pytest.raises(ValueError, match="heads=3 must divide channels=8"):
        GPSConv(8, None, heads=3)
    with pytest.raises(ValueError, match="attention_graph"):
        GPSConv(8, None, attention_graph="full")
    with pytest.raises(ValueError, match="attention"):
        GPSConv(8, None, attention="transformer")
    with pytest.raises(ValueError, match="attention_kwargs"):
        GPSConv(8, None, attention=MultiHeadAttentionConv(8, 8),
                attention_kwargs={"heads": 2})


def test_reset_parameters_and_repr():
    layer = GPSConv(8, GCNConv(8, 8), heads=2)
    before = copy.deepcopy(layer.state_dict())
    layer.reset_parameters()
    changed = [k for k in before if not torch.equal(before[k],
                                                    layer.state_dict()[k])]
    assert any(k.startswith("attention.") for k in changed)
    assert any(k.startswith("ffn.") for k in changed)
    assert repr(layer) == ("GPSConv(8, conv=GCNConv(8, 8), heads=2, "
                           "attention=MultiHeadAttentionConv, "
                           "attention_graph='complete')")


@pytest.mark.parametrize("local", OPTIONS["local"].choices)
def test_gps_model_with_every_local_conv(local):
    x, edge_index, batch = graphs(5)
    edge_index = torch.cat([edge_index, torch.arange(14).repeat(2, 1)], 1)
    options = dict(hidden=8, heads=2, num_layers=2, local=local)
    if local == "pna-attention":
        options["delta"] = 1.0
    for task, shape in (("node", (14, 3)), ("graph", (3, 3))):
        net = build_model(task, "gps", 5, 3, **options)
        out = net(x, edge_index, None, batch)
        assert out.shape == shape and torch.isfinite(out).all()
        out.sum().backward()
        assert all(p.grad is not None for p in net.parameters()
                   if p.requires_grad)


def test_gps_local_choices_are_the_conv_models():
    convs = [n for n, s in MODELS.items()
             if s.encoder == "conv" and "node" in s.tasks]
    assert OPTIONS["local"].choices == tuple(convs) + (None, )


def test_gps_model_takes_its_convs_variant_options():
    net = build_model("node", "gps", 5, 3, hidden=8, heads=2, num_layers=1,
                      local="gin-attention", attention="pna-attention",
                      mlp_multiplier=2.0, aggregators=["max"], delta=1.0)
    layer = net.encoder.layers[0]
    assert layer.conv.mlp_multiplier == 2.0
    assert layer.attention.aggregators == ("max", )
    with pytest.raises(ValueError, match="'mlp_multiplier'"):
        build_model("node", "gps", 5, 3, local="gcn", mlp_multiplier=2.0)
