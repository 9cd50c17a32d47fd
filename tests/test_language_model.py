"""The GPT on causal token graphs (``models.language_model``) against a
dense GPT written in this file from the formulas (masked softmax attention
on ``[B, T, T]`` scores, LayerNorm, GELU feed-forward, tied head), with the
model's own parameters; causality of every attention conv; the loss; that it
learns; generation; and the errors for bad input."""
import math

import pytest
import torch
import torch.nn.functional as F

from tgnn_transformers.functional.patterns import complete_edge_index
from tgnn_transformers.models.language_model import (CausalLanguageModel,
                                                     causal_edge_index,
                                                     causal_token_graph)
from tgnn_transformers.models.registry import PAPER_PRESETS

V = 11


@pytest.fixture(autouse=True)
def one_thread():
    """Models this small run fastest on one thread (and two OpenMP threads
    on two shared cores can spin for many times longer)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(**options):
    defaults = dict(block_size=8, hidden=16, heads=2, num_layers=2)
    defaults.update(options)
    return CausalLanguageModel(V, **defaults)


def allowed(T, pattern="causal", window=None, dilation=1):
    """``[T, T]`` mask, entry ``(i, j)``: may token ``i`` attend to
    ``j``."""
    i = torch.arange(T).view(-1, 1)
    j = torch.arange(T).view(1, -1)
    back = i - j
    if pattern == "causal":
        return back >= 0
    if pattern == "causal-window":
        return (back >= 0) & (back <= window)
    return (back >= 0) & (back % dilation == 0) & (back // dilation <=
                                                   window)


def rope(x, T):
    """Rotate-half RoPE of ``x`` ``[B, T, H, D]`` at positions 0..T-1."""
    D = x.size(-1)
    freq = 10000.0**(-torch.arange(D // 2, dtype=torch.float64) * 2 / D)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * freq[None, :]
    cos = torch.cat([angle.cos(), angle.cos()], -1).float()[None, :, None]
    sin = torch.cat([angle.sin(), angle.sin()], -1).float()[None, :, None]
    rotated = torch.cat([-x[..., D // 2:], x[..., :D // 2]], -1)
    return x * cos + rotated * sin


def perturbed(model):
    """``model`` with every parameter moved off its initial value (biases
    start at 0, norm gains at 1), so the comparison sees each of them."""
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def dense_gpt(model, idx):
    """The GPT's logits computed densely from ``model``'s parameters."""
    B, T = idx.shape
    C, H = model.hidden, model.encoder.layers[0].heads
    D = C // H
    h = model.token_embedding.weight[idx]
    p = torch.arange(T, dtype=torch.float32)[:, None]
    if model.pos_kind == "learned":
        h = h + model.position.embedding.weight[:T]
    elif model.pos_kind == "sinusoidal":
        k = torch.arange(0, C, 2, dtype=torch.float32)
        pe = torch.zeros(T, C)
        pe[:, 0::2] = torch.sin(p / 10000**(k / C))
        pe[:, 1::2] = torch.cos(p / 10000**(k / C))
        h = h + pe
    mask = allowed(T, model.pattern, model.window, model.dilation)
    for layer in model.encoder.layers:
        a = layer.attention
        x = F.layer_norm(h, (C, ), layer.norm1.weight, layer.norm1.bias)
        q, k, v = (F.linear(x, lin.weight, lin.bias).view(B, T, H, D)
                   for lin in (a.lin_query, a.lin_key, a.lin_value))
        if model.pos_kind == "rope":
            q, k = rope(q, T), rope(k, T)
        scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(D)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        out = torch.einsum("bhij,bjhd->bihd", weights, v).reshape(B, T, C)
        h = h + F.linear(out, a.out_proj.weight, a.out_proj.bias)
        x = F.layer_norm(h, (C, ), layer.norm2.weight, layer.norm2.bias)
        ffn = layer.ffn
        h = h + F.linear(F.gelu(F.linear(x, ffn.lin1.weight, ffn.lin1.bias)),
                         ffn.lin2.weight, ffn.lin2.bias)
    norm = model.encoder.final_norm
    h = F.layer_norm(h, (C, ), norm.weight, norm.bias)
    return h @ model.token_embedding.weight.t()


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope", None])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_a_dense_gpt(pos, bias):
    model = perturbed(small(pos=pos, bias=bias)).eval()
    idx = torch.randint(0, V, (3, 8))
    logits, loss = model(idx)
    assert logits.shape == (3, 8, V) and loss is None
    torch.testing.assert_close(logits, dense_gpt(model, idx), atol=1e-5,
                               rtol=1e-5)
    # a shorter context is a smaller graph of the same model
    torch.testing.assert_close(model(idx[:, :5])[0],
                               dense_gpt(model, idx[:, :5]), atol=1e-5,
                               rtol=1e-5)


@pytest.mark.parametrize("pattern,window,dilation",
                         [("causal-window", 2, 1), ("causal-dilated", 2, 2)])
def test_windowed_patterns_match_a_masked_dense_gpt(pattern, window,
                                                    dilation):
    model = perturbed(small(pattern=pattern, window=window,
                            dilation=dilation)).eval()
    idx = torch.randint(0, V, (2, 8))
    torch.testing.assert_close(model(idx)[0], dense_gpt(model, idx),
                               atol=1e-5, rtol=1e-5)


def test_pattern_edges_are_the_definitions():
    for pattern, window, dilation in [("causal", None, 1),
                                      ("causal-window", 3, 1),
                                      ("causal-dilated", 2, 3)]:
        edges = causal_edge_index(10, pattern, window=window,
                                  dilation=dilation)
        expected = allowed(10, pattern, window, dilation).nonzero()
        # (i, j) pairs in row-major order = sorted by target, then source
        assert edges.tolist() == [expected[:, 1].tolist(),
                                  expected[:, 0].tolist()]
    graph = causal_token_graph(3, 5)
    assert torch.equal(graph.edge_index,
                       complete_edge_index(torch.tensor([5, 5, 5]),
                                           causal=True))
    assert graph.batch.tolist() == [b for b in range(3) for _ in range(5)]
    assert graph.position.tolist() == list(range(5)) * 3
    window = causal_token_graph(2, 4, "causal-window", window=1)
    one = causal_edge_index(4, "causal-window", window=1)
    assert torch.equal(window.edge_index, torch.cat([one, one + 4], 1))


def test_full_causal_graphs_take_the_fused_sdpa_path(monkeypatch):
    from tgnn_transformers.functional.backends.dense import DenseBackend
    calls = []
    run = DenseBackend.run

    def counting(self, call):
        calls.append(call.token_pattern().kind == "causal")
        return run(self, call)
    monkeypatch.setattr(DenseBackend, "run", counting)
    idx = torch.randint(0, V, (4, 8))
    small()(idx)
    assert calls == [True, True]  # one causal SDPA call per layer
    calls.clear()
    small(pattern="causal-window", window=2)(idx)
    assert calls == []  # a window is not a complete graph: sparse path


def test_graphs_are_built_once_per_shape():
    model = small()
    idx = torch.randint(0, V, (4, 8))
    model(idx)
    model(idx)
    first = model.token_graph(4, 8, idx.device)
    assert len(model._graphs) == 1
    assert model.token_graph(4, 8, idx.device) is first
    model(idx[:, :3])
    assert len(model._graphs) == 2
    for length in range(1, 9):  # generation's growing contexts
        model(idx[:1, :length])
    assert len(model._graphs) == 8  # bounded, least recently used out
    assert (4, 8, idx.device) not in model._graphs


def test_graphs_built_under_inference_mode_still_train():
    model = small()
    idx = torch.randint(0, V, (2, 8))
    with torch.inference_mode():
        model(idx)
    _, loss = model(idx, idx)
    loss.backward()  # the cached graph holds normal tensors
    assert model.token_embedding.weight.grad is not None


@pytest.mark.parametrize("attention,kwargs", [
    ("mha", {}), ("gin-attention", {}),
    ("gin-attention", PAPER_PRESETS["gin-attention"]),
    ("pna-attention", {})])
def test_causal_logits_do_not_see_later_tokens(attention, kwargs):
    torch.manual_seed(1)
    model = small(attention=attention, attention_kwargs=kwargs).eval()
    idx = torch.randint(0, V, (2, 8))
    logits = model(idx)[0]
    for t in range(7):
        changed = idx.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1) % V
        new = model(changed)[0]
        torch.testing.assert_close(new[:, :t + 1], logits[:, :t + 1],
                                   atol=1e-5, rtol=1e-5)
        assert not torch.allclose(new[:, t + 1:], logits[:, t + 1:])


def test_pna_scalers_use_the_training_graph_degrees():
    model = small(attention="pna-attention")
    # causal graph of 8 tokens: in-degrees 1..8
    expected = sum(math.log(d + 1) for d in range(1, 9)) / 8
    assert model.encoder.layers[0].attention.delta == pytest.approx(expected)
    given = small(attention="pna-attention",
                  attention_kwargs={"delta": 0.5})
    assert given.encoder.layers[0].attention.delta == 0.5


def test_head_is_tied_to_the_embedding():
    model = small()
    assert model.head.weight is model.token_embedding.weight
    names = [n for n, _ in model.named_parameters()]
    assert "head.weight" not in names  # counted once
    assert model.num_parameters() == sum(p.numel()
                                         for p in model.parameters())
    assert model.num_parameters(non_embedding=True) == \
        model.num_parameters() - 8 * 16


def test_gpt2_initialisation():
    torch.manual_seed(0)
    model = CausalLanguageModel(V, 8, hidden=256, heads=4, num_layers=8)
    assert model.token_embedding.weight.std().item() == pytest.approx(
        0.02, rel=0.1)
    layer = model.encoder.layers[3]
    assert layer.attention.lin_query.weight.std().item() == pytest.approx(
        0.02, rel=0.05)
    residual = 0.02 / math.sqrt(16)
    for weight in (layer.attention.out_proj.weight, layer.ffn.lin2.weight):
        assert weight.std().item() == pytest.approx(residual, rel=0.05)
    assert model.encoder.final_norm.bias is None  # bias=False


def test_loss_is_the_mean_next_token_cross_entropy():
    model = small()
    idx = torch.randint(0, V, (3, 8))
    targets = torch.randint(0, V, (3, 8))
    logits, loss = model(idx, targets)
    log_probs = logits.log_softmax(-1)
    nll = -log_probs.gather(-1, targets[..., None]).squeeze(-1)
    torch.testing.assert_close(loss, nll.mean())
    # target -1 leaves a position out (nanoGPT's ignore_index)
    targets[0, :4] = -1
    _, loss = model(idx, targets)
    keep = targets >= 0
    torch.testing.assert_close(loss, nll[keep].mean())


def test_a_small_model_overfits_a_short_text():
    text = ("to be, or not to be, that is the question: whether 'tis "
            "nobler in the mind to suffer the slings and arrows of "
            "outrageous fortune, or to take arms against a sea of "
            "troubles. ")
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text * 4])
    torch.manual_seed(0)
    model = CausalLanguageModel(len(chars), 32, hidden=64, heads=4,
                                num_layers=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        starts = torch.randint(data.numel() - 32, (8, ), generator=gen)
        window = data[starts[:, None] + torch.arange(33)]
        _, loss = model(window[:, :-1], window[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.25  # from log(len(chars)) = 3.3
    # and it then recites the text greedily
    prompt = data[None, :32]
    out = model.generate(prompt, 40, temperature=0)
    assert out[0].tolist() == data[:72].tolist()


def greedy_by_hand(model, idx, steps):
    """Greedy decoding written out: the whole context through ``forward``
    at every step; the context is the prompt's last ``block_size`` tokens
    and, once it outgrows the block, its last ``block_size // 2``."""
    start = max(0, idx.size(1) - model.block_size)
    for _ in range(steps):
        logits = model(idx[:, start:])[0][:, -1]
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], 1)
        if idx.size(1) - start > model.block_size:
            start = idx.size(1) - model.block_size // 2
    return idx


