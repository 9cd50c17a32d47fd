"""Numerical edge cases of the functional core and of every layer, on the
sparse and the dense (``scaled_dot_product_attention``) backends, in
float32, float64 and bfloat16: no NaN and no Inf, in the outputs and in the
gradients, and the result each case is documented to give.

=====================================  =====================================
case                                   documented result
=====================================  =====================================
empty graph (0 nodes, 0 edges)         empty outputs of the right shape and
                                       dtype; every layer runs (PNA used to
                                       crash: fixed)
node without incoming edges            the attention gives it 0 (every
                                       reduction); a layer's output is its
                                       root / self term only (skip weight,
                                       GIN's ``(1 + eps) v_i``, PNA's
                                       ``v_i``, the residual)
one node with a self-loop              ``alpha = 1``; sum / mean / max / min
                                       give ``v``, var / std give 0
logits of +-1e4                        the softmax is the one-hot of the
                                       largest score (max subtracted per
                                       target), rows still sum to 1
all edges of a node masked             ``alpha = 0`` on its edges and the
(``-inf`` bias)                        aggregate is 0 (every reduction);
                                       finite, zero gradients (the softmax
                                       denominator clamp was too small: the
                                       backward gave NaN, fixed)
all edges thresholded away             GIN-Attention keeps an empty
(GIN ``threshold``)                    subgraph; the node gets its
                                       ``(1 + eps) v_i`` term only
``top_k``                              exactly ``min(k, in-degree)`` edges
                                       kept per target and head
duplicate edges                        a multigraph: each copy is its own
                                       edge, so a source listed ``m`` times
                                       weighs as a single edge with score
                                       ``+ log m`` (more copies than matrix
                                       entries crashed the SDDMM: fixed)
float64                                computed and returned in float64
bfloat16                               computed in float32, returned in
                                       bfloat16, within bf16 round-off of
                                       the float32 result
=====================================  =====================================

The dense path runs only on batches of complete / causal token graphs
(empty sequences, single tokens, +-1e4 logits, both dtypes are covered
there); biases, sparsification and duplicate edges are not such graphs, so
``backend="dense"`` refuses them and ``"auto"`` runs them sparse (see
``test_backends_and_properties.py``).  The Triton backend's edge cases
(empty and masked rows, empty graph, duplicates, +-1e4 logits, a single
self-loop, bfloat16) run under Triton's interpreter in
``_triton_interpreter_checks.py``.
"""
import math

import pytest
import torch
from torch_geometric.data import Batch, Data

from tgnn_transformers import (GINAttentionConv, MultiHeadAttentionConv,
                               PNAAttentionConv)
from tgnn_transformers.functional import (REDUCTIONS, attention_aggregate,
                                          edge_attention, edge_softmax)
from tgnn_transformers.nn import GraphTransformer
from tgnn_transformers.transforms import SequenceToGraph

H, C = 2, 3

DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def _edges(pairs):
    return torch.tensor(pairs, dtype=torch.long).view(-1, 2).t()


# name -> (num_nodes, edge_index as (source, target) pairs)
GRAPHS = {
    "empty": (0, _edges([])),
    "no_edges": (3, _edges([])),
    "isolated": (4, _edges([(0, 1), (1, 2), (2, 1), (3, 2)])),  # 0, 3 get none
    "self_loop": (1, _edges([(0, 0)])),
    "duplicates": (3, _edges([(0, 1), (0, 1), (0, 1), (2, 1), (1, 2)])),
    # more edges than matrix entries: torch's sampled_addmm failed (fixed)
    "dense_duplicates": (1, _edges([(0, 0), (0, 0), (0, 0)])),
}
NO_INCOMING = {"no_edges": [0, 1, 2], "isolated": [0, 3]}


def finite(*tensors):
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


def qkv(num_nodes, dtype, logit_scale=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(num_nodes, H, C, generator=gen) for _ in range(3))
    return [t.to(dtype).requires_grad_() for t in (q * logit_scale, k, v)]


def backward_is_finite(out, *inputs):
    """Backpropagates a weighted sum of ``out``; every gradient finite."""
    if out.numel() == 0:
        return True
    weight = torch.linspace(-2.0, 3.0, out.numel()).view(out.shape)
    (out.float() * weight).sum().backward()
    return finite(*[t.grad for t in inputs if t.grad is not None])


def tol(dtype):
    return dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else {}


