"""GIN- and PNA-Attention against dense implementations of their formulas,
using the layers' own parameters."""
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data

from dense_reference import (adjacency, dense_aggregate,
                             dense_attention_weights, headwise_linear,
                             headwise_mlp, random_simple_graph)
from tgnn_transformers import GINAttentionConv, PNAAttentionConv
from tgnn_transformers.nn import degree_histogram
from tgnn_transformers.transforms import SequenceToGraph

N, F_IN, C, H = 11, 6, 4, 3


def projections(conv, x):
    q = conv.lin_query(x).view(-1, conv.heads, conv.out_channels)
    k = conv.lin_key(x).view(-1, conv.heads, conv.out_channels)
    v = conv.lin_value(x).view(-1, conv.heads, conv.out_channels)
    return q, k, v


def finish(conv, h):
    out = h.reshape(h.size(0), -1) if conv.concat else h.mean(1)
    return conv.out_proj(out) if conv.out_proj is not None else out


def gin_reference(conv, x, edge_index):
    q, k, v = projections(conv, x)
    adj = adjacency(edge_index, x.size(0), x.size(0))
    scale = conv.out_channels**-0.5
    if conv.sharpen is not None:
        scale = conv.sharpen * scale
    weights = dense_attention_weights(q, k, adj, scale)
    agg = dense_aggregate(v, weights, adj, "sum")
    h = (1 + conv.eps).view(1, -1, 1) * v + agg
    return finish(conv, headwise_mlp(h, conv.mlp))


def pna_reference(conv, x, edge_index):
    q, k, v = projections(conv, x)
    adj = adjacency(edge_index, x.size(0), x.size(0))
    weights = dense_attention_weights(q, k, adj, conv.out_channels**-0.5)
    deg = adj.sum(1).clamp(min=1).to(x.dtype)
    log_deg = torch.log(deg + 1).view(-1, 1, 1)
    scaler = {"identity": 1.0, "amplification": log_deg / conv.delta,
              "attenuation": conv.delta / log_deg}
    feats = [v] if conv.include_self else []
    for s in conv.scalers:
        for a in conv.aggregators:
            feats.append(dense_aggregate(v, weights, adj, a) * scaler[s])
    h = torch.cat(feats, dim=-1)
    if conv.mixer_kind == "linear":
        h = headwise_linear(h, conv.mixer)
    else:
        h = headwise_mlp(h, conv.mixer)
    return finish(conv, h)


def make_gin(**kw):
    conv = GINAttentionConv(F_IN, C, heads=H, root_weight=False,
                            out_proj=True, **kw)
    with torch.no_grad():  # move eps and the sharpening off their init
        conv.eps.copy_(torch.tensor([0.3, -0.2, 0.5]))
        if conv.sharpen is not None:
            conv.sharpen.fill_(1.7)
    return conv.double()


def make_pna(edge_index, **kw):
    deg = degree_histogram([edge_index], [N])
    return PNAAttentionConv(F_IN, C, heads=H, deg=deg, root_weight=False,
                            out_proj=True, **kw).double()


GIN_CASES = [dict(), dict(sharpen=False, mlp_multiplier=2.0),
             dict(concat=False, mlp_norm=None)]
PNA_CASES = [dict(), dict(aggregators=["sum", "mean", "max", "min", "var",
                                       "std"], mixer="mlp"),
             dict(include_self=False, scalers=["identity"])]


@pytest.mark.parametrize("kw", GIN_CASES)
def test_gin_matches_dense_reference(kw):
    edge_index = random_simple_graph(N, 40)
    x = torch.randn(N, F_IN, dtype=torch.float64)
    conv = make_gin(**kw)
    torch.testing.assert_close(conv(x, edge_index),
                               gin_reference(conv, x, edge_index))


@pytest.mark.parametrize("kw", PNA_CASES)
def test_pna_matches_dense_reference(kw):
    edge_index = random_simple_graph(N, 40)
    x = torch.randn(N, F_IN, dtype=torch.float64)
    conv = make_pna(edge_index, **kw)
    torch.testing.assert_close(conv(x, edge_index),
                               pna_reference(conv, x, edge_index))


@pytest.mark.parametrize("cls", ["gin", "pna"])
@pytest.mark.parametrize("pattern", ["full", "causal"])
def test_token_graphs_dense_and_sparse_paths(cls, pattern):
    t = SequenceToGraph(pattern)
    batch = Batch.from_data_list([t(Data(x=torch.randn(n, F_IN)))
                                  for n in (4, 1, 6)])
    batch.x = batch.x.double()
    if cls == "gin":
        conv = make_gin()
        reference = gin_reference
    else:
        conv = make_pna(batch.edge_index)
        conv.delta = 1.3
        reference = pna_reference
    outs = []
    for backend in ["sparse", "auto"]:
        conv.backend = backend
        x = batch.x.clone().requires_grad_()
        out = conv(x, batch.edge_index, batch=batch.batch)
        outs.append((out, torch.autograd.grad(out.sum(), x)[0]))
    ref = reference(conv, batch.x, batch.edge_index)
    torch.testing.assert_close(outs[0][0], ref)
    torch.testing.assert_close(outs[1][0], ref)
    torch.testing.assert_close(outs[0][1], outs[1][1])


