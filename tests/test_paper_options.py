"""The paper-faithful options of GIN- and PNA-Attention (issue 13, item 5).

Every option is checked against an independent dense reference written
here: one ``[N, N]`` attention matrix per head, ``A[i, j]`` the weight of
the edge ``j -> i``, and the formulas of the published code ("xgpt",
Graph-Aware-Transformers: ``GINLayer``, ``LlamaAttentionGIN``,
``LlamaAttentionPNA``) with its PNA max taken over the neighbours.  Also:
the defaults are today's layer, the ``paper`` preset resolves to the
documented configuration, and bad values raise naming the argument, what
it accepts and what it got.
"""
import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from tgnn_transformers import functional
from tgnn_transformers.adapters import sparse_gin
from tgnn_transformers.inspect import graphs as inspect_graphs
from tgnn_transformers.models import get_model
from tgnn_transformers.models.registry import OPTIONS, PAPER_PRESETS
from tgnn_transformers.nn import GINAttentionConv, PNAAttentionConv
from tgnn_transformers.nn.headwise import HeadwiseRMSNorm

H, C = 2, 4
N = 7


# --------------------------------------------------------------------------
# The dense reference
# --------------------------------------------------------------------------

def graph(seed=0, n=N, p=0.5):
    """A random directed graph with every node of in-degree >= 2 (so the
    sparsifications have something to choose), no duplicate edges."""
    g = torch.Generator().manual_seed(seed)
    adj = torch.rand(n, n, generator=g) < p  # adj[i, j]: edge j -> i
    for i in range(n):
        adj[i, (i + 1) % n] = adj[i, (i + 2) % n] = True
    dst, src = adj.nonzero(as_tuple=True)
    return torch.stack([src, dst]), adj


def features(seed=1, n=N, width=H * C):
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


def linear(lin, x):
    out = x @ lin.weight.t()
    return out + lin.bias if lin.bias is not None else out


def dense_scores(conv, x, adj):
    """``[H, N, N]`` scaled (and sharpened) dot products, ``-inf`` off the
    edges."""
    q = linear(conv.lin_query, x).view(-1, conv.heads, conv.out_channels)
    k = linear(conv.lin_key, x).view(-1, conv.heads, conv.out_channels)
    s = torch.einsum("ihc,jhc->hij", q, k) / math.sqrt(conv.out_channels)
    if getattr(conv, "sharpen", None) is not None:
        s = s * conv.sharpen
    return s.masked_fill(~adj, float("-inf"))


def dense_weights(scores, adj, normalization):
    if normalization == "softmax":
        a = torch.softmax(scores, dim=-1)
    elif normalization == "relu":
        a = F.relu(scores)
    else:  # raw
        a = scores
    return torch.where(adj, a, torch.zeros_like(a))


def dense_threshold(a, adj, mode, threshold=None, fraction=None):
    """The published code's ``process_adjacency_with_modes`` on the
    graph's edges (``top_k`` over each node's neighbours)."""
    if mode == "shifted-relu":
        out = F.relu(a - threshold)
    elif mode == "binary":
        out = (a > threshold).to(a.dtype)
    elif mode == "top-k-fraction":
        out = torch.zeros_like(a)
        degree = adj.sum(-1)
        for i in range(a.size(1)):
            k = max(1, int(fraction * int(degree[i])))
            row = a[:, i].masked_fill(~adj[i], float("-inf"))
            idx = row.topk(k, dim=-1).indices
            out[:, i].scatter_(-1, idx, 1.0)
    else:
        out = a
    return torch.where(adj, out, torch.zeros_like(out))


def dense_values(conv, x):
    if conv.lin_value is None:  # value_proj=False: the features' slices
        return x.view(-1, conv.heads, conv.out_channels)
    return linear(conv.lin_value, x).view(-1, conv.heads, conv.out_channels)


def dense_mlp(mlp, x, norm):
    """Per head, one at a time: Linear -> norm -> SiLU -> Linear."""
    outs = []
    for h in range(x.size(1)):
        y = x[:, h] @ mlp.lin1.weight[h] + mlp.lin1.bias[h]
        if norm == "rms":
            y = y / torch.sqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5)
            y = y * mlp.norm.weight[h]
        elif norm == "layer":
            y = F.layer_norm(y, y.shape[-1:], eps=1e-5)
            y = y * mlp.norm.weight[h] + mlp.norm.bias[h]
        y = F.silu(y)
        outs.append(y @ mlp.lin2.weight[h] + mlp.lin2.bias[h])
    return torch.stack(outs, dim=1)


