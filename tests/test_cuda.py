"""The kernels on CUDA agree with the CPU (skipped without a GPU)."""
import pytest
import torch
from torch_geometric.data import Batch, Data

from tgnn_transformers import (GINAttentionConv, MultiHeadAttentionConv,
                               PNAAttentionConv)
from tgnn_transformers.transforms import SequenceToGraph

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU")


@pytest.mark.parametrize("cls", [MultiHeadAttentionConv, GINAttentionConv,
                                 PNAAttentionConv])
def test_sparse_kernel_on_cuda_matches_cpu(cls):
    kwargs = {"delta": 1.0} if cls is PNAAttentionConv else {}
    conv = cls(16, 8, heads=4, edge_dim=3, **kwargs).eval()
    x = torch.randn(200, 16, requires_grad=True)
    edge_index = torch.randint(0, 200, (2, 2000))
    edge_attr = torch.randn(2000, 3)
    out = conv(x, edge_index, edge_attr)
    (gx, ) = torch.autograd.grad(out.sum(), x)
    conv_cuda = conv.cuda()
    x_cuda = x.detach().cuda().requires_grad_()
    out_cuda = conv_cuda(x_cuda, edge_index.cuda(), edge_attr.cuda())
    (gx_cuda, ) = torch.autograd.grad(out_cuda.sum(), x_cuda)
    torch.testing.assert_close(out_cuda.cpu(), out, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gx_cuda.cpu(), gx, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pattern", ["full", "causal"])
def test_dense_path_on_cuda_matches_sparse(pattern):
    t = SequenceToGraph(pattern)
    batch = Batch.from_data_list([t(Data(x=torch.randn(n, 32)))
                                  for n in (17, 64, 5)]).cuda()
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True).cuda().eval()
    outs = {}
    for backend in ("sparse", "dense"):
        conv = MultiHeadAttentionConv.from_torch(mha, backend=backend)
        outs[backend] = conv(batch.x, batch.edge_index, batch=batch.batch)
    torch.testing.assert_close(outs["dense"], outs["sparse"], atol=1e-4,
                               rtol=1e-4)


# --------------------------------------------------------------------------
# the Triton kernel and mixed precision on a real GPU
# --------------------------------------------------------------------------

def _triton():
    return pytest.importorskip("triton")


@pytest.mark.parametrize("hubs", ["targets", "sources"])
@pytest.mark.parametrize("backward", ["by_source", "atomic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16,
                                   torch.float16])
def test_triton_kernel_on_cuda_matches_sparse(dtype, backward, hubs,
                                              monkeypatch):
    _triton()
    from tgnn_transformers.functional import edge_attention
    from tgnn_transformers.functional import triton_attention
    monkeypatch.setattr(triton_attention, "BACKWARD", backward)
    torch.manual_seed(0)
    n, e = 3000, 40000
    # a power-law-ish target distribution: some rows longer than ROW_SPLIT
    dst = torch.multinomial(1.0 / torch.arange(1, n + 1.0)**0.9, e,
                            replacement=True)
    edge_index = torch.stack([torch.randint(0, n, (e, )), dst])
    if hubs == "sources":  # the long rows split in the by-source pass
        edge_index = edge_index.flip(0)
    edge_index = edge_index.cuda()
    make = lambda *s: torch.randn(*s, device="cuda").to(  # noqa: E731
        dtype).requires_grad_()
    q, k, v = make(n, 4, 32), make(n, 4, 32), make(n, 4, 32)
    ek, ev, bias = make(e, 4, 32), make(e, 4, 32), make(e, 4)
    results = {}
    for backend in ("sparse", "triton"):
        res = edge_attention(q, k, v, edge_index, edge_key=ek, edge_value=ev,
                             bias=bias, need_weights=True, backend=backend)
        loss = (res.out.float().square().sum() +
                res.alpha.float().square().sum())
        grads = torch.autograd.grad(loss, [q, k, v, ek, ev, bias])
        results[backend] = (res.out, res.alpha, *grads)
    tol = {torch.float32: 1e-4, torch.bfloat16: 3e-2,
           torch.float16: 5e-3}[dtype]
    for a, b in zip(results["triton"], results["sparse"]):
        scale = b.float().abs().max().clamp_min(1.0)
        assert float((a.float() - b.float()).abs().max() / scale) < tol


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_convs_train_under_cuda_autocast(dtype):
    torch.manual_seed(0)
    x = torch.randn(500, 16, device="cuda")
    edge_index = torch.randint(0, 500, (2, 4000), device="cuda")
    edge_attr = torch.randn(4000, 3, device="cuda")
    for cls in (MultiHeadAttentionConv, GINAttentionConv, PNAAttentionConv):
        kwargs = {"delta": 1.0} if cls is PNAAttentionConv else {}
        conv = cls(16, 8, heads=4, edge_dim=3, **kwargs).cuda()
        with torch.autocast("cuda", dtype=dtype):
            out = conv(x, edge_index, edge_attr)
        out.float().sum().backward()
        assert torch.isfinite(out.float()).all()
        assert all(p.grad is not None and torch.isfinite(p.grad).all()
                   for p in conv.parameters() if p.requires_grad)


# --------------------------------------------------------------------------
# FlexAttention's backward, the max/min aggregation and the CLI on a GPU
# --------------------------------------------------------------------------

@pytest.mark.parametrize("pattern,kwargs", [
    ("full", {}), ("causal", {}), ("window", {"window": 3}),
    ("dilated", {"window": 2, "dilation": 3})])
