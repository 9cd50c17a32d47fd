"""The fused Triton CSR attention kernel under Triton's interpreter.

Not collected on its own (no ``test_`` prefix): ``test_triton_attention.py``
runs this file with pytest in a subprocess with ``TRITON_INTERPRET=1``, so
the kernels run on CPU tensors and nothing in the main test process is
affected.  Sizes are small: the interpreter runs every program in numpy.
"""
import os
import warnings

assert os.environ.get("TRITON_INTERPRET") == "1", \
    "run through tests/test_triton_attention.py (sets TRITON_INTERPRET=1)"

import pytest  # noqa: E402
import torch  # noqa: E402

from tgnn_transformers import MultiHeadAttentionConv  # noqa: E402
from tgnn_transformers.functional import edge_attention  # noqa: E402
from tgnn_transformers.functional import triton_attention as ta  # noqa

H, C, CV = 2, 6, 5  # widths that are not powers of two: masked lanes


@pytest.fixture(autouse=True, params=ta.BACKWARDS)
def backward(request, monkeypatch):
    """Every check runs with both ways of finding the key and value
    gradients (by source rows, and atomic adds from the target rows)."""
    torch.manual_seed(0)
    monkeypatch.setattr(ta, "BACKWARD", request.param)
    return request.param


def _graph(num_src, num_dst, num_edges, seed=0):
    """Random edges without duplicates, in a shuffled (non-CSR) order."""
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(num_src * num_dst, generator=g)[:num_edges]
    return torch.stack([flat % num_src, flat // num_src])


def _skewed(num_nodes=40, hub_degree=70, seed=0):
    """Node 0 receives ``hub_degree`` edges, half the nodes none."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes, (hub_degree, ), generator=g)
    hub = torch.stack([src, torch.zeros_like(src)])
    few = torch.stack([torch.randint(0, num_nodes, (30, ), generator=g),
                       torch.randint(1, num_nodes // 2, (30, ),
                                     generator=g)])
    edges = torch.cat([hub, few], 1)
    return edges[:, torch.randperm(edges.size(1), generator=g)]


def _inputs(num_src, num_dst, num_edges, dtype=torch.float32, *,
            edge_terms=True, bias=True, tensor_scale=True):
    make = lambda *s: torch.randn(*s, dtype=torch.float64).to(  # noqa: E731
        dtype).requires_grad_()
    t = dict(query=make(num_dst, H, C), key=make(num_src, H, C),
             value=make(num_src, H, CV))
    if edge_terms:
        t["edge_key"] = make(num_edges, H, C)
        t["edge_value"] = make(num_edges, H, CV)
    if bias:
        t["bias"] = make(num_edges, H)
    if tensor_scale:
        t["scale"] = torch.tensor(0.7, dtype=dtype, requires_grad=True)
    return t


def _dense_reference(t, edge_index, num_dst):
    """Masked dense softmax attention, float64 (no duplicate edges)."""
    d = {k: v.detach().double().requires_grad_() for k, v in t.items()}
    src, dst = edge_index
    num_src = d["key"].size(0)
    scale = d.get("scale", C**-0.5)
    keys = d["key"].unsqueeze(0).expand(num_dst, -1, -1, -1)  # [i, j, H, C]
    vals = d["value"].unsqueeze(0).expand(num_dst, -1, -1, -1)
    if "edge_key" in d:
        ek = torch.zeros(num_dst, num_src, H, C, dtype=torch.float64)
        ek = ek.index_put((dst, src), d["edge_key"])
        ev = torch.zeros(num_dst, num_src, H, CV, dtype=torch.float64)
        ev = ev.index_put((dst, src), d["edge_value"])
        keys, vals = keys + ek, vals + ev
    scores = (d["query"].unsqueeze(1) * keys).sum(-1) * scale  # [i, j, H]
    if "bias" in d:
        scores = scores + torch.zeros(num_dst, num_src, H,
                                      dtype=torch.float64).index_put(
                                          (dst, src), d["bias"])
    mask = torch.zeros(num_dst, num_src, dtype=torch.bool)
    mask[dst, src] = True
    scores = scores.masked_fill(~mask.unsqueeze(-1), float("-inf"))
    top = scores.amax(1, keepdim=True)
    top = torch.where(torch.isinf(top), torch.zeros_like(top), top)
    w = (scores - top).exp()
    alpha = w / w.sum(1, keepdim=True).clamp_min(1e-300)
    out = (alpha.unsqueeze(-1) * vals).sum(1)
    return out, alpha[dst, src], d


def _loss(out, alpha):
    g = torch.Generator().manual_seed(3)
    loss = (out.double() * torch.randn(out.shape, generator=g,
                                       dtype=torch.float64)).sum()
    if alpha is not None:
        loss = loss + (alpha.double() * torch.randn(
            alpha.shape, generator=g, dtype=torch.float64)).sum()
    return loss


def _run(t, edge_index, backend, need_weights=True):
    args = {k: v for k, v in t.items()
            if k not in ("query", "key", "value")}
    res = edge_attention(t["query"], t["key"], t["value"], edge_index,
                         need_weights=need_weights, backend=backend, **args)
    alpha = res.alpha if need_weights else None  # (sparse always has it)
    grads = torch.autograd.grad(_loss(res.out, alpha), list(t.values()))
    return res.out, alpha, dict(zip(t, grads))


def _close(a, b, tol):
    a, b = a.detach().double(), b.detach().double()
    err = float((a - b).abs().max()) if a.numel() else 0.0
    assert err <= tol * max(1.0, float(b.abs().max()) if b.numel() else 0),\
        err
    return err


@pytest.mark.parametrize("case", ["random", "bipartite", "skewed",
                                  "skewed_sources"])
def test_fp32_matches_dense_reference_and_sparse_path(case, monkeypatch):
    if case.startswith("skewed"):
        monkeypatch.setattr(ta, "ROW_SPLIT", 32)  # the hub: 3 items
        edge_index, num_src = _skewed(), 40
        if case == "skewed_sources":  # node 0 sends the hub's edges
            edge_index = edge_index.flip(0)
        num_dst = num_src
        edge_index = torch.unique(edge_index, dim=1)  # no duplicates
        edge_index = edge_index[:, torch.randperm(edge_index.size(1))]
    elif case == "bipartite":
        num_src, num_dst = 9, 13
        edge_index = _graph(num_src, num_dst, 40)
    else:
        num_src = num_dst = 12
        edge_index = _graph(12, 12, 50)
    t = _inputs(num_src, num_dst, edge_index.size(1))
    out, alpha, grads = _run(t, edge_index, "triton")
    ref_out, ref_alpha, d = _dense_reference(t, edge_index, num_dst)
    ref_grads = dict(zip(d, torch.autograd.grad(_loss(ref_out, ref_alpha),
                                                list(d.values()))))
    _close(out, ref_out, 1e-5)
    _close(alpha, ref_alpha, 1e-5)
    for name in t:
        # The scalar scale's gradient sums E * H float32 terms: 1e-5 per
        # term-sized unit, as for the sparse path (measured 1.0e-5 vs 8e-6).
        _close(grads[name], ref_grads[name], 3e-5 if name == "scale" else
               1e-5)
    s_out, s_alpha, s_grads = _run(t, edge_index, "sparse")
    _close(out, s_out, 1e-5)
    _close(alpha, s_alpha, 1e-5)
    for name in t:
        _close(grads[name], s_grads[name], 3e-5 if name == "scale" else
               1e-5)
    index = ta.graph_index(edge_index, num_src, num_dst)
    if case == "skewed":
        items = ta.work_items(edge_index, index)
        assert items.slot_row.numel() >= 2  # the hub row was split
    if case == "skewed_sources":
        items = ta.work_items_by_source(index)
        assert items.slot_row.numel() >= 2  # the hub's source row too


def test_split_rows_with_duplicates_match_sparse(monkeypatch):
    monkeypatch.setattr(ta, "ROW_SPLIT", 16)
    edge_index = _skewed(num_nodes=30, hub_degree=50, seed=1)
    t = _inputs(30, 30, edge_index.size(1))
    out, alpha, grads = _run(t, edge_index, "triton")
    s_out, s_alpha, s_grads = _run(t, edge_index, "sparse")
    _close(out, s_out, 1e-5)
    _close(alpha, s_alpha, 1e-5)
    for name in t:
        _close(grads[name], s_grads[name], 1e-5)


def test_empty_rows_masked_rows_and_empty_graph():
    edge_index = torch.tensor([[0, 1, 2, 3, 1], [1, 1, 2, 2, 4]])
    t = _inputs(6, 6, 5)
    with torch.no_grad():
        t["bias"][2:4] = float("-inf")  # every edge into node 2 masked
    out, alpha, grads = _run(t, edge_index, "triton")
    s_out, s_alpha, s_grads = _run(t, edge_index, "sparse")
    for node in (0, 2, 3, 5):
        assert torch.equal(out[node], torch.zeros_like(out[node]))
    assert torch.equal(alpha[2:4], torch.zeros_like(alpha[2:4]))
    _close(out, s_out, 1e-5)
    _close(alpha, s_alpha, 1e-5)
    for name, g in grads.items():
        assert torch.isfinite(g).all(), name
        _close(g, s_grads[name], 1e-5)
    empty = torch.empty(2, 0, dtype=torch.long)
    t = _inputs(4, 4, 0)
    out, alpha, grads = _run(t, empty, "triton")
    assert torch.equal(out, torch.zeros_like(out)) and alpha.shape == (0, H)
    assert all(torch.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_within_tolerance(dtype):
    edge_index = _graph(16, 16, 60, seed=2)
    t32 = _inputs(16, 16, 60)
    t = {k: v.detach().to(dtype).requires_grad_() for k, v in t32.items()}
    out, alpha, grads = _run(t, edge_index, "triton")
    assert out.dtype == alpha.dtype == dtype
    # the reference from the same (rounded) inputs, in float64
    ref_out, ref_alpha, d = _dense_reference(t, edge_index, 16)
    ref_grads = dict(zip(d, torch.autograd.grad(_loss(ref_out, ref_alpha),
                                                list(d.values()))))
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    _close(out, ref_out, tol)
    _close(alpha, ref_alpha, tol)
    for name in t:
        assert grads[name].dtype == dtype
        _close(grads[name], ref_grads[name], tol)


def test_plain_call_without_weights_or_edge_terms():
    edge_index = _graph(10, 10, 30, seed=4)
    t = _inputs(10, 10, 30, edge_terms=False, bias=False, tensor_scale=False)
    out, alpha, grads = _run(t, edge_index, "triton", need_weights=False)
    assert alpha is None
    s_out, _, s_grads = _run(t, edge_index, "sparse", need_weights=False)
    _close(out, s_out, 1e-5)
    for name in t:
        _close(grads[name], s_grads[name], 1e-5)


def test_unsupported_options_are_refused_with_the_reason():
    """An explicit backend that cannot compute a call raises, naming what
    it does not support (one rule for every backend; ``auto`` picks one
    that can)."""
    edge_index = _graph(10, 10, 30, seed=5)
    q, k, v = (torch.randn(10, H, C) for _ in range(3))
    for kwargs, reason in ((dict(reduce=["sum", "max"]), "reduce="),
                           (dict(normalization="relu"), "normalization="),
                           (dict(top_k=2), "sparsification"),
                           (dict(dropout_p=0.5), "attention dropout")):
        with pytest.raises(ValueError, match=f"backend='triton' cannot be "
                           f"used here: .*{reason}"):
            edge_attention(q, k, v, edge_index, backend="triton", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        edge_attention(q, k, v, edge_index, backend="triton", dropout_p=0.5,
                       training=False)


def test_layer_with_triton_backend_matches_sparse():
    x = torch.randn(15, 12)
    edge_index = _graph(15, 15, 50, seed=6)
    edge_attr = torch.randn(50, 3)
    conv = MultiHeadAttentionConv(12, 4, heads=2, edge_dim=3, beta=True)
    outs, grads = {}, {}
    for backend in ("sparse", "triton"):
        conv.backend = backend
        conv.zero_grad()
        out, (_, alpha) = conv(x, edge_index, edge_attr,
                               return_attention_weights=True)
        (out.sum() + alpha.square().sum()).backward()
        outs[backend] = (out, alpha)
        grads[backend] = [p.grad.clone() for p in conv.parameters()]
    for a, b in zip(outs["triton"], outs["sparse"]):
        _close(a, b, 1e-5)
    for a, b in zip(grads["triton"], grads["sparse"]):
        _close(a, b, 1e-5)


@pytest.mark.parametrize("logit", [1e4, -1e4])
def test_large_logits_and_a_single_self_loop(logit):
    """The rest of tests/test_numerical_edge_cases.py's table on this
    backend: +-1e4 logits give the sparse path's one-hot weights, and one
    node with a self-loop gets alpha = 1 and its own value."""
    edge_index = torch.tensor([[0, 1, 2, 3, 1, 0], [1, 1, 2, 2, 4, 1]])
    t = _inputs(6, 6, 6, edge_terms=False, bias=False, tensor_scale=False)
    with torch.no_grad():
        t["query"].mul_(logit)
    out, alpha, grads = _run(t, edge_index, "triton")
    s_out, s_alpha, s_grads = _run(t, edge_index, "sparse")
    assert torch.isfinite(out).all() and torch.isfinite(alpha).all()
    _close(out, s_out, 1e-5)
    # float32 scores near 1e4 carry ~1e-3 round-off; the two kernels sum
    # them in other orders
    _close(alpha, s_alpha, 1e-3)
    for name, g in grads.items():
        assert torch.isfinite(g).all(), name
    loop = torch.tensor([[0], [0]])
    t = _inputs(1, 1, 1, edge_terms=False, bias=False, tensor_scale=False)
    out, alpha, _ = _run(t, loop, "triton")
    assert torch.equal(alpha, torch.ones_like(alpha))
    _close(out, t["value"], 1e-6)