def dense_gin(conv, x, adj, *, normalization="softmax", mode="drop",
              threshold=None, fraction=None, form="one-plus-eps",
              norm="layer"):
    a = dense_weights(dense_scores(conv, x, adj), adj, normalization)
    a = dense_threshold(a, adj, mode, threshold, fraction)
    v = dense_values(conv, x)
    agg = torch.einsum("hij,jhc->ihc", a, v)
    eps = conv.eps.view(1, -1, 1)
    own = eps * v if form == "eps" else (1 + eps) * v
    out = dense_mlp(conv.mlp, own + agg, norm)
    return out.reshape(out.size(0), -1)


def dense_pna(conv, x, adj, aggregators, *, normalization="softmax"):
    """The published ``LlamaAttentionPNA`` aggregators, max over the
    neighbours ``j`` with ``A[i, j] > 0``."""
    a = dense_weights(dense_scores(conv, x, adj), adj, normalization)
    v = dense_values(conv, x)
    deg = a.sum(-1).unsqueeze(-1)  # [H, N, 1]
    deg = torch.where(deg == 0, torch.ones_like(deg), deg)
    total = torch.einsum("hij,jhc->hic", a, v)
    mean = total / deg
    parts = {
        "sum": total,
        "mean": mean,
        "var": (torch.einsum("hij,jhc->hic", a, v * v) / deg -
                mean**2).clamp_min(0),
    }
    # max over the neighbours: v[j] for the valid j of row i (the
    # published code expands v[i] here instead -- its defect).
    neighbour = v.permute(1, 0, 2).unsqueeze(1).expand(-1, x.size(0), -1, -1)
    valid = (a > 0).unsqueeze(-1)
    best = neighbour.masked_fill(~valid, float("-inf")).max(dim=2).values
    parts["max"] = best.masked_fill(torch.isinf(best), 0.0)
    feats = torch.cat([parts[name] for name in aggregators], dim=-1)
    feats = feats.permute(1, 0, 2)  # [N, H, A * C]
    return feats


def eval_conv(cls, **kwargs):
    torch.manual_seed(0)
    kwargs.setdefault("root_weight", False)
    conv = cls(H * C, C, heads=H, **kwargs).eval()
    return conv


# --------------------------------------------------------------------------
# GIN-Attention
# --------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["one-plus-eps", "eps"])
def test_gin_form_matches_dense_reference(form):
    edge_index, adj = graph()
    x = features()
    conv = eval_conv(GINAttentionConv, gin_form=form, eps=0.3)
    expected = dense_gin(conv, x, adj, form=form)
    torch.testing.assert_close(conv(x, edge_index), expected, atol=1e-5,
                               rtol=1e-5)


def test_eps_form_differs_from_one_plus_eps_by_the_own_value():
    edge_index, _ = graph()
    x = features()
    ours = eval_conv(GINAttentionConv, gin_form="one-plus-eps",
                     mlp_norm=None)
    paper = eval_conv(GINAttentionConv, gin_form="eps", mlp_norm=None)
    paper.load_state_dict(ours.state_dict())
    # (1 + eps) v = eps' v with eps' = 1 + eps
    with torch.no_grad():
        paper.eps.add_(1.0)
    torch.testing.assert_close(paper(x, edge_index), ours(x, edge_index))


@pytest.mark.parametrize("norm", ["layer", "rms", None])
def test_mlp_norm_matches_dense_reference(norm):
    edge_index, adj = graph()
    x = features()
    conv = eval_conv(GINAttentionConv, mlp_norm=norm, mlp_multiplier=1.0)
    with torch.no_grad():  # a gain that is not all ones
        if conv.mlp.norm is not None:
            conv.mlp.norm.weight.uniform_(0.5, 1.5)
    if norm == "rms":
        assert isinstance(conv.mlp.norm, HeadwiseRMSNorm)
        assert not hasattr(conv.mlp.norm, "bias")
    expected = dense_gin(conv, x, adj, norm=norm)
    torch.testing.assert_close(conv(x, edge_index), expected, atol=1e-5,
                               rtol=1e-5)


