"""``state_dict`` round trips through ``torch.save`` and
``torch.load(..., weights_only=True)`` for every layer and every model of
the registry on every task: a freshly built module (another seed) that
loads the file with ``strict=True`` gives bit-identical outputs; an
optimizer's state survives the same trip, so training continues exactly."""
import pytest
import torch

from test_registry import small_model, tiny_graphs
from tgnn_transformers import (GINAttentionConv, MultiHeadAttentionConv,
                               PNAAttentionConv)
from tgnn_transformers.models import MODELS
from tgnn_transformers.nn import (GraphTransformer, GraphTransformerLayer,
                                  HeadwiseMLP, LearnedPositionalEncoding,
                                  RelativePositionBias, RotaryEmbedding,
                                  SinusoidalPositionalEncoding)

X, EDGES, EDGE_ATTR, BATCH = tiny_graphs()
POS = torch.tensor([0, 1, 2, 0, 1, 0, 1, 2, 3])


def conv_inputs():
    return (X, EDGES, EDGE_ATTR)


# name -> (constructor, inputs)
LAYERS = {
    "mha": (lambda: MultiHeadAttentionConv(5, 4, heads=2, beta=True,
                                           edge_dim=3), conv_inputs),
    "mha-rope": (lambda: MultiHeadAttentionConv(5, 4, heads=2, rope=True),
                 lambda: (X, EDGES, dict(pos=POS))),
    "gin-attention": (lambda: GINAttentionConv(5, 4, heads=2, edge_dim=3,
                                               train_eps=False, top_k=2),
                      conv_inputs),
    "pna-attention": (lambda: PNAAttentionConv(5, 4, heads=2, edge_dim=3,
                                               delta=0.9, mixer="mlp"),
                      conv_inputs),
    "transformer-layer": (lambda: GraphTransformerLayer(
        6, 2, "gin-attention", edge_dim=3,
        attention_kwargs=dict(mlp_multiplier=1.0)),
        lambda: (torch.randn(9, 6), EDGES, EDGE_ATTR)),
    "transformer-batchnorm": (lambda: GraphTransformer(
        6, 2, 2, attention="pna-attention", norm="batch",
        attention_kwargs=dict(delta=0.9)),
        lambda: (torch.randn(9, 6), EDGES)),
    "headwise-mlp": (lambda: HeadwiseMLP(2, 3, 4, 3),
                     lambda: (torch.randn(9, 2, 3), )),
    "sinusoidal": (lambda: SinusoidalPositionalEncoding(6),
                   lambda: (torch.randn(9, 6), POS)),
    "learned-positions": (lambda: LearnedPositionalEncoding(6, 8),
                          lambda: (torch.randn(9, 6), POS)),
    "rotary": (lambda: RotaryEmbedding(4),
               lambda: (torch.randn(9, 2, 4), POS)),
    "relative-bias": (lambda: RelativePositionBias(2, num_buckets=8),
                      lambda: (EDGES, POS)),
}


def round_trip(module, path):
    torch.save(module.state_dict(), path)
    return torch.load(path, weights_only=True)


def forward(module, inputs):
    """``inputs``: positional arguments, keyword arguments last as a
    dict."""
    kwargs = inputs[-1] if isinstance(inputs[-1], dict) else {}
    args = inputs[:-1] if kwargs else inputs
    out = module(*args, **kwargs)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_state_dict_round_trip(name, tmp_path):
    make, inputs = LAYERS[name]
    torch.manual_seed(0)
    layer = make()
    with torch.no_grad():  # off the initial values, buffers included
        for t in list(layer.parameters()) + [
                b for b in layer.buffers() if b.is_floating_point()]:
            t.add_(0.1 * torch.randn_like(t))
    args = inputs()
    layer.train()
    forward(layer, args)  # BatchNorm running statistics move
    layer.eval()
    expected = forward(layer, args)
    state = round_trip(layer, tmp_path / "layer.pt")
    torch.manual_seed(1)
    fresh = make().eval()
    if any(True for _ in fresh.parameters()):
        assert not torch.equal(forward(fresh, args), expected)
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(forward(fresh, args), expected)


@pytest.mark.parametrize("name", [n for n, s in MODELS.items()
                                  if "node" in s.tasks])
@pytest.mark.parametrize("task", ["node", "graph", "link"])
def test_model_state_dict_round_trip(task, name, tmp_path):
    torch.manual_seed(0)
    net, inputs = small_model(task, name)
    expected = net(*inputs)
    state = round_trip(net, tmp_path / "model.pt")
    torch.manual_seed(1)
    fresh, _ = small_model(task, name)
    assert not torch.equal(fresh(*inputs), expected)
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh(*inputs), expected)


def test_training_continues_exactly_after_a_checkpoint(tmp_path):
    """Model and Adam state through weights_only=True: the next step is the
    same as without the trip."""
    def step(net, opt, inputs):
        opt.zero_grad()
        net(*inputs).square().mean().backward()
        opt.step()

    torch.manual_seed(0)
    net, inputs = small_model("node", "gin-attention")
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    step(net, opt, inputs)
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(),
                "epoch": 1}, tmp_path / "ckpt.pt")
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    torch.manual_seed(1)
    fresh, _ = small_model("node", "gin-attention")
    fresh.train()
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-2)
    fresh.load_state_dict(checkpoint["model"], strict=True)
    fresh_opt.load_state_dict(checkpoint["optimizer"])
    torch.manual_seed(2)
    step(net, opt, inputs)
    torch.manual_seed(2)
    step(fresh, fresh_opt, inputs)
    for a, b in zip(net.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