def test_flex_forward_and_backward_on_cuda_match_sparse(pattern, kwargs):
    pytest.importorskip("torch.nn.attention.flex_attention")
    batch = _token_batch(pattern, **kwargs)
    q, k, v = (torch.randn(batch.num_nodes, 2, 16, device="cuda",
                           requires_grad=True) for _ in range(3))
    _assert_backend_matches_sparse("flex", q, k, v, batch)


def _token_batch(pattern, **kwargs):
    to_graph = SequenceToGraph(pattern, **kwargs)
    return Batch.from_data_list([to_graph(Data(x=torch.randn(n, 4)))
                                 for n in (150, 37, 200)]).cuda()


def _assert_backend_matches_sparse(backend, q, k, v, batch):
    """Output and q/k/v gradients of ``backend`` against the sparse path."""
    from tgnn_transformers.functional import edge_attention
    results = {}
    for name in (backend, "sparse"):
        out = edge_attention(q, k, v, batch.edge_index, batch=batch.batch,
                             backend=name).out
        results[name] = (out, *torch.autograd.grad(
            out.square().sum(), (q, k, v)))
    for a, b in zip(results[backend], results["sparse"]):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("channels", [16, 8])
def test_auto_on_cuda_takes_flex_for_window_batches(channels, monkeypatch):
    """``auto`` runs FlexAttention for a window batch with heads of >= 16
    channels, the Triton kernel below that (compiled FlexAttention refuses
    them); both match the sparse path, gradients included."""
    from tgnn_transformers.functional.backends import flex
    calls = []
    real = flex.flex_attention_padded
    monkeypatch.setattr(flex, "flex_attention_padded",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    batch = _token_batch("window", window=4)
    q, k, v = (torch.randn(batch.num_nodes, 2, channels, device="cuda",
                           requires_grad=True) for _ in range(3))
    _assert_backend_matches_sparse("auto", q, k, v, batch)
    assert len(calls) == (1 if channels >= 16 else 0)


@pytest.mark.parametrize("reduce", [("max", "min"), ("mean", "std")])
def test_attention_aggregate_on_cuda_matches_cpu(reduce):
    from tgnn_transformers.functional import attention_aggregate
    torch.manual_seed(0)
    n, e = 400, 5000
    # distinct edges: a tie between duplicates may go to either copy
    pair = torch.randperm(n * n)[:e]
    edge_index = torch.stack([pair // n, pair % n])
    value = torch.randn(n, 4, 8, requires_grad=True)
    alpha = torch.rand(e, 4)
    edge_value = torch.randn(e, 4, 8, requires_grad=True)
    results = {}
    for device in ("cpu", "cuda"):
        v = value.detach().to(device).requires_grad_()
        ev = edge_value.detach().to(device).requires_grad_()
        outs = attention_aggregate(v, alpha.to(device),
                                   edge_index.to(device), n, reduce=reduce,
                                   edge_value=ev)
        grads = torch.autograd.grad(outs.square().sum(), (v, ev))
        results[device] = [t.cpu() for t in (outs, *grads)]
    for a, b in zip(results["cuda"], results["cpu"]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("reduce", [("max", "min"), ("mean", "std"),
                                    ("sum", "mean", "min", "max", "var")])
def test_one_pass_triton_aggregation_on_cuda_matches_cpu(reduce):
    # Without edge terms, CUDA aggregates in one Triton pass; the CPU
    # composes CSR products.  A hub row of 3000 edges spans many blocks.
    from tgnn_transformers.functional import attention_aggregate
    from tgnn_transformers.functional import triton_aggregate as tagg
    torch.manual_seed(0)
    n, e = 400, 5000
    pair = torch.randperm(n * n)[:e]
    edge_index = torch.stack([pair // n, pair % n])
    edge_index = torch.cat([edge_index, torch.stack([
        torch.randperm(n).repeat(8)[:3000], torch.zeros(3000,
                                                        dtype=torch.long)])],
        dim=1)
    value = torch.randn(n, 4, 32)
    alpha = torch.rand(edge_index.size(1), 4)
    alpha[::7] = 0.0
    assert tagg.triton_aggregate_available(value.cuda())
    results = {}
    for device in ("cpu", "cuda"):
        v = value.to(device).requires_grad_()
        a = alpha.to(device).requires_grad_()
        outs = attention_aggregate(v, a, edge_index.to(device), n,
                                   reduce=reduce)
        grads = torch.autograd.grad(outs.square().sum(), (v, a),
                                    allow_unused=True)
        results[device] = [None if t is None else t.cpu()
                           for t in (outs, *grads)]
    for a, b in zip(results["cuda"], results["cpu"]):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cli_trains_on_cuda(precision, tmp_path, data_mirror, monkeypatch):
    import json

    from tgnn_transformers.cli import main
    monkeypatch.setenv("TGNN_DATA_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("TGNN_DATA_MIRROR", str(data_mirror))
    out = tmp_path / "out"
    assert main(["train", "--task", "node", "--dataset", "cora", "--model",
                 "gin-attention", "--epochs", "3", "--hidden", "16",
                 "--heads", "2", "--device", "cuda", "--precision",
                 precision, "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["device"]["device"].startswith("cuda")
    assert metrics["device"]["device_name"] == torch.cuda.get_device_name()
    assert metrics["precision"] == precision
    assert 0.0 <= metrics["test"]["mean"] <= 1.0
