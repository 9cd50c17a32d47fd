import pytest
import torch

from tgnn_transformers.nn import HeadwiseLinear, HeadwiseMLP


def concatenated(head, x, factors):
    # The input forward_scaled stands for, built explicitly.
    parts = [] if head is None else [head]
    parts += [x if f is None else x * f.view(-1, 1, 1) for f in factors]
    return torch.cat(parts, dim=-1)


@pytest.mark.parametrize("module", ["linear", "mlp"])
@pytest.mark.parametrize("with_head", [True, False])
@pytest.mark.parametrize("identity_only", [True, False])
def test_forward_scaled_equals_forward_of_the_concatenation(
        module, with_head, identity_only):
    torch.manual_seed(0)
    n, heads, width, lead = 6, 3, 4, 2
    factors = ([None, None] if identity_only else
               [None, torch.rand(n, dtype=torch.float64) + 0.5,
                torch.rand(n, dtype=torch.float64) + 0.5])
    in_channels = (lead if with_head else 0) + len(factors) * width
    layer = (HeadwiseLinear(heads, in_channels, 5) if module == "linear"
             else HeadwiseMLP(heads, in_channels, 7, 5)).double()
    head = (torch.randn(n, heads, lead, dtype=torch.float64,
                        requires_grad=True) if with_head else None)
    x = torch.randn(n, heads, width, dtype=torch.float64, requires_grad=True)
    inputs = [t for t in (head, x) if t is not None]
    ours = layer.forward_scaled(head, x, factors)
    expected = layer(concatenated(head, x, factors))
    torch.testing.assert_close(ours, expected)
    grad = torch.randn_like(ours)
    params = inputs + list(layer.parameters())
    for a, b in zip(torch.autograd.grad(ours, params, grad),
                    torch.autograd.grad(expected, params, grad)):
        torch.testing.assert_close(a, b)


def test_forward_scaled_names_a_width_mismatch():
    layer = HeadwiseLinear(2, 10, 3)
    with pytest.raises(ValueError, match="10 input channels, got 2 \\+ 2 x 3"):
        layer.forward_scaled(torch.randn(4, 2, 2), torch.randn(4, 2, 3),
                             [None, None])
