"""Gradients in float64 on tiny graphs: ``gradcheck`` and ``gradgradcheck``
for every custom autograd Function of ``functional/sparse_ops.py``, for
the attention kernel on both backends and for every attention layer and
the transformer layer (inputs and all parameters), and a check that every
parameter of every layer receives a finite gradient that is not all zero.

Every hand-written backward is twice differentiable: ``_SDDMM`` and
``_SpMM`` compute their backward with each other (the raw CSR kernels'
double backward failed inside torch), ``_EdgeDot`` and
``_EdgeWeightedSum`` with differentiable gathers and ``index_add_``.
"""
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch_geometric.data import Batch, Data

from tgnn_transformers import (GINAttentionConv, MultiHeadAttentionConv,
                               PNAAttentionConv)
from tgnn_transformers.functional import REDUCTIONS, edge_attention
from tgnn_transformers.functional.sparse_ops import (_EdgeDot,
                                                     _EdgeWeightedSum,
                                                     _SDDMM, _SpMM,
                                                     build_graph_index)
from tgnn_transformers.nn import GraphTransformerLayer
from tgnn_transformers.transforms import SequenceToGraph

F64 = dict(dtype=torch.float64)

# unsorted, a duplicate edge, a self-loop, a target without incoming edges,
# bipartite sizes (4 sources, 3 targets)
EDGES = torch.tensor([[0, 3, 1, 1, 2, 3, 0],
                      [1, 0, 1, 1, 0, 1, 0]])
INDEX = build_graph_index(EDGES, 4, 3)


def rand(*shape):
    return torch.randn(*shape, **F64).requires_grad_()


