"""The recipe of Platonov et al. (ICLR 2023) as options of every conv
stack -- ``residual``, ``norm``, ``ffn_multiplier``, ``root_weight`` (their
"-sep") -- against the formulas written out with dense matrices; the
defaults leave today's models as they were; per-model defaults of one
option."""
import pytest
import torch
import torch.nn.functional as F

from tgnn_transformers.models import MODELS, build_model, get_model
from tgnn_transformers.nn import GraphTransformerLayer
from tgnn_transformers.train import resolve_config
from tgnn_transformers.train.sampling import hop_distances, sampled_blocks


def ring_graph(n=7, features=5, seed=0):
    """An undirected ring with chords, no self-loops."""
    gen = torch.Generator().manual_seed(seed)
    pairs = [(i, (i + 1) % n) for i in range(n)] + [(0, 3), (2, 5)]
    edges = torch.tensor(pairs).t()
    edge_index = torch.cat([edges, edges.flip(0)], 1)
    return torch.randn(n, features, generator=gen), edge_index


def dense_gcn(conv, x, edge_index):
    r"""PyG's GCN written out: :math:`\hat{D}^{-1/2} (A + I)
    \hat{D}^{-1/2} X W^\top + b`."""
    n = x.size(0)
    adj = torch.zeros(n, n)
    adj[edge_index[1], edge_index[0]] = 1.0
    adj += torch.eye(n)
    norm = adj.sum(1).rsqrt()
    return (norm[:, None] * adj * norm[None, :]) @ x @ conv.lin.weight.t() \
        + conv.bias


def test_residual_sep_stack_equals_the_formulas():
    x, edge_index = ring_graph()
    net = build_model("node", "gcn", 5, 3, hidden=8, num_layers=2,
                      residual=True, norm="layer", ffn_multiplier=1.5,
                      root_weight=True, dropout=0.3).eval()
    stack = net.encoder
    # Reference: h0 = GELU(W_in x); h += FFN(GCN(LN(h)) + W_root LN(h));
    # y = W_out LN(h).
    h = F.gelu(stack.input(x))
    for conv, norm, ffn in zip(stack.convs, stack.norms, stack.ffns):
        normed = F.layer_norm(h, (8, ), norm.weight, norm.bias)
        message = dense_gcn(conv.conv, normed, edge_index) + \
            normed @ conv.lin_root.weight.t()
        assert ffn.lin1.out_features == 12
        h = h + ffn.lin2(F.gelu(ffn.lin1(message)))
    final = stack.final_norm
    expected = stack.head(F.layer_norm(h, (8, ), final.weight, final.bias))
    torch.testing.assert_close(net(x, edge_index), expected)


def test_residual_stack_without_ffn_takes_gelu_of_the_conv():
    x, edge_index = ring_graph()
    net = build_model("node", "gcn", 5, 3, hidden=8, num_layers=3,
                      residual=True).eval()
    stack = net.encoder
    assert len(stack.ffns) == 0
    assert all(isinstance(n, torch.nn.Identity) for n in stack.norms)
    h = F.gelu(stack.input(x))
    for conv in stack.convs:
        h = h + F.gelu(dense_gcn(conv, h, edge_index))
    torch.testing.assert_close(net(x, edge_index), stack.head(h))


def test_plain_stack_norm_between_layers():
    x, edge_index = ring_graph()
    net = build_model("node", "gcn", 5, 3, hidden=8, num_layers=2,
                      norm="layer").eval()
    first, second = net.encoder.convs
    norm = net.encoder.norms[0]
    h = F.elu(F.layer_norm(dense_gcn(first, x, edge_index), (8, ),
                           norm.weight, norm.bias))
    torch.testing.assert_close(net(x, edge_index),
                               dense_gcn(second, h, edge_index))


CONV_MODELS = [n for n, s in MODELS.items() if s.encoder == "conv"
               and "node" in s.tasks]


@pytest.mark.parametrize("name", CONV_MODELS)
def test_defaults_keep_todays_stacks(name):
    """No input layer, norms, feed-forward blocks or root weights beyond
    what each conv had: the parameters are the convs'."""
    options = {"delta": 1.0} if name == "pna-attention" else {}
    net = build_model("node", name, 5, 3, **options)
    assert all(k.startswith("encoder.convs.") for k in net.state_dict())
    assert not any("lin_root" in k for k in net.state_dict())
    spec = get_model(name)
    assert spec.default("norm") is None
    assert spec.default("ffn_multiplier") == 0.0
    assert spec.default("residual") is False