@pytest.mark.parametrize("cache", [True, False])
def test_greedy_generation_is_the_argmax_and_crops_long_prompts(cache):
    model = perturbed(small()).eval()
    prompt = torch.randint(0, V, (2, 3))
    out = model.generate(prompt, 10, temperature=0, cache=cache)
    assert out.shape == (2, 13) and torch.equal(out[:, :3], prompt)
    assert torch.equal(out, greedy_by_hand(model, prompt, 10))
    assert torch.equal(model.generate(prompt, 10, temperature=0), out)
    # top_k=1 is greedy whatever the temperature
    assert torch.equal(model.generate(prompt, 10, top_k=1), out)
    # a prompt longer than block_size is cropped to its last 8 tokens
    long = torch.randint(0, V, (2, 20))
    out = model.generate(long, 5, temperature=0, cache=cache)
    assert out.shape == (2, 25) and torch.equal(out[:, :20], long)
    assert torch.equal(out[:, 20:], greedy_by_hand(model, long[:, -8:],
                                                   5)[:, 8:])
    assert torch.equal(model.generate(long, 0, cache=cache), long)


def test_the_context_rule():
    from tgnn_transformers.models.language_model import generation_context
    # a context within the block keeps its start
    assert generation_context(8, 0, 8) == 0
    assert generation_context(20, 12, 8) == 12
    # one token past the block: the last block_size // 2 tokens stay
    assert generation_context(9, 0, 8) == 5
    assert generation_context(21, 12, 8) == 17
    assert generation_context(8, 0, 7) == 5
    assert generation_context(2, 0, 1) == 1  # at least one token


