"""Positional encodings: sinusoidal and learned absolute encodings, RoPE
inside the attention convs, the additive ``attn_bias`` and T5's relative
bias, each against a reference written here."""
import math

import pytest
import torch
from torch_geometric.data import Batch, Data

from tgnn_transformers.nn import (GINAttentionConv, GraphTransformer,
                                  LearnedPositionalEncoding,
                                  MultiHeadAttentionConv, PNAAttentionConv,
                                  RelativePositionBias, RotaryEmbedding,
                                  SinusoidalPositionalEncoding,
                                  relative_position_bucket)
from tgnn_transformers.transforms import sequence_to_graph

CONVS = [MultiHeadAttentionConv, GINAttentionConv, PNAAttentionConv]


def build(cls, *args, **kwargs):
    if cls is PNAAttentionConv:
        kwargs.setdefault("delta", 1.0)
    return cls(*args, **kwargs)


# ---------------------------------------------------------------- references

def rope_reference(x, pos, base=10000.0):
    """RoPE written out per channel pair (c, c + C/2), in float64."""
    x = x.double()
    n, h, c = x.shape
    out = x.clone()
    for k in range(c // 2):
        theta = base**(-2 * k / c)
        ang = pos.double() * theta
        cos, sin = ang.cos()[:, None], ang.sin()[:, None]
        a, b = x[:, :, k], x[:, :, k + c // 2]
        out[:, :, k] = a * cos - b * sin
        out[:, :, k + c // 2] = a * sin + b * cos
    return out


def dense_attention(q, k, v, mask, bias=None):
    """Softmax attention on dense [H, L, L] scores; mask[i, j] = edge j->i."""
    scores = torch.einsum("ihc,jhc->hij", q, k) / math.sqrt(q.size(-1))
    if bias is not None:
        scores = scores + bias
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("hij,jhc->ihc", scores.softmax(-1), v)


def hf_t5_bucket(relative_position, bidirectional=True, num_buckets=32,
                 max_distance=128):
    """Hugging Face T5Attention._relative_position_bucket, reimplemented
    from its formula with Python scalars."""
    out = []
    for n in relative_position.tolist():
        ret, nb = 0, num_buckets
        if bidirectional:
            nb //= 2
            ret += nb if n > 0 else 0
            n = abs(n)
        else:
            n = -min(n, 0)
        max_exact = nb // 2
        if n < max_exact:
            ret += n
        else:
            large = max_exact + int(math.log(n / max_exact) /
                                    math.log(max_distance / max_exact) *
                                    (nb - max_exact))
            ret += min(large, nb - 1)
        out.append(ret)
    return torch.tensor(out)


# ---------------------------------------------------------------- absolute

def test_sinusoidal_matches_formula():
    enc = SinusoidalPositionalEncoding(6)
    pos = torch.tensor([0, 3, 7])
    out = enc(torch.zeros(3, 6), pos)
    for r, p in enumerate(pos.tolist()):
        for i in range(3):
            w = p / 10000**(2 * i / 6)
            assert out[r, 2 * i].item() == pytest.approx(math.sin(w),
                                                         abs=1e-6)
            assert out[r, 2 * i + 1].item() == pytest.approx(math.cos(w),
                                                             abs=1e-6)
    x = torch.randn(3, 6)
    torch.testing.assert_close(enc(x, pos), x + out)
    odd = SinusoidalPositionalEncoding(5)(torch.zeros(2, 5),
                                          torch.tensor([1, 2]))
    assert odd.shape == (2, 5)


def test_learned_encoding_and_range_error():
    enc = LearnedPositionalEncoding(4, max_positions=8)
    x, pos = torch.randn(3, 4), torch.tensor([0, 5, 7])
    torch.testing.assert_close(enc(x, pos), x + enc.embedding.weight[pos])
    with pytest.raises(ValueError, match="max_positions"):
        enc(x, torch.tensor([0, 1, 8]))
    with pytest.raises(ValueError, match="integer"):
        enc(x, torch.tensor([0.0, 1.0, 2.0]))


# ---------------------------------------------------------------- RoPE

def test_rotary_matches_pairwise_rotation():
    x, pos = torch.randn(5, 2, 8), torch.tensor([0, 1, 4, 9, 100])
    torch.testing.assert_close(RotaryEmbedding(8)(x, pos).double(),
                               rope_reference(x, pos), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(7)


@pytest.mark.parametrize("backend", ["sparse", "dense"])
def test_rope_conv_equals_dense_attention_on_rotated_qk(backend):
    torch.manual_seed(1)
    L, H, C = 7, 2, 8
    conv = MultiHeadAttentionConv(16, C, heads=H, rope=True, root_weight=False,
                                  backend=backend).eval()
    x = torch.randn(L, 16)
    g = sequence_to_graph(x, "full")
    pos = g.position + 3
    out = conv(x, g.edge_index, pos=pos)
    q = conv.lin_query(x).view(L, H, C)
    k = conv.lin_key(x).view(L, H, C)
    v = conv.lin_value(x).view(L, H, C)
    ref = dense_attention(rope_reference(q, pos).float(),
                          rope_reference(k, pos).float(), v,
                          torch.ones(L, L, dtype=torch.bool))
    torch.testing.assert_close(out, ref.reshape(L, H * C), atol=1e-5,
                               rtol=1e-5)


@pytest.mark.parametrize("cls", CONVS)
@pytest.mark.parametrize("pattern", ["full", "window"])
def test_rope_shift_invariant_and_order_sensitive(cls, pattern):
    conv = build(cls, 16, 8, heads=2, rope=True).eval()
    g = sequence_to_graph(torch.randn(9, 16), pattern, window=2)
    out = conv(g.x, g.edge_index, pos=g.position)
    shifted = conv(g.x, g.edge_index, pos=g.position + 37)
    torch.testing.assert_close(shifted, out, atol=1e-5, rtol=1e-5)
    perm = g.position[torch.randperm(9, generator=torch.Generator()
                                     .manual_seed(3))]
    assert not torch.allclose(conv(g.x, g.edge_index, pos=perm), out,
                              atol=1e-4)


def test_rope_needs_pos_and_pos_needs_rope():
    x, ei = torch.randn(4, 8), torch.randint(0, 4, (2, 10))
    with pytest.raises(ValueError, match="pos is None"):
        MultiHeadAttentionConv(8, 4, rope=True)(x, ei)
    with pytest.raises(ValueError, match="without rope"):
        MultiHeadAttentionConv(8, 4)(x, ei, pos=torch.arange(4))
    conv = MultiHeadAttentionConv(8, 4, heads=2, rope=RotaryEmbedding(4))
    assert "rope=True" in repr(conv)


def test_rope_same_on_sparse_and_dense_in_padded_batch():
    torch.manual_seed(0)
    graphs = [sequence_to_graph(torch.randn(n, 16), "causal")
              for n in (5, 3, 8)]
    batch = Batch.from_data_list(graphs)
    outs = []
    for backend in ("sparse", "dense"):
        torch.manual_seed(5)
        conv = MultiHeadAttentionConv(16, 4, heads=4, rope=True,
                                      backend=backend).eval()
        outs.append(conv(batch.x, batch.edge_index, batch=batch.batch,
                         pos=batch.position))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- attn_bias

@pytest.mark.parametrize("explain", [False, True])
def test_attn_bias_equals_dense_reference(explain):
    torch.manual_seed(2)
    L, H, C = 6, 2, 4
    conv = MultiHeadAttentionConv(8, C, heads=H, root_weight=False).eval()
    x = torch.randn(L, 8)
    g = sequence_to_graph(x, "window", window=2)
    E = g.edge_index.size(1)
    bias = torch.randn(E, H)
    bias[0, 0] = float("-inf")  # masks that edge in head 0
    if explain:  # any message hook sends it through propagate
        conv.register_message_forward_hook(lambda *args: None)
    out, (_, alpha) = conv(x, g.edge_index, attn_bias=bias,
                           return_attention_weights=True)
    j, i = g.edge_index
    mask = torch.zeros(L, L, dtype=torch.bool)
    mask[i, j] = True
    dense_bias = torch.zeros(H, L, L)
    dense_bias[:, i, j] = bias.t()
    q = conv.lin_query(x).view(L, H, C)
    k = conv.lin_key(x).view(L, H, C)
    v = conv.lin_value(x).view(L, H, C)
    ref = dense_attention(q, k, v, mask, dense_bias)
    torch.testing.assert_close(out, ref.reshape(L, H * C), atol=1e-5,
                               rtol=1e-5)
    assert alpha[0, 0] == 0 and alpha[0, 1] > 0


@pytest.mark.parametrize("cls", CONVS)
def test_zero_bias_changes_nothing_and_bias_does(cls):
    conv = build(cls, 8, 4, heads=2).eval()
    x, ei = torch.randn(10, 8), torch.randint(0, 10, (2, 40))
    out = conv(x, ei)
    torch.testing.assert_close(conv(x, ei, attn_bias=torch.zeros(40, 2)),
                               out)
    assert not torch.allclose(conv(x, ei, attn_bias=torch.randn(40, 2)), out)
    with pytest.raises(ValueError, match="bias"):
        conv(x, ei, attn_bias=torch.zeros(39, 2))


def test_attn_bias_with_dense_backend_refused():
    conv = MultiHeadAttentionConv(8, 4, heads=2, backend="dense")
    g = sequence_to_graph(torch.randn(5, 8), "full")
    with pytest.raises(ValueError, match="dense"):
        conv(g.x, g.edge_index, attn_bias=torch.zeros(25, 2))


# ---------------------------------------------------------------- T5 bias

@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (16, 20)])
def test_t5_buckets_match_hf_formula(bidirectional, num_buckets,
                                     max_distance):
    rel = torch.arange(-300, 301)
    ours = relative_position_bucket(rel, bidirectional, num_buckets,
                                    max_distance)
    assert torch.equal(ours, hf_t5_bucket(rel, bidirectional, num_buckets,
                                          max_distance))
    assert int(ours.max()) < num_buckets and int(ours.min()) >= 0


def test_relative_bias_shift_invariant_in_graph_transformer():
    torch.manual_seed(0)
    g = sequence_to_graph(torch.randn(8, 16), "full")
    rel = RelativePositionBias(heads=4, num_buckets=8, max_distance=16)
    torch.nn.init.normal_(rel.embedding.weight)
    model = GraphTransformer(16, heads=4, num_layers=2).eval()
    out = model(g.x, g.edge_index, attn_bias=rel(g.edge_index, g.position))
    shifted = model(g.x, g.edge_index,
                    attn_bias=rel(g.edge_index, g.position + 11))
    torch.testing.assert_close(shifted, out)
    bias = rel(g.edge_index, g.position)
    j, i = g.edge_index
    bucket = relative_position_bucket(g.position[j] - g.position[i], True, 8,
                                      16)
    torch.testing.assert_close(bias, rel.embedding.weight[bucket])
    assert not torch.allclose(model(g.x, g.edge_index), out)


def test_graph_transformer_with_rope():
    g = sequence_to_graph(torch.randn(6, 16), "full")
    model = GraphTransformer(16, heads=2, num_layers=2,
                             attention_kwargs={"rope": True}).eval()
    out = model(g.x, g.edge_index, pos=g.position)
    torch.testing.assert_close(model(g.x, g.edge_index, pos=g.position + 5),
                               out, atol=1e-5, rtol=1e-5)


def test_graph_positional_encodings_from_pyg():
    from torch_geometric.transforms import (AddLaplacianEigenvectorPE,
                                            AddRandomWalkPE)
    ring = torch.arange(8)
    ei = torch.stack([torch.cat([ring, (ring + 1) % 8]),
                      torch.cat([(ring + 1) % 8, ring])])
    data = AddRandomWalkPE(4)(Data(x=torch.randn(8, 4), edge_index=ei))
    data = AddLaplacianEigenvectorPE(2)(data)
    x = torch.cat([data.x, data.random_walk_pe, data.laplacian_eigenvector_pe],
                  -1)
    out = MultiHeadAttentionConv(10, 4, heads=2)(x, ei)
    assert out.shape == (8, 8)
