"""Conversions either reproduce the model or refuse, naming what they do not
support: ``GraphTransformerLayer.from_torch``'s activations."""
import functools

import pytest
import torch
import torch.nn.functional as F

from tgnn_transformers import GraphTransformerLayer
from tgnn_transformers.nn.graph_transformer import ACTIVATIONS


def test_tanh_and_exact_gelu_differ_enough_to_matter():
    x = torch.linspace(-6, 6, 4001)
    gap = (ACTIVATIONS["gelu_tanh"](x) - ACTIVATIONS["gelu"](x)).abs().max()
    assert gap > 1e-4
    torch.testing.assert_close(ACTIVATIONS["gelu_tanh"](x),
                               F.gelu(x, approximate="tanh"), atol=0, rtol=0)


# --------------------------------------------------------------------------
# torch.nn.TransformerEncoderLayer activations
# --------------------------------------------------------------------------
TANH = functools.partial(F.gelu, approximate="tanh")


@pytest.mark.parametrize("activation, name", [
    (torch.nn.GELU(approximate="tanh"), "gelu_tanh"), (TANH, "gelu_tanh"),
    (torch.nn.GELU(), "gelu"), (F.gelu, "gelu"), (torch.nn.ReLU(), "relu"),
    (torch.nn.SiLU(), "silu"), (F.silu, "silu")],
    ids=["GELU-tanh", "partial-tanh", "GELU", "F.gelu", "ReLU", "SiLU",
         "F.silu"])
def test_from_torch_reproduces_the_activation(activation, name):
    layer = torch.nn.TransformerEncoderLayer(
        16, 2, 32, dropout=0.0, activation=activation, batch_first=True)
    with torch.no_grad():  # wide pre-activations: tanh and erf GELU differ
        layer.linear1.weight.mul_(20)
    graph_layer = GraphTransformerLayer.from_torch(layer)
    assert graph_layer.ffn.activation == name
    x = torch.randn(1, 6, 16)
    edge_index = torch.cartesian_prod(torch.arange(6), torch.arange(6)).t()
    # Grad enabled: torch's module path (its fused inference kernel knows
    # only the exact GELU).
    reference = layer(x.requires_grad_())[0]
    out = graph_layer(x[0], edge_index)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    if name == "gelu_tanh":
        exact = torch.nn.TransformerEncoderLayer(
            16, 2, 32, dropout=0.0, activation="gelu", batch_first=True)
        exact.load_state_dict(layer.state_dict())
        assert not torch.allclose(exact(x)[0], reference, atol=1e-5)


@pytest.mark.parametrize("activation", [
    torch.nn.LeakyReLU(), torch.nn.Mish(), torch.tanh,
    functools.partial(F.gelu, approximate="tanh", inplace=True)],
    ids=["LeakyReLU", "Mish", "tanh", "partial-extra-keyword"])
def test_from_torch_refuses_other_activations(activation):
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0,
                                             activation=activation)
    with pytest.raises(ValueError, match="from_torch supports the "
                       "activations relu .* gelu_tanh"):
        GraphTransformerLayer.from_torch(layer)
