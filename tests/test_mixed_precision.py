"""Every conv and the graph transformer run forward and backward in
bfloat16: under CPU autocast and with bfloat16 weights and inputs, on the
sparse and the dense path, within bfloat16 round-off of the float32 run."""
import copy

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.explain.algorithm.utils import set_masks

from tgnn_transformers import (GINAttentionConv, GraphTransformer,
                               MultiHeadAttentionConv, PNAAttentionConv)
from tgnn_transformers.functional import (attention_aggregate,
                                          attention_weights, edge_attention,
                                          edge_softmax)
from tgnn_transformers.transforms import SequenceToGraph

MODELS = {
    "mha": lambda **kw: MultiHeadAttentionConv(16, 8, heads=2, edge_dim=3,
                                               beta=True, **kw),
    "gin-attention": lambda **kw: GINAttentionConv(16, 8, heads=2,
                                                   edge_dim=3, sharpen=True,
                                                   **kw),
    "pna-attention": lambda **kw: PNAAttentionConv(
        16, 8, heads=2, edge_dim=3, delta=1.0,
        aggregators=["mean", "max", "min", "std", "sum"],
        scalers=["identity", "amplification", "attenuation"], **kw),
    "graph-transformer": lambda **kw: GraphTransformer(
        16, heads=2, num_layers=2, dropout=0.0, **kw),
}


def _rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _run(model, x, args, kwargs, mode):
    model = copy.deepcopy(model)
    x = x.clone()
    if mode == "bf16":
        model = model.to(torch.bfloat16)
        x = x.to(torch.bfloat16)
        args = tuple(a.to(torch.bfloat16) if a.is_floating_point() else a
                     for a in args)
    x.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16,
                        enabled=mode == "autocast"):
        out = model(x, *args, **kwargs)
    # A fixed random projection makes every output entry matter.
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out.float() * weight).sum().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    return out, x.grad, grads


def _check(model, x, args, kwargs=None, modes=("autocast", "bf16"),
           grad_tol=6e-2):
    kwargs = kwargs or {}
    ref, ref_gx, ref_grads = _run(model, x, args, kwargs, "fp32")
    for mode in modes:
        out, gx, grads = _run(model, x, args, kwargs, mode)
        assert torch.isfinite(out.float()).all(), mode
        if mode == "bf16":
            assert out.dtype == torch.bfloat16
        assert _rel_err(out, ref) < 2e-2, (mode, _rel_err(out, ref))
        assert _rel_err(gx, ref_gx) < grad_tol, (mode, _rel_err(gx, ref_gx))
        for name, g in grads.items():
            if ref_grads[name] is None:
                continue
            assert g is not None, f"{mode}: no gradient for {name}"
            assert torch.isfinite(g.float()).all(), (mode, name)
            if ref_grads[name].norm() > 1e-6:
                err = _rel_err(g, ref_grads[name])
                assert err < grad_tol, (mode, name, err)


@pytest.mark.parametrize("name", list(MODELS))
def test_sparse_path_in_bfloat16(name):
    torch.manual_seed(0)
    model = MODELS[name]()
    x = torch.randn(40, 16)
    edge_index = torch.randint(0, 40, (2, 200))
    args = (edge_index, ) if name == "graph-transformer" else (
        edge_index, torch.randn(200, 3))
    # PNA's max / min pick one neighbour each: rounding the float32 inputs
    # and weights to bfloat16 alone (then computing in float32) already
    # moves its value-weight gradient by 7.5 % here, so the tolerance is
    # the conditioning of the aggregator, not the kernel's arithmetic.
    _check(model, x, args,
           grad_tol=1.5e-1 if name == "pna-attention" else 6e-2)


@pytest.mark.parametrize("name", ["mha", "graph-transformer"])
@pytest.mark.parametrize("pattern", ["full", "causal"])
def test_dense_path_in_bfloat16(name, pattern):
    torch.manual_seed(0)
    model = (MultiHeadAttentionConv(16, 8, heads=2, backend="dense")
             if name == "mha" else
             GraphTransformer(16, heads=2, num_layers=2, dropout=0.0,
                              attention_kwargs={"backend": "dense"}))
    to_graph = SequenceToGraph(pattern)
    batch = Batch.from_data_list([to_graph(Data(x=torch.randn(n, 16)))
                                  for n in (6, 9)])
    _check(model, batch.x, (batch.edge_index, ), {"batch": batch.batch})


def test_kernel_returns_the_input_dtype_with_fp32_statistics():
    torch.manual_seed(0)
    q, k, v = (torch.randn(30, 2, 8) for _ in range(3))
    edge_index = torch.randint(0, 30, (2, 150))
    edge_attr = torch.randn(150, 2, 8)
    bias = torch.randn(150, 2)
    ref = edge_attention(q, k, v, edge_index, edge_key=edge_attr,
                         edge_value=edge_attr, bias=bias, need_weights=True)
    low = edge_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(),
                         edge_index, edge_key=edge_attr.bfloat16(),
                         edge_value=edge_attr.bfloat16(), bias=bias,
                         need_weights=True)
    assert low.out.dtype == low.alpha.dtype == torch.bfloat16
    assert _rel_err(low.out, ref.out) < 2e-2
    assert _rel_err(low.alpha, ref.alpha) < 2e-2
    # Large logits: the softmax shift is taken in float32, nothing overflows.
    big = edge_softmax((torch.randn(150, 2) * 1e4).half(), edge_index[1],
                       num_nodes=30)
    assert big.dtype == torch.float16 and torch.isfinite(big).all()
    alpha = attention_weights(q.half(), k.half(), edge_index)
    assert alpha.dtype == torch.float16
    agg = attention_aggregate(v.bfloat16(), alpha.bfloat16(), edge_index, 30,
                              ["mean", "max", "std"])
    assert agg.dtype == torch.bfloat16 and torch.isfinite(agg).all()


def test_explain_path_under_autocast():
    torch.manual_seed(0)
    conv = MultiHeadAttentionConv(16, 8, heads=2)
    x = torch.randn(20, 16)
    edge_index = torch.randint(0, 20, (2, 80))
    set_masks(conv, torch.nn.Parameter(torch.rand(80)), edge_index,
              apply_sigmoid=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x, edge_index)
    out.float().sum().backward()
    assert torch.isfinite(out.float()).all()
    assert conv.lin_query.weight.grad is not None