def test_rms_norm_agrees_with_torch_rmsnorm_per_head():
    norm = HeadwiseRMSNorm(H, 5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(6, H, 5)
    for h in range(H):
        ref = torch.nn.RMSNorm(5, eps=1e-5)
        with torch.no_grad():
            ref.weight.copy_(norm.weight[h])
        torch.testing.assert_close(norm(x)[:, h], ref(x[:, h]))


def test_mlp_dropout_after_the_first_linear_map():
    edge_index, adj = graph()
    x = features()
    conv = eval_conv(GINAttentionConv, mlp_dropout=0.5, mlp_multiplier=1.0,
                     mlp_norm="rms")
    # eval: no dropout, the reference as is
    torch.testing.assert_close(conv(x, edge_index),
                               dense_gin(conv, x, adj, norm="rms"),
                               atol=1e-5, rtol=1e-5)
    # training: the same mask as F.dropout on the [N, H, hidden] output of
    # the first linear map, drawn from the same seed
    conv.train()
    torch.manual_seed(5)
    out = conv(x, edge_index)
    mlp = conv.mlp
    a = dense_weights(dense_scores(conv, x, adj), adj, "softmax")
    v = dense_values(conv, x)
    h = (1 + conv.eps.view(1, -1, 1)) * v + torch.einsum("hij,jhc->ihc", a,
                                                         v)
    y = torch.einsum("nhi,hio->nho", h, mlp.lin1.weight) + mlp.lin1.bias
    torch.manual_seed(5)
    y = F.dropout(y, 0.5, True)
    y = F.rms_norm(y, y.shape[-1:], eps=1e-5) * mlp.norm.weight
    y = torch.einsum("nhi,hio->nho", F.silu(y), mlp.lin2.weight) + \
        mlp.lin2.bias
    torch.testing.assert_close(out, y.reshape(N, -1), atol=1e-5, rtol=1e-5)


def test_value_projection_off_uses_the_feature_slices():
    edge_index, adj = graph()
    x = features()
    conv = eval_conv(GINAttentionConv, value_proj=False)
    assert conv.lin_value is None and not conv.value_proj
    assert "lin_value.weight" not in conv.state_dict()
    expected = dense_gin(conv, x, adj)
    torch.testing.assert_close(conv(x, edge_index), expected, atol=1e-5,
                               rtol=1e-5)
    assert "value_proj=False" in repr(conv)


def test_value_projection_off_needs_heads_times_channels_inputs():
    with pytest.raises(ValueError, match=r"value_proj=False needs "
                       r"in_channels == heads \* out_channels = 2 \* 4 = 8"
                       r".*got in_channels=6"):
        GINAttentionConv(6, C, heads=H, value_proj=False)
    with pytest.raises(TypeError, match="value_proj must be a bool, got "
                       "'no'"):
        GINAttentionConv(8, C, heads=H, value_proj="no")
    # lazy inputs are checked at the call
    conv = GINAttentionConv(-1, C, heads=H, value_proj=False)
    edge_index, _ = graph()
    with pytest.raises(ValueError, match="must have heads \\* out_channels "
                       "= 2 \\* 4 = 8 channels; got 5"):
        conv(torch.randn(N, 5), edge_index)


@pytest.mark.parametrize("normalization", ["softmax", "relu", "raw"])
def test_score_modes_match_dense_reference(normalization):
    edge_index, adj = graph()
    x = features()
    conv = eval_conv(GINAttentionConv, normalization=normalization)
    expected = dense_gin(conv, x, adj, normalization=normalization)
    out, (edges, alpha) = conv(x, edge_index, return_attention_weights=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    a = dense_weights(dense_scores(conv, x, adj), adj, normalization)
    torch.testing.assert_close(alpha, a[:, edges[1], edges[0]].t(),
                               atol=1e-5, rtol=1e-5)
    if normalization == "raw":  # signed: the scores themselves
        assert (alpha < 0).any()


@pytest.mark.parametrize("mode,kwargs", [
    ("shifted-relu", dict(threshold=0.2)),
    ("binary", dict(threshold=0.2)),
    ("top-k-fraction", dict(top_k_fraction=0.5)),
    ("top-k-fraction", dict(top_k_fraction=0.1)),  # k = max(1, 0) = 1
])
@pytest.mark.parametrize("normalization", ["softmax", "raw"])
def test_threshold_modes_match_dense_reference(mode, kwargs, normalization):
    edge_index, adj = graph()
    x = features()
    conv = eval_conv(GINAttentionConv, threshold_mode=mode,
                     normalization=normalization, **kwargs)
    expected = dense_gin(conv, x, adj, normalization=normalization,
                         mode=mode, threshold=kwargs.get("threshold"),
                         fraction=kwargs.get("top_k_fraction"))
    out, (edges, alpha) = conv(x, edge_index, return_attention_weights=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # the kept subgraph: an edge survives where some head keeps it
    a = dense_threshold(dense_weights(dense_scores(conv, x, adj), adj,
                                      normalization), adj, mode,
                        kwargs.get("threshold"), kwargs.get("top_k_fraction"))
    kept = (a != 0).any(0)
    assert edges.size(1) == int(kept.sum())
    torch.testing.assert_close(alpha, a[:, edges[1], edges[0]].t())


def test_top_k_fraction_keeps_floor_of_the_in_degree_share():
    edge_index, adj = graph(p=0.8)
    alpha = torch.rand(edge_index.size(1), 3)
    out, edges, kept = functional.sparsify_attention(
        alpha, edge_index, threshold_mode="top-k-fraction",
        top_k_fraction=0.4)
    full = torch.zeros(edge_index.size(1), 3)
    full[kept] = out
    degree = adj.sum(-1)
    for i in range(N):
        mine = edge_index[1] == i
        k = max(1, int(0.4 * int(degree[i])))
        assert (full[mine].sum(0) == k).all()  # k ones per node and head
        assert set(full.unique().tolist()) <= {0.0, 1.0}
        for h in range(3):
            top = alpha[mine, h].topk(k).indices
            assert (full[mine][top, h] == 1).all()


def test_paper_modes_act_after_the_attention_dropout():
    """The published code drops out the weights, then thresholds them:
    binary weights stay 1 in training (dropout first would make the kept
    ones 1 / (1 - p))."""
    edge_index, _ = graph()
    x = features()
    torch.manual_seed(0)
    conv = GINAttentionConv(H * C, C, heads=H, dropout=0.5,
                            threshold_mode="binary", threshold=0.05)
    conv.train()
    _, (_, alpha) = conv(x, edge_index, return_attention_weights=True)
    assert set(alpha.unique().tolist()) <= {0.0, 1.0}
    # and some edges were dropped by the dropout (p = 0.5)
    conv.eval()
    _, (_, kept_eval) = conv(x, edge_index, return_attention_weights=True)
    assert (alpha == 0).sum() > (kept_eval == 0).sum()


def test_mlp_rounding():
    conv = GINAttentionConv(14, 7, heads=2, mlp_multiplier=0.5)
    assert conv.mlp.lin1.out_channels == 4  # round(3.5)
    conv = GINAttentionConv(14, 7, heads=2, mlp_multiplier=0.5,
                            mlp_rounding="floor")
    assert conv.mlp.lin1.out_channels == 3  # int(3.5), the paper's
    conv = GINAttentionConv(14, 7, heads=2, mlp_multiplier=0.1,
                            mlp_rounding="floor", mlp_norm=None)
    assert conv.mlp.lin1.out_channels == 1  # at least 1
    pna = PNAAttentionConv(14, 7, heads=2, mixer="mlp", mixer_multiplier=2.5,
                           mlp_rounding="floor", scalers=("identity", ))
    assert pna.mixer.lin1.out_channels == 17  # int(17.5)


def test_fused_and_propagate_paths_agree_for_the_paper_modes():
    edge_index, _ = graph()
    x = features()
    for kwargs in (dict(threshold_mode="binary", threshold=0.2),
                   dict(threshold_mode="shifted-relu", threshold=0.1,
                        normalization="raw"),
                   dict(threshold_mode="top-k-fraction",
                        top_k_fraction=0.5)):
        conv = eval_conv(GINAttentionConv, **kwargs)
        fused = conv(x, edge_index)
        handle = conv.register_message_forward_hook(lambda *args: None)
        torch.testing.assert_close(conv(x, edge_index), fused)
        handle.remove()


def test_auto_backend_on_a_token_graph_takes_the_sparse_path():
    # a batch of two complete token graphs: "auto" may run dense SDPA, but
    # not with raw scores or the paper's sparsifications
    sizes = (3, 4)
    edges, offset = [], 0
    for n in sizes:
        idx = torch.arange(n) + offset
        edges.append(torch.stack([idx.repeat(n),
                                  idx.repeat_interleave(n)]))
        offset += n
    edge_index = torch.cat(edges, 1)
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor(sizes))
    x = features(n=offset)
    for kwargs in (dict(normalization="raw"),
                   dict(threshold_mode="top-k-fraction", top_k_fraction=0.5),
                   dict(threshold_mode="binary", threshold=0.3)):
        conv = eval_conv(GINAttentionConv, **kwargs)
        torch.testing.assert_close(conv(x, edge_index, batch=batch),
                                   dense_gin(conv, x, _adj(edge_index,
                                                           offset),
                                             normalization=kwargs.get(
                                                 "normalization",
                                                 "softmax"),
                                             mode=kwargs.get(
                                                 "threshold_mode", "drop"),
                                             threshold=kwargs.get(
                                                 "threshold"),
                                             fraction=kwargs.get(
                                                 "top_k_fraction")),
                                   atol=1e-5, rtol=1e-5)


def _adj(edge_index, n):
    adj = torch.zeros(n, n, dtype=torch.bool)
    adj[edge_index[1], edge_index[0]] = True
    return adj


# --------------------------------------------------------------------------
# PNA-Attention
# --------------------------------------------------------------------------

PAPER_AGGREGATORS = ("sum", "mean", "max", "var")


def test_paper_pna_matches_dense_reference():
    edge_index, adj = graph()
    x = features()
    conv = eval_conv(PNAAttentionConv, **{
        k: v for k, v in PAPER_PRESETS["pna-attention"].items()})
    assert conv.mixer.norm is None
    assert conv.mixer.lin1.out_channels == 2 * C
    feats = dense_pna(conv, x, adj, PAPER_AGGREGATORS)
    mixer = conv.mixer
    expected = dense_mlp(mixer, feats, None).reshape(N, -1)
    torch.testing.assert_close(conv(x, edge_index), expected, atol=1e-5,
                               rtol=1e-5)


@pytest.mark.parametrize("normalization", ["relu", "raw"])
def test_pna_score_modes(normalization):
    edge_index, adj = graph()
    x = features()
    conv = eval_conv(PNAAttentionConv, aggregators=("sum", "max"),
                     scalers=("identity", ), include_self=False,
                     normalization=normalization)
    feats = dense_pna(conv, x, adj, ("sum", "max"),
                      normalization=normalization)
    expected = torch.einsum("nhi,hio->nho", feats, conv.mixer.weight) + \
        conv.mixer.bias
    torch.testing.assert_close(conv(x, edge_index), expected.reshape(N, -1),
                               atol=1e-5, rtol=1e-5)


def test_pna_max_is_over_the_neighbours_not_the_node_itself():
    """The published LlamaAttentionPNA expands X[i] along the neighbour
    axis, so its "max" returns the node's own features.  Here the max of
    node i must be the largest value among its in-neighbours, which the
    own features never reach."""
    # 0 <- 1, 0 <- 2, 1 <- 2, 2 <- 0 (no self-loops)
    edge_index = torch.tensor([[1, 2, 2, 0], [0, 0, 1, 2]])
    x = torch.tensor([[10.0, -5.0], [1.0, 2.0], [3.0, -1.0]])
    conv = PNAAttentionConv(2, 2, heads=1, aggregators=("max", ),
                            scalers=("identity", ), include_self=False,
                            value_proj=False, root_weight=False).eval()
    with torch.no_grad():  # the mixer passes the aggregate through
        conv.mixer.weight.copy_(torch.eye(2).unsqueeze(0))
        conv.mixer.bias.zero_()
    out = conv(x, edge_index)
    neighbours_max = torch.tensor([[3.0, 2.0], [3.0, -1.0], [10.0, -5.0]])
    torch.testing.assert_close(out, neighbours_max)
    assert not torch.allclose(out, x)  # the published defect's answer


def test_pna_include_self_and_scalers_off():
    conv = PNAAttentionConv(8, 4, heads=2, aggregators=PAPER_AGGREGATORS,
                            scalers=("identity", ), include_self=False)
    assert conv.mixer.weight.shape == (2, 4 * 4, 4)
    conv = PNAAttentionConv(8, 4, heads=2, aggregators=PAPER_AGGREGATORS,
                            scalers=("identity", ))
    assert conv.mixer.weight.shape == (2, 5 * 4, 4)


def test_pna_value_projection_off():
    edge_index, adj = graph()
    x = features()
    conv = eval_conv(PNAAttentionConv, aggregators=("mean", ),
                     scalers=("identity", ), include_self=True,
                     value_proj=False)
    feats = dense_pna(conv, x, adj, ("mean", ))
    feats = torch.cat([x.view(N, H, C), feats], dim=-1)
    expected = torch.einsum("nhi,hio->nho", feats, conv.mixer.weight) + \
        conv.mixer.bias
    torch.testing.assert_close(conv(x, edge_index), expected.reshape(N, -1),
                               atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------
# Defaults unchanged
# --------------------------------------------------------------------------

NEW_GIN = dict(gin_form="one-plus-eps", mlp_dropout=0.0,
               mlp_rounding="round", value_proj=True, threshold_mode="drop",
               top_k_fraction=None, normalization="softmax",
               mlp_norm="layer")
NEW_PNA = dict(mixer_multiplier=1.0, mlp_norm="layer", mlp_rounding="round",
               value_proj=True, normalization="softmax", threshold=None,
               top_k=None, threshold_mode="drop", top_k_fraction=None)


@pytest.mark.parametrize("cls,new", [(GINAttentionConv, NEW_GIN),
                                     (PNAAttentionConv, NEW_PNA)])
def test_new_option_defaults_are_todays_layer(cls, new):
    params = inspect.signature(cls).parameters
    for name, value in new.items():
        assert params[name].default == value, name
    edge_index, _ = graph()
    x = features()
    extra = dict(delta=1.0) if cls is PNAAttentionConv else {}
    torch.manual_seed(3)
    default = cls(H * C, C, heads=H, **extra).eval()
    torch.manual_seed(3)
    explicit = cls(H * C, C, heads=H, **extra, **new).eval()
    assert repr(default) == repr(explicit)
    assert default.state_dict().keys() == explicit.state_dict().keys()
    torch.testing.assert_close(default(x, edge_index),
                               explicit(x, edge_index))


def test_default_gin_is_the_one_plus_eps_form_with_layernorm():
    edge_index, adj = graph()
    x = features()
    conv = eval_conv(GINAttentionConv, eps=0.2)
    assert conv.lin_value is not None
    assert conv.mlp.lin1.out_channels == round(0.5 * C)
    torch.testing.assert_close(conv(x, edge_index), dense_gin(conv, x, adj),
                               atol=1e-5, rtol=1e-5)


def test_registry_defaults_match_the_layers():
    for model, cls in (("gin-attention", GINAttentionConv),
                       ("pna-attention", PNAAttentionConv)):
        params = inspect.signature(cls).parameters
        for name in get_model(model).options:
            # the new options; mlp_multiplier and the shared arguments
            # (dropout, heads, ...) have task-level defaults of their own
            if name in params and (name in NEW_GIN or name in NEW_PNA or
                                   name in ("mixer", "include_self")):
                default = OPTIONS[name].default
                assert params[name].default == default, (model, name)
    # the PNA mixer's hidden width is its own multiplier (1.0), not GIN's
    assert OPTIONS["mixer_multiplier"].default == 1.0


# --------------------------------------------------------------------------
# The preset
# --------------------------------------------------------------------------

DOCUMENTED = {
    "gin-attention": dict(gin_form="eps", mlp_multiplier=0.5,
                          mlp_norm="rms", mlp_dropout=0.1,
                          mlp_rounding="floor", value_proj=False,
                          normalization="softmax", threshold_mode="drop"),
    "pna-attention": dict(aggregators=["sum", "mean", "max", "var"],
                          scalers=["identity"], mixer="mlp",
                          mixer_multiplier=2.0, mlp_norm=None,
                          mlp_rounding="floor", include_self=False,
                          normalization="softmax", threshold_mode="drop"),
}


@pytest.mark.parametrize("model", ["gin-attention", "pna-attention"])
def test_paper_preset_resolves_to_the_documented_config(model):
    from tgnn_transformers.train.config import resolve_config
    config = resolve_config("text", "trec", model, {}, preset="paper")
    assert config["preset"] == "paper"
    for name, value in DOCUMENTED[model].items():
        assert config[name] == value, name
    # without the preset: today's defaults
    plain = resolve_config("text", "trec", model, {})
    assert "preset" not in plain
    for name in DOCUMENTED[model]:
        default = OPTIONS[name].default
        default = list(default) if isinstance(default, tuple) else default
        assert plain[name] == default, name


def test_explicit_flags_override_the_preset():
    from tgnn_transformers.cli import _overrides, build_parser
    from tgnn_transformers.train.config import resolve_config
    args = build_parser().parse_args(
        ["train", "--task", "text", "--dataset", "trec", "--model",
         "gin-attention", "--preset", "paper", "--mlp-norm", "layer",
         "--value-proj"])
    assert args.preset == "paper"
    config = resolve_config(args.task, args.dataset, args.model,
                            _overrides(args), preset=args.preset)
    assert config["mlp_norm"] == "layer" and config["value_proj"] is True
    assert config["gin_form"] == "eps"  # the rest of the preset stays


def test_preset_builds_the_papers_layers():
    from tgnn_transformers.models import build_model
    from tgnn_transformers.train.config import model_options, resolve_config
    config = resolve_config("text", "trec", "gin-attention",
                            {"hidden": 16, "heads": 2, "num_layers": 1},
                            preset="paper")
    model = build_model("text", "gin-attention", 50, 3,
                        **model_options(config))
    convs = [m for m in model.modules() if isinstance(m, GINAttentionConv)]
    assert convs and all(c.gin_form == "eps" and c.lin_value is None and
                         isinstance(c.mlp.norm, HeadwiseRMSNorm) and
                         c.mlp.dropout == 0.1 for c in convs)
    config = resolve_config("node", "cora", "graph-transformer",
                            {"attention": "pna-attention"}, preset="paper")
    assert config["aggregators"] == ["sum", "mean", "max", "var"]
    assert config["include_self"] is False


def test_preset_errors_name_the_presets():
    from tgnn_transformers.train.config import resolve_config
    with pytest.raises(ValueError, match=r"preset must be one of the presets"
                       r" of model 'mha' \(it has none\), got 'paper'"):
        resolve_config("node", "cora", "mha", {}, preset="paper")
    with pytest.raises(ValueError, match=r"presets of model 'gin-attention' "
                       r"\('paper'\), got 'xgpt'"):
        resolve_config("node", "cora", "gin-attention", {}, preset="xgpt")


def test_models_table_lists_the_presets():
    from tgnn_transformers.models import models_table
    rows = {line.split("|")[1].strip(): line
            for line in models_table().splitlines()[2:]}
    assert "presets: `paper`" in rows["`gin-attention`"]
    assert "presets: `paper`" in rows["`pna-attention`"]
    assert "presets" not in rows["`mha`"]


# --------------------------------------------------------------------------
# Bad values
# --------------------------------------------------------------------------

GIN_ONLY_BAD = [
    (dict(gin_form="1+eps"),
     "unknown gin_form '1\\+eps'; expected one of 'one-plus-eps', 'eps'$"),
    (dict(mlp_dropout=1.0), "mlp dropout must be a float in \\[0, 1\\), "
     "got 1.0"),
]
SHARED_BAD = [
    (dict(mlp_norm="batch"),
     "unknown mlp_norm 'batch'; expected one of 'layer', 'rms', None$"),
    (dict(mlp_rounding="ceil"),
     "unknown mlp_rounding 'ceil'; expected one of 'round', 'floor'$"),
    (dict(normalization="sigmoid"), "unknown normalization 'sigmoid'; "
     "expected one of 'softmax', 'relu', 'raw'$"),
    (dict(threshold_mode="silu"), "unknown threshold_mode 'silu'; expected "
     "one of 'drop', 'shifted-relu', 'binary', 'top-k-fraction'$"),
    (dict(threshold_mode="binary"), "threshold_mode='binary' needs a "
     "threshold \\(a float\\), got threshold=None"),
    (dict(threshold_mode="shifted-relu", threshold=0.1, top_k=2),
     "top_k applies to threshold_mode='drop' only"),
    (dict(threshold_mode="top-k-fraction"), "needs top_k_fraction \\(a "
     "float in \\(0, 1\\]\\), got None"),
    (dict(threshold_mode="top-k-fraction", top_k_fraction=1.5),
     "top_k_fraction must be a float in \\(0, 1\\] or None, got 1.5"),
    (dict(threshold_mode="top-k-fraction", top_k_fraction=0.5,
          threshold=0.1), "takes neither threshold nor top_k"),
    (dict(top_k_fraction=0.5), "top_k_fraction applies to threshold_mode="
     "'top-k-fraction' only"),
    (dict(top_k=0), "top_k must be >= 1"),
]


@pytest.mark.parametrize("cls,kwargs,match", [
    (GINAttentionConv, k, m) for k, m in GIN_ONLY_BAD + SHARED_BAD] + [
    (PNAAttentionConv, k, m) for k, m in SHARED_BAD])
def test_bad_values_name_argument_expected_and_received(cls, kwargs, match):
    if cls is PNAAttentionConv:
        kwargs = dict(kwargs, mixer="mlp", scalers=("identity", ))
    with pytest.raises(ValueError, match=match):
        cls(8, 4, heads=2, **kwargs)


def test_bad_pna_mixer_multiplier():
    with pytest.raises(ValueError, match="mixer_multiplier must be a number "
                       "> 0, got 0"):
        PNAAttentionConv(8, 4, heads=2, mixer_multiplier=0,
                         scalers=("identity", ))


def test_bad_registry_values_name_option_model_and_accepted():
    spec = get_model("gin-attention")
    with pytest.raises(ValueError, match="option 'gin_form' of model "
                       "'gin-attention' expects one-plus-eps \\| eps, got "
                       "'paper'"):
        spec.resolve({"gin_form": "paper"})
    with pytest.raises(ValueError, match="option 'top_k_fraction' of model "
                       "'gin-attention' expects float in \\(0, 1\\], got "
                       "0.0"):
        spec.resolve({"top_k_fraction": 0.0})
    with pytest.raises(ValueError, match="model 'gin-attention': "
                       "threshold_mode='binary' needs a threshold"):
        spec.resolve({"threshold_mode": "binary"})
    with pytest.raises(ValueError, match="model 'mha' does not take option "
                       "'gin_form'"):
        get_model("mha").resolve({"gin_form": "eps"})


def test_functional_core_checks_too():
    edge_index, _ = graph()
    q = torch.randn(N, H, C)
    with pytest.raises(ValueError, match="normalization 'softmax2'"):
        functional.edge_attention(q, q, q, edge_index,
                                  normalization="softmax2")
    with pytest.raises(ValueError, match="unknown threshold_mode 'relu'; "
                       "expected one of"):
        functional.sparsify_attention(torch.rand(edge_index.size(1), H),
                                      edge_index, threshold_mode="relu")


def test_one_sparsification_for_layers_adapter_and_inspection():
    """The adapter's attention_graph and the inspection helpers call the
    functional core's sparsify_attention, not a copy."""
    assert sparse_gin.sparsify_attention is functional.sparsify_attention
    assert inspect_graphs.sparsify_attention is \
        functional.sparsify_attention
    attention = torch.rand(1, 2, 5, 5,
                           generator=torch.Generator().manual_seed(0)) * 0.4
    edge_index, weight = sparse_gin.attention_graph(attention, top_k=2)
    combined = attention.sum(1).clamp(max=1)[0]
    for i in range(5):
        assert (edge_index[1] == i).sum() == 2
        kept = edge_index[0][edge_index[1] == i]
        assert set(kept.tolist()) == set(combined[i].topk(2).indices.tolist())
