"""PyG's explain tools and message-passing hooks on the attention convs.

When a conv is explained or hooked its attention runs through
``MessagePassing.propagate`` (messages = the attention weights); these tests
check that this path gives the normal path's results, that the hooks and
explainers see the weights, and that an edge mask acts on the output like
deleting edges.
"""
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.datasets import Planetoid
from torch_geometric.explain import Explainer
from torch_geometric.explain.algorithm import AttentionExplainer, GNNExplainer
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks
from torch_geometric.utils import k_hop_subgraph

from tgnn_transformers import (GINAttentionConv, GraphTransformer,
                               MultiHeadAttentionConv, PNAAttentionConv)

N, F_IN, C, H, E = 12, 6, 4, 3, 50

CONVS = {
    "mha": lambda **kw: MultiHeadAttentionConv(F_IN, C, heads=H, **kw),
    "gin": lambda **kw: GINAttentionConv(F_IN, C, heads=H, **kw),
    "pna": lambda **kw: PNAAttentionConv(F_IN, C, heads=H, delta=1.3, **kw),
}


def graph(edge_dim=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N, F_IN, generator=gen)
    edge_index = torch.randint(0, N, (2, E), generator=gen)
    edge_attr = (torch.randn(E, edge_dim, generator=gen)
                 if edge_dim else None)
    return x, edge_index, edge_attr


def no_op_hook(module, inputs, output):
    return None


def run_both_paths(conv, x, edge_index, edge_attr, seed=None, **call):
    """The conv's output on the fused path and through propagate (forced
    by a message hook that changes nothing), with input gradients."""
    results = []
    for hooked in (False, True):
        handle = (conv.register_message_forward_hook(no_op_hook)
                  if hooked else None)
        if seed is not None:
            torch.manual_seed(seed)
        xg = x.clone().requires_grad_()
        out = conv(xg, edge_index, edge_attr, **call)
        tensor = out[0] if isinstance(out, tuple) else out
        grad = torch.autograd.grad(tensor.pow(2).sum(), xg)[0]
        results.append((out, grad))
        if handle is not None:
            handle.remove()
    return results


@pytest.mark.parametrize("name", list(CONVS))
@pytest.mark.parametrize("edge_dim", [None, 2])
def test_propagate_path_equals_fused_path(name, edge_dim):
    conv = CONVS[name](edge_dim=edge_dim, beta=True).eval()
    x, edge_index, edge_attr = graph(edge_dim)
    (out, grad), (out_p, grad_p) = run_both_paths(conv, x, edge_index,
                                                  edge_attr)
    torch.testing.assert_close(out_p, out)
    torch.testing.assert_close(grad_p, grad)


@pytest.mark.parametrize("name", list(CONVS))
def test_propagate_path_returns_the_same_attention_weights(name):
    conv = CONVS[name](edge_dim=2).eval()
    x, edge_index, edge_attr = graph(2)
    ((out, (ei, alpha)), _), ((out_p, (ei_p, alpha_p)), _) = run_both_paths(
        conv, x, edge_index, edge_attr, return_attention_weights=True)
    torch.testing.assert_close(out_p, out)
    assert ei_p is edge_index and ei is edge_index
    torch.testing.assert_close(alpha_p, alpha)


@pytest.mark.parametrize("name", list(CONVS))
def test_attention_dropout_is_the_same_on_both_paths(name):
    """In training mode both paths drop the same weights under one seed
    (edge path of the kernel; edges not sorted by target)."""
    conv = CONVS[name](dropout=0.4, backend="sparse").train()
    x, edge_index, _ = graph()
    (out, grad), (out_p, grad_p) = run_both_paths(conv, x, edge_index, None,
                                                  seed=7)
    torch.testing.assert_close(out_p, out)
    torch.testing.assert_close(grad_p, grad)
    # ... and dropout really acts: another seed gives another output.
    (other, _), _ = run_both_paths(conv, x, edge_index, None, seed=8)
    assert not torch.allclose(other, out)