@pytest.mark.parametrize("name", CONV_MODELS)
def test_every_conv_model_takes_the_recipe(name):
    x, edge_index = ring_graph()
    options = dict(hidden=8, num_layers=2, residual=True, norm="layer",
                   ffn_multiplier=1.0)
    spec = get_model(name)
    if spec.multi_head:
        options["heads"] = 2
    if name == "pna-attention":
        options["delta"] = 1.0
    if "root_weight" in spec.options:
        options["root_weight"] = True
    net = build_model("node", name, 5, 3, **options)
    out = net(x, edge_index)
    assert out.shape == (7, 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_root_weight_is_each_models_own_or_added():
    x, edge_index = ring_graph()
    gat = build_model("node", "gat", 5, 3, hidden=8, heads=2,
                      root_weight=True).encoder.convs[0]
    assert gat.res is not None  # GATConv's residual: a root weight
    gin = build_model("node", "gin", 5, 3, hidden=8,
                      root_weight=True).encoder.convs[0]
    torch.testing.assert_close(gin(x, edge_index),
                               gin.conv(x, edge_index) + gin.lin_root(x))
    assert repr(gin).startswith("WithRootWeight(GINConv(")
    mha = build_model("node", "mha", 5, 3, hidden=8, heads=2,
                      root_weight=True).encoder.convs[0]
    assert mha.lin_skip is not None
    gt = build_model("node", "graph-transformer", 5, 3, hidden=8, heads=2,
                     root_weight=True)
    assert gt.encoder.encoder.layers[0].attention.lin_skip is not None
    gt = build_model("node", "graph-transformer", 5, 3, hidden=8, heads=2)
    assert gt.encoder.encoder.layers[0].attention.lin_skip is None
    # SAGE has its root weight always (lin_r): no option.
    assert "root_weight" not in get_model("sage").options


def test_one_option_with_per_model_defaults():
    assert get_model("graph-transformer").default("norm") == "layer"
    assert get_model("gps").default("norm") == "batch"
    assert get_model("mha").default("norm") is None
    assert get_model("mha").default("root_weight") is True
    assert get_model("gcn").default("root_weight") is False
    gt = build_model("node", "graph-transformer", 5, 3, hidden=8, heads=2)
    assert isinstance(gt.encoder.encoder.layers[0].norm1,
                      torch.nn.LayerNorm)
    config = resolve_config("graph", "mutag", "gcn")
    assert config["norm"] is None and config["root_weight"] is False
    # The text task's blocks keep their own norm and width.
    config = resolve_config("text", "trec", "mha")
    assert config["norm"] == "layer" and config["ffn_multiplier"] == 2.0
    net = build_model("text", "mha", 30, 4, hidden=8, heads=2)
    assert isinstance(net.encoder.layers[0].norm1, torch.nn.LayerNorm)
    with pytest.raises(ValueError, match="residual=True shapes conv stacks"):
        build_model("text", "mha", 30, 4, hidden=8, heads=2, residual=True)


def test_transformer_layer_without_feed_forward_block():
    layer = GraphTransformerLayer(8, 2, ffn_multiplier=0).eval()
    assert layer.ffn is None and layer.norm2 is None
    x, edge_index = ring_graph(features=8)
    expected = x + layer.attention(layer.norm1(x), edge_index)
    torch.testing.assert_close(layer(x, edge_index), expected)
    with pytest.raises(ValueError, match="ffn_multiplier must be >= 0"):
        GraphTransformerLayer(8, 2, ffn_multiplier=-1)


def ordered_subgraph(num_nodes=30, seeds=4, hops=2, seed=0):
    """A random graph relabelled so that nodes come by hop distance from
    the first ``seeds`` (the order PyG's samplers give)."""
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, 4 * num_nodes),
                               generator=gen)
    dist = hop_distances(edge_index, num_nodes, seeds, hops)
    order = torch.argsort(dist * num_nodes + torch.arange(num_nodes))
    relabel = torch.empty_like(order)
    relabel[order] = torch.arange(num_nodes)
    return relabel[edge_index]


@pytest.mark.parametrize("name", ["mha", "gin-attention", "gat", "gin"])
def test_residual_blocks_equal_the_whole_subgraph(name):
    from torch_geometric.utils import add_remaining_self_loops
    edge_index = ordered_subgraph()
    x = torch.randn(30, 5)
    options = dict(hidden=8, num_layers=2, residual=True, norm="layer",
                   ffn_multiplier=1.0)
    if get_model(name).multi_head:
        options["heads"] = 2
    net = build_model("node", name, 5, 3, **options).eval()
    whole, _ = add_remaining_self_loops(edge_index, num_nodes=30)
    blocks = sampled_blocks(edge_index, 30, 4, 2)
    assert blocks is not None
    torch.testing.assert_close(net(x, None, blocks=blocks),
                               net(x, whole)[:4], atol=1e-5, rtol=1e-5)
