"""Dense reference implementations used by the tests (written from the
formulas, independent of the package's sparse kernels)."""
import torch
import torch.nn.functional as F


def random_simple_graph(num_nodes, num_edges, seed=0, self_loops=True,
                        isolated=2):
    """Random graph without duplicate edges; the last ``isolated`` nodes
    receive no edges."""
    gen = torch.Generator().manual_seed(seed)
    n_conn = num_nodes - isolated
    src = torch.randint(0, num_nodes, (num_edges, ), generator=gen)
    dst = torch.randint(0, n_conn, (num_edges, ), generator=gen)
    ei = torch.unique(torch.stack([src, dst]), dim=1)
    if self_loops:
        loops = torch.arange(0, n_conn, 2)
        ei = torch.unique(torch.cat([ei, torch.stack([loops, loops])], 1),
                          dim=1)
    return ei


def adjacency(edge_index, num_dst, num_src):
    """``A[i, j] = True`` for every edge j -> i."""
    adj = torch.zeros(num_dst, num_src, dtype=torch.bool)
    adj[edge_index[1], edge_index[0]] = True
    return adj


def dense_attention_weights(q, k, adj, scale):
    """``[H, N_dst, N_src]`` softmax over each row's neighbours."""
    scores = torch.einsum("ihc,jhc->hij", q, k) * scale
    scores = scores.masked_fill(~adj, float("-inf"))
    return torch.softmax(scores, dim=-1).nan_to_num(0.0)


def dense_aggregate(value, weights, adj, reduce):
    """``value [N_src, H, C]``, ``weights [H, N_dst, N_src]`` -> ``[N_dst, H,
    C]`` for one reduction, by explicit masked dense computation."""
    w = weights.permute(1, 0, 2).unsqueeze(-1)  # [N_dst, H, N_src, 1]
    v = value.permute(1, 0, 2).unsqueeze(0)  # [1, H, N_src, C]
    total = w.sum(2)
    wsum = (w * v).sum(2)
    mean = torch.where(total != 0, wsum / total.clamp_min(1e-30), 0.0)
    if reduce == "sum":
        return wsum
    if reduce == "mean":
        return mean
    if reduce in ("var", "std"):
        second = torch.where(total != 0, (w * v * v).sum(2) /
                             total.clamp_min(1e-30), 0.0)
        var = (second - mean**2).clamp_min(0)
        return var if reduce == "var" else var.sqrt()
    keep = (w > 0) & adj.unsqueeze(1).unsqueeze(-1)
    if reduce == "max":
        out = v.expand(keep.size(0), -1, -1, -1).masked_fill(~keep, -1e30)
        out = out.amax(2)
    else:
        out = v.expand(keep.size(0), -1, -1, -1).masked_fill(~keep, 1e30)
        out = out.amin(2)
    has = keep.any(2)
    return torch.where(has, out, 0.0)


def headwise_linear(x, lin):
    return torch.stack([x[:, h] @ lin.weight[h] + lin.bias[h]
                        for h in range(x.size(1))], dim=1)


def headwise_mlp(x, mlp):
    """The per-head MLP evaluated one head at a time."""
    outs = []
    for h in range(x.size(1)):
        y = x[:, h] @ mlp.lin1.weight[h] + mlp.lin1.bias[h]
        if mlp.norm is not None:
            y = F.layer_norm(y, y.shape[-1:], mlp.norm.weight[h],
                             mlp.norm.bias[h], mlp.norm.eps)
        y = F.silu(y)
        outs.append(y @ mlp.lin2.weight[h] + mlp.lin2.bias[h])
    return torch.stack(outs, dim=1)