CACHED_MODELS = {
    "mha": {},
    "gin-attention": {},
    "gin-attention+paper": PAPER_PRESETS["gin-attention"],
    "pna-attention": {},
}


@pytest.mark.parametrize("pos", ["learned", "rope"])
@pytest.mark.parametrize("name", CACHED_MODELS)
def test_cached_steps_equal_recomputed_contexts(name, pos):
    """Decoding with the key/value cache computes, at every step and
    across the block boundary (where the context is re-encoded), the
    logits of running the whole context; greedy decoding gives the same
    tokens either way."""
    from tgnn_transformers.models.language_model import (
        _CachedContext, _RecomputedContext, generation_context)
    attention = name.split("+")[0]
    model = perturbed(small(attention=attention, pos=pos,
                            attention_kwargs=dict(CACHED_MODELS[name])))
    model.eval()
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(0, V, (2, 5), generator=gen)
    cached, recomputed = _CachedContext(model), _RecomputedContext(model)
    start = 0
    with torch.no_grad():
        a, b = cached.restart(idx), recomputed.restart(idx)
        for _ in range(14):  # through two re-encodings of the block of 8
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
            token = torch.randint(0, V, (2, 1), generator=gen)
            idx = torch.cat([idx, token], 1)
            new_start = generation_context(idx.size(1), start, 8)
            if new_start != start:
                start = new_start
                a, b = (c.restart(idx[:, start:]) for c in (cached,
                                                            recomputed))
            else:
                a, b = cached.append(token), recomputed.append(token)
            torch.testing.assert_close(
                b, model(idx[:, start:])[0][:, -1], atol=1e-5, rtol=1e-5)
    prompt = torch.randint(0, V, (2, 3), generator=gen)
    with_cache = model.generate(prompt, 20, temperature=0)
    assert torch.equal(with_cache,
                       model.generate(prompt, 20, temperature=0,
                                      cache=False))
    assert torch.equal(with_cache, greedy_by_hand(model, prompt, 20))