def test_gin_dense_backend_really_runs_dense():
    t = SequenceToGraph("full")
    batch = Batch.from_data_list([t(Data(x=torch.randn(n, F_IN)))
                                  for n in (3, 5)])
    conv = GINAttentionConv(F_IN, C, heads=H, backend="dense")
    assert conv(batch.x, batch.edge_index, batch=batch.batch).shape == (8, 12)


def test_gin_relu_scores():
    edge_index = random_simple_graph(N, 40)
    x = torch.randn(N, F_IN, dtype=torch.float64)
    conv = make_gin(normalization="relu")
    q, k, v = projections(conv, x)
    adj = adjacency(edge_index, N, N)
    scores = torch.einsum("ihc,jhc->hij", q, k) * conv.sharpen / C**0.5
    weights = F.relu(scores) * adj
    h = (1 + conv.eps).view(1, -1, 1) * v + dense_aggregate(v, weights, adj,
                                                            "sum")
    ref = finish(conv, headwise_mlp(h, conv.mlp))
    torch.testing.assert_close(conv(x, edge_index), ref)


def test_gin_top_k_and_threshold_give_real_subgraph():
    edge_index = random_simple_graph(N, 60)
    x = torch.randn(N, F_IN, dtype=torch.float64)
    full = make_gin()
    _, (_, alpha_full) = full(x, edge_index, return_attention_weights=True)
    conv = make_gin(top_k=2)
    conv.load_state_dict(full.state_dict())
    _, (kept, alpha) = conv(x, edge_index, return_attention_weights=True)
    assert kept.size(1) < edge_index.size(1)
    per_head = torch.stack([torch.bincount(kept[1][alpha[:, h] > 0],
                                           minlength=N) for h in range(H)])
    assert int(per_head.max()) <= 2
    # Reference: the kept weights are the 2 largest of each target and head.
    for h in range(H):
        for i in range(N):
            incoming = alpha_full[edge_index[1] == i, h]
            expected = incoming.sort(descending=True).values[:2]
            got = alpha[(kept[1] == i) & (alpha[:, h] > 0), h]
            torch.testing.assert_close(got.sort(descending=True).values,
                                       expected)
    conv = make_gin(threshold=0.2)
    conv.load_state_dict(full.state_dict())
    _, (kept, alpha) = conv(x, edge_index, return_attention_weights=True)
    assert ((alpha == 0) | (alpha >= 0.2)).all()
    assert kept.size(1) == int((alpha_full >= 0.2).any(1).sum())


@pytest.mark.parametrize("cls", ["gin", "pna"])
def test_permutation_equivariance_and_batch_independence(cls):
    edge_index = random_simple_graph(N, 40)
    conv = (make_gin() if cls == "gin" else make_pna(edge_index)).eval()
    x = torch.randn(N, F_IN, dtype=torch.float64)
    perm = torch.randperm(N)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(N)
    out = conv(x, edge_index)
    torch.testing.assert_close(conv(x[perm], inv[edge_index]), out[perm])
    # Two disjoint copies do not interact.
    x2 = torch.cat([x, torch.randn(N, F_IN, dtype=torch.float64)])
    ei2 = torch.cat([edge_index, edge_index + N], dim=1)
    torch.testing.assert_close(conv(x2, ei2)[:N], out)


def test_gradients_reach_eps_sharpen_and_every_mlp_parameter():
    edge_index = random_simple_graph(N, 40)
    conv = GINAttentionConv(F_IN, C, heads=H)
    conv(torch.randn(N, F_IN), edge_index).pow(2).sum().backward()
    for name, p in conv.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert {"eps", "sharpen", "mlp.lin1.weight", "mlp.norm.weight",
            "mlp.lin2.bias"} <= {n for n, _ in conv.named_parameters()}


def test_pna_gradients_reach_mixer():
    edge_index = random_simple_graph(N, 40)
    conv = make_pna(edge_index, mixer="mlp").float()
    conv(torch.randn(N, F_IN), edge_index).pow(2).sum().backward()
    for name, p in conv.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bipartite_and_edge_features():
    edge_index = torch.stack([torch.randint(0, 7, (20, )),
                              torch.randint(0, 5, (20, ))])
    edge_attr = torch.randn(20, 2)
    x = (torch.randn(7, 6), torch.randn(5, 3))
    gin = GINAttentionConv((6, 3), C, heads=H, edge_dim=2)
    assert gin(x, edge_index, edge_attr).shape == (5, C * H)
    pna = PNAAttentionConv((6, 6), C, heads=H, edge_dim=2, delta=1.0)
    x = (torch.randn(7, 6), torch.randn(5, 6))
    assert pna(x, edge_index, edge_attr).shape == (5, C * H)


def test_bad_arguments():
    with pytest.raises(ValueError, match="deg="):
        PNAAttentionConv(4, 2)
    with pytest.raises(ValueError, match="unknown aggregator"):
        PNAAttentionConv(4, 2, aggregators=["median"], delta=1.0)
    with pytest.raises(ValueError, match="unknown scaler"):
        PNAAttentionConv(4, 2, scalers=["log"], delta=1.0)
    with pytest.raises(ValueError, match="top_k"):
        GINAttentionConv(4, 2, top_k=0)
    with pytest.raises(ValueError, match="normalization"):
        GINAttentionConv(4, 2, normalization="sparsemax")
    with pytest.warns(UserWarning, match="hidden width of 1"):
        conv = GINAttentionConv(4, 2)
    assert "sharpen=True" in repr(conv)
