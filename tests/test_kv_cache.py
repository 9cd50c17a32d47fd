"""Decoding with a key/value cache: each new token is one new node that
attends to the cached keys and values of the nodes before it, and gives
what the whole causal graph gives at that position."""
import pytest
import torch

from tgnn_transformers.functional import complete_edge_index
from tgnn_transformers.nn import (GINAttentionConv, GraphTransformer,
                                  KeyValueCache, MultiHeadAttentionConv,
                                  PNAAttentionConv)

L, F, H = 7, 12, 3


def _step_edges(cached: int, new: int = 1) -> torch.Tensor:
    """Causal edges into ``new`` nodes numbered after ``cached`` ones."""
    target = torch.arange(new).repeat_interleave(cached + 1 +
                                                 torch.arange(new))
    source = torch.cat([torch.arange(cached + 1 + t) for t in range(new)])
    return torch.stack([source, target])


CONVS = {
    "mha": lambda: MultiHeadAttentionConv(F, F // H, heads=H, out_proj=True,
                                          root_weight=False, rope=True),
    "gin": lambda: GINAttentionConv(F, F // H, heads=H, rope=True),
    "pna": lambda: PNAAttentionConv(F, F // H, heads=H, delta=1.0,
                                    rope=True),
}


@pytest.mark.parametrize("name", CONVS)
def test_cached_steps_equal_the_causal_graph(name):
    torch.manual_seed(0)
    conv = CONVS[name]().eval()
    x = torch.randn(L, F)
    pos = torch.arange(L)
    full = conv(x, complete_edge_index(torch.tensor([L]), causal=True),
                pos=pos)
    cache = KeyValueCache()
    steps = [conv(x[t:t + 1], _step_edges(t), pos=pos[t:t + 1],
                  cache=cache) for t in range(L)]
    assert cache.size == L
    torch.testing.assert_close(torch.cat(steps), full, atol=1e-5,
                               rtol=1e-5)


def test_prefill_then_steps_through_a_transformer():
    torch.manual_seed(1)
    model = GraphTransformer(F, H, 2, attention="gin-attention",
                             attention_kwargs={"rope": True}).eval()
    x = torch.randn(L, F)
    pos = torch.arange(L)
    full = model(x, complete_edge_index(torch.tensor([L]), causal=True),
                 pos=pos)
    caches = [KeyValueCache() for _ in model.layers]
    prompt = 4
    first = model(x[:prompt], _step_edges(0, prompt), pos=pos[:prompt],
                  cache=caches)
    rest = [model(x[t:t + 1], _step_edges(t), pos=pos[t:t + 1],
                  cache=caches) for t in range(prompt, L)]
    torch.testing.assert_close(torch.cat([first] + rest), full, atol=1e-5,
                               rtol=1e-5)


def test_cache_checks_its_inputs():
    conv = CONVS["mha"]()
    with pytest.raises(ValueError, match="one KeyValueCache per layer"):
        GraphTransformer(F, H, 2)(torch.randn(1, F), _step_edges(0),
                                  cache=[KeyValueCache()])
    with pytest.raises(ValueError, match="not an \\(x_src, x_dst\\) pair"):
        conv((torch.randn(2, F), torch.randn(1, F)), _step_edges(0),
             pos=(torch.arange(2), torch.arange(1)), cache=KeyValueCache())


def test_cache_grows_and_returns_every_appended_row_in_order():
    # The buffer doubles past its capacity; what extend returns is the
    # concatenation of every call's keys and values (the reference).
    torch.manual_seed(0)
    cache, keys, values = KeyValueCache(), [], []
    for size in (5, 1, 1, 20, 1, 40):
        key, value = torch.randn(size, 2, 3), torch.randn(size, 2, 4)
        keys.append(key)
        values.append(value)
        got_key, got_value = cache.extend(key, value)
        assert torch.equal(got_key, torch.cat(keys))
        assert torch.equal(got_value, torch.cat(values))
        assert cache.size == got_key.size(0)
    assert torch.equal(cache.key, torch.cat(keys))


def test_cache_keeps_gradients_flowing_to_every_step():
    # With gradients (keys computed from parameters) the cache
    # concatenates: earlier steps' keys stay in the graph.
    cache = KeyValueCache()
    weight = torch.randn(3, requires_grad=True)
    for _ in range(3):
        key = (torch.ones(1, 1, 3) * weight)
        cache.extend(key, key * 2)
    (cache.key.sum() + cache.value.sum()).backward()
    assert torch.equal(weight.grad, torch.full((3, ), 9.0))