@pytest.mark.parametrize("pattern,window,dilation", [
    ("causal-window", 3, 1), ("causal-dilated", 2, 2)])
def test_cached_windowed_patterns_read_only_their_edges(pattern, window,
                                                         dilation):
    model = perturbed(small(pattern=pattern, window=window,
                            dilation=dilation)).eval()
    prompt = torch.randint(0, V, (3, 4))
    out = model.generate(prompt, 12, temperature=0)
    assert torch.equal(out, model.generate(prompt, 12, temperature=0,
                                           cache=False))
    assert torch.equal(out, greedy_by_hand(model, prompt, 12))


def test_a_cached_step_is_one_new_node_per_sequence(monkeypatch):
    """After the prompt, each step runs every layer on one new node per
    sequence, with an edge from each cached token of its pattern and
    from itself, on the rows backend (SDPA over its gathered sources)."""
    from tgnn_transformers.functional.backends import ATTENTION_BACKENDS
    model = perturbed(small()).eval()
    calls = []
    rows = ATTENTION_BACKENDS["rows"]
    original = type(rows).run

    def spy(self, call):
        calls.append((call.query.size(0), call.key.size(0),
                      call.edge_index.size(1)))
        return original(self, call)
    monkeypatch.setattr(type(rows), "run", spy)
    model.generate(torch.randint(0, V, (2, 3)), 4, temperature=0)
    layers = model.num_layers
    # steps 2..4 (the first token comes from the prompt's encoding)
    expected = []
    for position in (3, 4, 5):
        cached = 2 * position  # the tokens before, of both sequences
        expected += [(2, cached + 2, 2 * (position + 1))] * layers
    assert calls == expected