@pytest.mark.parametrize("sparsify", [dict(top_k=2), dict(threshold=0.3)])
def test_gin_sparsification_on_the_propagate_path(sparsify):
    conv = GINAttentionConv(F_IN, C, heads=H, **sparsify).eval()
    x, edge_index, _ = graph()
    ((out, (kept, alpha)), _), ((out_p, (kept_p, alpha_p)), _) = \
        run_both_paths(conv, x, edge_index, None,
                       return_attention_weights=True)
    torch.testing.assert_close(out_p, out)
    assert kept.size(1) < edge_index.size(1)

    def dense(edges, weights):  # the kept subgraph, in any edge order
        out = torch.zeros(N, N, H)
        return out.index_put((edges[1], edges[0]), weights, accumulate=True)

    torch.testing.assert_close(dense(kept_p, alpha_p), dense(kept, alpha))


@pytest.mark.parametrize("name", list(CONVS))
def test_message_hook_sees_alpha_and_can_change_the_result(name):
    conv = CONVS[name]().eval()
    x, edge_index, _ = graph()
    _, (_, alpha) = conv(x, edge_index, return_attention_weights=True)
    seen = []

    def record(module, inputs, output):
        seen.append(inputs[0]["alpha"])

    handle = conv.register_message_forward_hook(record)
    conv(x, edge_index)
    handle.remove()
    assert len(seen) == 1 and seen[0].shape == (E, H)
    torch.testing.assert_close(seen[0], alpha)
    # A hook that zeroes every weight leaves each node without neighbours.
    handle = conv.register_message_forward_hook(
        lambda module, inputs, output: torch.zeros_like(output))
    zeroed = conv(x, edge_index)
    handle.remove()
    isolated = torch.zeros(2, 0, dtype=torch.long)
    torch.testing.assert_close(zeroed, conv(x, isolated))


def test_fused_path_never_calls_propagate():
    conv = MultiHeadAttentionConv(F_IN, C, heads=H)

    def fail(*args, **kwargs):
        raise AssertionError("propagate called on the normal path")

    conv.propagate = fail
    x, edge_index, _ = graph()
    assert conv(x, edge_index).shape == (N, H * C)


@pytest.mark.parametrize("name", list(CONVS))
def test_edge_mask_scales_the_messages(name):
    """An explainer's soft edge mask m multiplies each edge's message
    alpha_ij (v_j + e_ij), as in PyG's TransformerConv (no renormalisation
    of the other weights).  MHA and GIN: the whole layer by hand from the
    fused path's weights; PNA: the same rescaling done by a message hook."""
    conv = CONVS[name]().eval()
    x, edge_index, _ = graph()
    mask = torch.rand(E)
    set_masks(conv, mask, edge_index, apply_sigmoid=False)
    masked = conv(x, edge_index)
    clear_masks(conv)
    assert not conv.explain
    if name == "pna":
        handle = conv.register_message_forward_hook(
            lambda module, inputs, output: output * mask.view(-1, 1))
        torch.testing.assert_close(masked, conv(x, edge_index))
        handle.remove()
        return
    _, (_, alpha) = conv(x, edge_index, return_attention_weights=True)
    value = conv.lin_value(x).view(N, H, C)
    src, dst = edge_index
    messages = (alpha * mask.view(-1, 1)).unsqueeze(-1) * value[src]
    heads = torch.zeros(N, H, C).index_add_(0, dst, messages)
    if name == "gin":
        heads = conv.mlp((1 + conv.eps).view(1, -1, 1) * value + heads)
    expected = heads.reshape(N, H * C) + conv.lin_skip(x)
    torch.testing.assert_close(masked, expected)


# --------------------------------------------------------------------------
# Explainers on Cora
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cora(data_mirror, tmp_path_factory):
    root = tmp_path_factory.mktemp("explain") / "planetoid"
    shutil.copytree(data_mirror / "planetoid" / "Cora" / "raw",
                    root / "Cora" / "raw")
    return Planetoid(root=str(root), name="Cora")[0]


class TwoLayers(torch.nn.Module):

    def __init__(self, name, in_channels, classes):
        super().__init__()
        make = {
            "mha": MultiHeadAttentionConv,
            "gin": GINAttentionConv,
            "pna": lambda *a, **k: PNAAttentionConv(*a, delta=1.5, **k),
        }[name]
        self.conv1 = make(in_channels, 8, heads=2)
        self.conv2 = make(16, classes, heads=1)

    def forward(self, x, edge_index):
        return self.conv2(F.elu(self.conv1(x, edge_index)), edge_index)


