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