FUNCTIONS = {
    "_SDDMM": (lambda a, b: _SDDMM.apply(a, b, INDEX),
               lambda: (rand(3, 2, 2), rand(4, 2, 2))),
    "_SpMM": (lambda w, v: _SpMM.apply(w, v, INDEX, False),
              lambda: (rand(7, 2), rand(4, 2, 2))),
    "_SpMM(transpose)": (lambda w, v: _SpMM.apply(w, v, INDEX, True),
                         lambda: (rand(7, 2), rand(3, 2, 2))),
    "_EdgeDot": (lambda n, e: _EdgeDot.apply(n, e, INDEX),
                 lambda: (rand(3, 2, 2), rand(7, 2, 2))),
    "_EdgeWeightedSum": (lambda w, e: _EdgeWeightedSum.apply(w, e, INDEX),
                         lambda: (rand(7, 2), rand(7, 2, 2))),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("check", [gradcheck, gradgradcheck])
def test_custom_autograd_functions(name, check):
    fn, inputs = FUNCTIONS[name]
    assert check(fn, inputs())


@pytest.mark.parametrize("check", [gradcheck, gradgradcheck])
def test_sparse_kernel_every_reduction_with_edge_terms(check):
    torch.manual_seed(1)
    q, k, v = rand(3, 2, 2), rand(4, 2, 2), rand(4, 2, 2)
    edge, bias = rand(7, 2, 2), rand(7, 2)

    def f(q, k, v, edge, bias):
        return edge_attention(q, k, v, EDGES, edge_key=edge, edge_value=edge,
                              bias=bias, reduce=REDUCTIONS,
                              backend="sparse").out

    assert check(f, (q, k, v, edge, bias))


@pytest.mark.parametrize("check", [gradcheck, gradgradcheck])
@pytest.mark.parametrize("pattern", ["full", "causal"])
def test_dense_kernel(check, pattern):
    """The padding and unpadding around SDPA.  Torch's fused CPU flash
    kernel has no double backward (``derivative for
    aten::_scaled_dot_product_flash_attention_for_cpu_backward is not
    implemented``), so second derivatives of the dense path need SDPA's math
    backend, as here, or ``backend="sparse"``."""
    to_graph = SequenceToGraph(pattern)
    batch = Batch.from_data_list([to_graph(Data(x=torch.zeros(n, 1)))
                                  for n in (3, 1, 2)])
    q, k, v = rand(6, 2, 2), rand(6, 2, 2), rand(6, 2, 2)
    with sdpa_kernel(SDPBackend.MATH):
        assert check(lambda q, k, v: edge_attention(
            q, k, v, batch.edge_index, batch=batch.batch,
            backend="dense").out, (q, k, v))


# --------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------

LAYERS = {
    "mha": lambda: MultiHeadAttentionConv(3, 2, heads=2, beta=True,
                                          edge_dim=2),
    "mha-transformer": lambda: MultiHeadAttentionConv(
        3, 2, heads=2, edge_dim=2, root_weight=False, out_proj=True),
    "gin": lambda: GINAttentionConv(3, 2, heads=2, edge_dim=2,
                                    mlp_multiplier=2.0),
    "gin-relu-top2": lambda: GINAttentionConv(3, 2, heads=2, edge_dim=2,
                                              mlp_multiplier=1.0,
                                              normalization="relu", top_k=2),
    "pna": lambda: PNAAttentionConv(3, 2, heads=2, edge_dim=2, delta=1.0,
                                    aggregators=REDUCTIONS, mixer="mlp"),
    "transformer-mha": lambda: GraphTransformerLayer(4, 2, edge_dim=2),
    "transformer-gin": lambda: GraphTransformerLayer(
        4, 2, "gin-attention", edge_dim=2, norm_first=False,
        attention_kwargs=dict(mlp_multiplier=1.0)),
    "transformer-pna": lambda: GraphTransformerLayer(
        4, 2, "pna-attention", edge_dim=2, attention_kwargs=dict(delta=1.0)),
}

# 5 nodes: node 4 receives no edge, node 0 has a self-loop
LAYER_EDGES = torch.tensor([[0, 1, 2, 3, 4, 2, 0, 3],
                            [0, 0, 1, 1, 2, 3, 3, 2]])


def layer_and_inputs(name):
    torch.manual_seed(0)
    layer = LAYERS[name]().double()
    with torch.no_grad():  # move every parameter off its initial value
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    width = 4 if name.startswith("transformer") else 3
    x = rand(5, width)
    edge_attr = rand(LAYER_EDGES.size(1), 2)
    return layer, x, edge_attr


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_gradcheck_inputs_and_parameters(name):
    layer, x, edge_attr = layer_and_inputs(name)
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_()
              for _, p in layer.named_parameters()]

    def f(x, edge_attr, *values):
        return functional_call(layer, dict(zip(names, values)),
                               (x, LAYER_EDGES, edge_attr))

    assert gradcheck(f, (x, edge_attr, *params))


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_gradgradcheck(name):
    layer, x, edge_attr = layer_and_inputs(name)
    assert gradgradcheck(lambda x, e: layer(x, LAYER_EDGES, e),
                         (x, edge_attr))


@pytest.mark.parametrize("name", list(LAYERS))
def test_every_parameter_gets_a_finite_nonzero_gradient(name):
    layer, x, edge_attr = layer_and_inputs(name)
    out = layer(x, LAYER_EDGES, edge_attr)
    (out * torch.linspace(-1, 2, out.numel(), **F64).view(out.shape)).sum() \
        .backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_gin_warns_when_its_mlp_would_ignore_the_input():
    """A per-head MLP of hidden width 1 followed by a LayerNorm over that
    one channel outputs a constant: no weight before it gets a gradient."""
    with pytest.warns(UserWarning, match="hidden width of 1"):
        conv = GINAttentionConv(3, 2, heads=2)  # round(0.5 * 2) = 1
    x = rand(5, 3)
    conv.double()(x, LAYER_EDGES).sum().backward()
    assert torch.equal(conv.lin_query.weight.grad,
                       torch.zeros_like(conv.lin_query.weight))