class TransformerModel(torch.nn.Module):

    def __init__(self, in_channels, classes, attention):
        super().__init__()
        kwargs = {"pna-attention": dict(delta=1.5)}.get(attention, {})
        self.lin_in = torch.nn.Linear(in_channels, 16)
        self.encoder = GraphTransformer(16, heads=2, num_layers=2,
                                        attention=attention,
                                        attention_kwargs=kwargs)
        self.lin_out = torch.nn.Linear(16, classes)

    def forward(self, x, edge_index):
        return self.lin_out(self.encoder(self.lin_in(x), edge_index))


MODELS = {
    "mha": lambda d, k: TwoLayers("mha", d, k),
    "gin": lambda d, k: TwoLayers("gin", d, k),
    "pna": lambda d, k: TwoLayers("pna", d, k),
    "graph-transformer": lambda d, k: TransformerModel(d, k, "mha"),
    "graph-transformer-gin": lambda d, k: TransformerModel(
        d, k, "gin-attention"),
}
MODEL_CONFIG = dict(mode="multiclass_classification", task_level="node",
                    return_type="raw")


def cora_model(name, data):
    torch.manual_seed(0)
    return MODELS[name](data.num_features,
                        int(data.y.max()) + 1).eval()


@pytest.mark.parametrize("name", list(MODELS))
def test_attention_explainer_on_cora(cora, name):
    model = cora_model(name, cora)
    # (PyG's mask types are "object", "common_attributes", "attributes";
    # "object" is one weight per edge.)
    explainer = Explainer(model, algorithm=AttentionExplainer(),
                          explanation_type="model", node_mask_type=None,
                          edge_mask_type="object", model_config=MODEL_CONFIG)
    explanation = explainer(cora.x, cora.edge_index, index=10)
    mask = explanation.edge_mask
    assert mask.shape == (cora.edge_index.size(1), )
    assert torch.isfinite(mask).all()
    # Weights inside the 2-hop subgraph of node 10, zeros outside it.
    _, _, _, inside = k_hop_subgraph(10, 2, cora.edge_index,
                                     num_nodes=cora.num_nodes)
    assert (mask[~inside] == 0).all() and (mask[inside] > 0).any()


@pytest.mark.parametrize("name", ["mha", "gin", "pna", "graph-transformer"])
def test_gnn_explainer_on_cora(cora, name):
    model = cora_model(name, cora)
    explainer = Explainer(model, algorithm=GNNExplainer(epochs=20),
                          explanation_type="model", node_mask_type=None,
                          edge_mask_type="object", model_config=MODEL_CONFIG)
    explanation = explainer(cora.x, cora.edge_index, index=10)
    mask = explanation.edge_mask
    assert mask.shape == (cora.edge_index.size(1), )
    assert torch.isfinite(mask).all()
    inside = mask[mask > 0]
    assert inside.numel() > 1 and float(inside.max() - inside.min()) > 1e-3


@pytest.mark.parametrize("name", list(MODELS))
def test_zero_edge_mask_equals_deleting_the_edges_on_cora(cora, name):
    """The independent reference: zero mask entries on every incoming edge
    of a third of the nodes give the model's output on the graph without
    those edges; the mask also carries gradients."""
    model = cora_model(name, cora)
    edge_index = cora.edge_index
    gen = torch.Generator().manual_seed(1)
    muted = torch.rand(cora.num_nodes, generator=gen) < 1 / 3
    keep = ~muted[edge_index[1]]
    mask = torch.nn.Parameter(keep.float())
    set_masks(model, mask, edge_index, apply_sigmoid=False)
    masked = model(cora.x, edge_index)
    masked.pow(2).sum().backward()
    clear_masks(model)
    assert mask.grad is not None and mask.grad.abs().sum() > 0
    deleted = model(cora.x, edge_index[:, keep])
    torch.testing.assert_close(masked, deleted, atol=1e-5, rtol=1e-4)
    # ... while the unmasked model differs on those nodes.
    assert not torch.allclose(model(cora.x, edge_index)[muted],
                              deleted[muted], atol=1e-4)
