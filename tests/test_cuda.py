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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16,
                                   torch.float16])
def test_triton_kernel_on_cuda_matches_sparse(dtype):
    _triton()
    from tgnn_transformers.functional import edge_attention
    torch.manual_seed(0)
    n, e = 3000, 40000
    # a power-law-ish target distribution: some rows longer than ROW_SPLIT
    dst = torch.multinomial(1.0 / torch.arange(1, n + 1.0)**0.9, e,
                            replacement=True)
    edge_index = torch.stack([torch.randint(0, n, (e, )), dst]).cuda()
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