def test_sampling_follows_the_seed_and_top_k():
    model = small()
    model.train()
    prompt = torch.randint(0, V, (3, 2))
    a = model.generate(prompt, 12, generator=torch.Generator().manual_seed(7))
    b = model.generate(prompt, 12, generator=torch.Generator().manual_seed(7))
    c = model.generate(prompt, 12, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(3)
    d = model.generate(prompt, 12, temperature=0.8, top_k=3)
    torch.manual_seed(3)
    assert torch.equal(model.generate(prompt, 12, temperature=0.8, top_k=3),
                       d)
    assert model.training  # the mode is restored
    # top_k: every sampled token is among the k most likely
    logits = torch.randn(500, V)
    picked = model.sample_next(logits, 1.0, 3,
                               torch.Generator().manual_seed(0))
    top3 = logits.topk(3).indices
    assert (picked == top3).any(-1).all()


def test_bad_input_names_the_argument():
    model = small()
    with pytest.raises(ValueError, match="idx must be a \\[B, T\\] integer"):
        model(torch.randn(2, 4))
    with pytest.raises(ValueError, match="idx must be a \\[B, T\\] integer"):
        model(torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="token id 11, outside the "
                       "vocabulary \\[0, 11\\)"):
        model(torch.tensor([[1, 11]]))
    with pytest.raises(ValueError, match="token id -3"):
        model(torch.tensor([[1, -3]]))
    with pytest.raises(ValueError, match="9 tokens per sequence but the "
                       "model's block_size is 8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="targets must be an integer tensor"
                       " of the shape of idx \\[1, 4\\]"):
        model(torch.zeros(1, 4, dtype=torch.long),
              torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="idx must be a \\[B, T\\] tensor"):
        model([[1, 2]])
    with pytest.raises(ValueError, match="unknown attention 'gat'; "
                       "expected one of 'mha', 'gin-attention', "
                       "'pna-attention'"):
        small(attention="gat")
    with pytest.raises(ValueError, match="heads=3 must divide hidden=16"):
        small(heads=3)
    with pytest.raises(ValueError, match="unknown pattern 'window'"):
        small(pattern="window")
    with pytest.raises(ValueError, match="pattern='causal-window' needs "
                       "window.*got None"):
        small(pattern="causal-window")
    with pytest.raises(ValueError, match="unknown pos 'alibi'"):
        small(pos="alibi")
    with pytest.raises(ValueError, match="block_size must be an integer >= "
                       "1, got 0"):
        small(block_size=0)
    prompt = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature must be a number >= "
                       "0.*got -1"):
        model.generate(prompt, 3, temperature=-1)
    with pytest.raises(ValueError, match="top_k must be an integer >= 1 or "
                       "None, got 0"):
        model.generate(prompt, 3, top_k=0)
    with pytest.raises(ValueError, match="max_new_tokens must be an integer"
                       " >= 0, got -1"):
        model.generate(prompt, -1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("attention", ["mha", "gin-attention"])
def test_cuda_cached_generation_equals_recomputed(attention):
    model = perturbed(small(attention=attention, pos="rope")).cuda().eval()
    prompt = torch.randint(0, V, (2, 3), device="cuda")
    out = model.generate(prompt, 20, temperature=0)
    assert out.device.type == "cuda"
    assert torch.equal(out, model.generate(prompt, 20, temperature=0,
                                           cache=False))
    gen = torch.Generator(device="cuda")
    a = model.generate(prompt, 20, generator=gen.manual_seed(1))
    b = model.generate(prompt, 20, cache=False, generator=gen.manual_seed(1))
    assert torch.equal(a, b)