# --------------------------------------------------------------------------
# functional core, sparse backend
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("logit_scale", [1.0, 1e4, -1e4])
def test_edge_attention_every_reduction(graph, dtype, logit_scale):
    n, edge_index = GRAPHS[graph]
    q, k, v = qkv(n, dtype, logit_scale)
    res = edge_attention(q, k, v, edge_index, reduce=REDUCTIONS,
                         need_weights=True, backend="sparse")
    out, alpha = res.out, res.alpha
    assert out.shape == (n, H, len(REDUCTIONS), C) and out.dtype == dtype
    assert alpha.shape == (edge_index.size(1), H) and alpha.dtype == dtype
    assert finite(out, alpha) and backward_is_finite(out, q, k, v)
    # weights sum to 1 over each target that has edges
    total = torch.zeros(n, H).index_add_(0, edge_index[1], alpha.float())
    has = torch.zeros(n, dtype=torch.bool)
    has[edge_index[1]] = True
    torch.testing.assert_close(total[has], torch.ones_like(total[has]),
                               **tol(dtype))
    for node in NO_INCOMING.get(graph, []):
        assert torch.equal(out[node], torch.zeros_like(out[node]))
    if graph == "self_loop":
        assert torch.equal(alpha, torch.ones_like(alpha))
        for r, name in enumerate(REDUCTIONS):
            expected = v[0] if name in ("sum", "mean", "max", "min") \
                else torch.zeros_like(v[0])
            torch.testing.assert_close(out[0, :, r], expected.detach(),
                                       **tol(dtype))
    if abs(logit_scale) > 1 and dtype != torch.bfloat16 and \
            "duplicates" not in graph:  # (copies of the winner share 1)
        # one-hot: every weight is 0 or 1 up to round-off
        a = alpha.detach()
        assert bool(((a < 1e-6) | (a > 1 - 1e-6)).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("graph", ["isolated", "self_loop", "duplicates"])
def test_every_edge_masked_by_minus_inf_bias(graph, dtype):
    n, edge_index = GRAPHS[graph]
    q, k, v = qkv(n, dtype)
    bias = torch.zeros(edge_index.size(1), H, dtype=dtype)
    masked_target = int(edge_index[1, 0])
    bias[edge_index[1] == masked_target] = float("-inf")
    bias.requires_grad_()
    res = edge_attention(q, k, v, edge_index, bias=bias, reduce=REDUCTIONS,
                         need_weights=True)
    masked = edge_index[1] == masked_target
    assert torch.equal(res.alpha[masked], torch.zeros_like(res.alpha[masked]))
    assert torch.equal(res.out[masked_target],
                       torch.zeros_like(res.out[masked_target]))
    assert finite(res.out, res.alpha)
    assert backward_is_finite(res.out + res.alpha.sum(), q, k, v, bias)
    assert torch.equal(bias.grad[masked], torch.zeros_like(bias.grad[masked]))


def test_duplicate_edges_weigh_as_log_multiplicity():
    n, edge_index = GRAPHS["duplicates"]
    q, k, v = qkv(n, torch.float64)
    dup = edge_attention(q, k, v, edge_index).out
    # the same graph with each edge once and a bias log(multiplicity)
    single = _edges([(0, 1), (2, 1), (1, 2)])
    bias = torch.tensor([math.log(3.0), 0.0, 0.0],
                        dtype=torch.float64).view(-1, 1).expand(-1, H)
    ref = edge_attention(q, k, v, single, bias=bias).out
    torch.testing.assert_close(dup, ref)
    # max / min do not depend on multiplicity
    for name in ("max", "min"):
        torch.testing.assert_close(
            edge_attention(q, k, v, edge_index, reduce=name).out,
            edge_attention(q, k, v, single, reduce=name).out)


@pytest.mark.parametrize("graph", list(GRAPHS))
def test_bfloat16_is_float32_rounded(graph):
    n, edge_index = GRAPHS[graph]
    q, k, v = qkv(n, torch.float32)
    ref = edge_attention(q, k, v, edge_index, reduce=REDUCTIONS).out
    low = edge_attention(*(t.bfloat16() for t in (q, k, v)), edge_index,
                         reduce=REDUCTIONS).out
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("fill", [1e4, -1e4, float("-inf")])
def test_edge_softmax_index_and_ptr(graph, dtype, fill):
    n, edge_index = GRAPHS[graph]
    target = edge_index[1].sort().values
    scores = torch.randn(target.numel(), H, dtype=torch.float64).to(dtype)
    scores[: max(1, target.numel() // 2)] = fill
    scores.requires_grad_()
    ptr = torch.zeros(n + 1, dtype=torch.long)
    ptr[1:] = torch.bincount(target, minlength=n).cumsum(0)
    by_index = edge_softmax(scores, target, num_nodes=n)
    by_ptr = edge_softmax(scores, ptr=ptr)
    assert by_index.dtype == dtype and finite(by_index)
    torch.testing.assert_close(by_index, by_ptr)
    assert backward_is_finite(by_index + by_ptr, scores)
    if fill == float("-inf") and graph == "self_loop":
        assert torch.equal(by_index, torch.zeros_like(by_index))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_attention_aggregate_zero_and_large_weights(graph, dtype, reduce):
    n, edge_index = GRAPHS[graph]
    value = (torch.randn(n, H, C) * 1e4).to(dtype).requires_grad_()
    for alpha in (torch.zeros(edge_index.size(1), H),
                  torch.rand(edge_index.size(1), H)):
        alpha = alpha.to(dtype).requires_grad_()
        out = attention_aggregate(value, alpha, edge_index, n, reduce)
        assert out.shape == (n, H, C) and out.dtype == dtype
        assert finite(out) and backward_is_finite(out, value, alpha)
        if not bool(alpha.any()):
            # no positively weighted edge: 0 for every reduction
            assert torch.equal(out, torch.zeros_like(out))


# --------------------------------------------------------------------------
# dense backend (token graphs)
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pattern", ["full", "causal"])
@pytest.mark.parametrize("lengths", [[0], [1], [0, 0], [1, 0, 3]])
@pytest.mark.parametrize("logit_scale", [1.0, 1e4])
def test_dense_backend(dtype, pattern, lengths, logit_scale):
    to_graph = SequenceToGraph(pattern)
    batch = Batch.from_data_list([to_graph(Data(x=torch.zeros(n, 1)))
                                  for n in lengths])
    q, k, v = qkv(batch.num_nodes, dtype, logit_scale)
    out = {b: edge_attention(q, k, v, batch.edge_index, batch=batch.batch,
                             backend=b).out for b in ("dense", "sparse")}
    assert out["dense"].shape == (batch.num_nodes, H, C)
    assert out["dense"].dtype == dtype and finite(out["dense"])
    torch.testing.assert_close(out["dense"], out["sparse"],
                               **(tol(dtype) if logit_scale == 1 else
                                  dict(atol=5e-2, rtol=5e-2)))
    assert backward_is_finite(out["dense"], q, k, v)


# --------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------

LAYERS = {
    "mha": lambda: MultiHeadAttentionConv(4, C, heads=H, beta=True,
                                          edge_dim=2),
    "gin": lambda: GINAttentionConv(4, C, heads=H, edge_dim=2),
    "gin-relu": lambda: GINAttentionConv(4, C, heads=H,
                                         normalization="relu"),
    "gin-threshold": lambda: GINAttentionConv(4, C, heads=H, threshold=1.5),
    "gin-top1": lambda: GINAttentionConv(4, C, heads=H, top_k=1),
    "pna": lambda: PNAAttentionConv(4, C, heads=H, delta=1.0,
                                    aggregators=REDUCTIONS),
    "transformer-mha": lambda: GraphTransformer(4, H, 2),
    "transformer-gin": lambda: GraphTransformer(
        4, H, 2, attention="gin-attention",
        attention_kwargs=dict(mlp_multiplier=1.0)),
    "transformer-pna": lambda: GraphTransformer(
        4, H, 2, attention="pna-attention",
        attention_kwargs=dict(delta=1.0)),
}


def run_layer(name, n, edge_index, dtype, scale=1.0):
    torch.manual_seed(0)
    layer = LAYERS[name]().to(dtype)
    x = (torch.randn(n, 4) * scale).to(dtype).requires_grad_()
    edge_attr = None
    if getattr(layer, "edge_dim", None):
        edge_attr = torch.randn(edge_index.size(1), 2).to(dtype)
    return layer, x, layer(x, edge_index, edge_attr)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("name", list(LAYERS))
def test_layers_on_edge_case_graphs(name, graph, dtype):
    n, edge_index = GRAPHS[graph]
    for scale in (1.0, 1e4):
        layer, x, out = run_layer(name, n, edge_index, dtype, scale)
        assert out.shape[0] == n and out.dtype == dtype and finite(out)
        assert backward_is_finite(out, x, *layer.parameters())


@pytest.mark.parametrize("name", ["mha", "gin", "pna"])
def test_node_without_incoming_edges_keeps_its_own_term(name):
    """The attention adds nothing to it: the output equals the layer's
    output on a graph without any edge."""
    n, edge_index = GRAPHS["isolated"]
    layer, x, out = run_layer(name, n, edge_index, torch.float64)
    nothing = torch.zeros(2, 0, dtype=torch.long)
    attr = None if layer.edge_dim is None else torch.zeros(0, 2).double()
    alone = layer(x, nothing, attr)
    for node in NO_INCOMING["isolated"]:
        torch.testing.assert_close(out[node], alone[node])


def test_threshold_above_one_drops_every_edge():
    n, edge_index = GRAPHS["isolated"]
    layer, x, out = run_layer("gin-threshold", n, edge_index, torch.float64)
    _, (kept, alpha) = layer(x, edge_index, return_attention_weights=True)
    assert kept.shape == (2, 0) and alpha.shape == (0, H)
    torch.testing.assert_close(out, layer(x, torch.zeros(2, 0,
                                                         dtype=torch.long)))


def test_top_k_keeps_min_k_in_degree_edges():
    n, edge_index = GRAPHS["duplicates"]
    layer, x, _ = run_layer("gin-top1", n, edge_index, torch.float64)
    _, (kept, alpha) = layer(x, edge_index, return_attention_weights=True)
    for h in range(H):
        targets = kept[1][alpha[:, h] > 0]
        assert sorted(targets.tolist()) == [1, 2]  # one per target with edges
