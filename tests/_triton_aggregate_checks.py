"""The one-pass Triton aggregation (``functional/triton_aggregate.py``)
under Triton's interpreter, against the composed path of
``attention_aggregate`` (CSR products and the max / min pass), values and
gradients.

Not collected on its own: ``test_triton_attention.py`` runs it in a pytest
subprocess with ``TRITON_INTERPRET=1``.  Sizes are small: the interpreter
runs every program in numpy.
"""
import os

assert os.environ.get("TRITON_INTERPRET") == "1", \
    "run through tests/test_triton_attention.py (sets TRITON_INTERPRET=1)"

import pytest  # noqa: E402
import torch  # noqa: E402

from tgnn_transformers import PNAAttentionConv  # noqa: E402
from tgnn_transformers.functional import aggregate  # noqa: E402
from tgnn_transformers.functional import attention_aggregate  # noqa: E402
from tgnn_transformers.functional import triton_aggregate as tagg  # noqa

H, C = 2, 5  # not a power of two: masked channel lanes

REDUCES = [["sum"], ["mean"], ["max"], ["min"], ["var"], ["std"],
           ["mean", "min", "max", "std"], ["sum", "max", "var"]]


def _graph(seed=0):
    """A hub of 70 edges (several edge blocks), targets 1..11 with 4 edges
    each, a duplicate edge, nodes without incoming edges; shuffled (not
    CSR) order.  Every target with edges has several distinct sources, so
    no variance is 0 up to round-off (where its clamp at 0 would make
    both paths' gradients depend on the last bit)."""
    g = torch.Generator().manual_seed(seed)
    n = 24
    hub = torch.stack([torch.randint(0, n, (70, ), generator=g),
                       torch.zeros(70, dtype=torch.long)])
    targets = torch.arange(1, n // 2).repeat_interleave(4)
    sources = torch.stack([torch.randperm(n, generator=g)[:4]
                           for _ in range(n // 2 - 1)]).flatten()
    few = torch.stack([sources, targets])
    edges = torch.cat([hub, few, few[:, :1]], 1)
    return n, edges[:, torch.randperm(edges.size(1), generator=g)]


def _composed(monkeypatch):
    monkeypatch.setattr(aggregate, "triton_aggregate_available",
                        lambda value: False)


def _run(value, alpha, edge_index, n, reduce, grad):
    v = value.clone().requires_grad_()
    a = alpha.clone().requires_grad_()
    out = attention_aggregate(v, a, edge_index, n, reduce)
    (out * grad).sum().backward()
    return out, v.grad, a.grad


@pytest.mark.parametrize("reduce", REDUCES, ids="+".join)
@pytest.mark.parametrize("ties", [False, True])
def test_one_pass_equals_the_composed_path(monkeypatch, reduce, ties):
    torch.manual_seed(0)
    n, edge_index = _graph()
    value = (torch.randint(-2, 3, (n, H, C)).float() if ties else
             torch.randn(n, H, C))
    alpha = torch.rand(edge_index.size(1), H) + 0.05
    # dropped edges (no max / min, no weight): every 5th of the hub's
    hub = (edge_index[1] == 0).nonzero().flatten()
    alpha[hub[::5], 1] = 0.0
    grad = torch.randn(n, H, len(reduce), C)
    calls = []
    real = tagg._TritonAggregate.apply
    monkeypatch.setattr(tagg._TritonAggregate, "apply",
                        lambda *a: calls.append(1) or real(*a))
    ours = _run(value, alpha, edge_index, n, reduce, grad)
    assert calls, "the Triton pass was not taken"
    _composed(monkeypatch)
    expected = _run(value, alpha, edge_index, n, reduce, grad)
    assert len(calls) == 1
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_targets_without_edges_and_an_empty_graph_are_zero():
    value = torch.randn(4, H, C, requires_grad=True)
    edge_index = torch.tensor([[1, 2], [0, 0]])
    out = attention_aggregate(value, torch.ones(2, H), edge_index, 3,
                              ["mean", "max", "min", "std"])
    assert torch.equal(out[1:], torch.zeros(2, H, 4, C))
    out = attention_aggregate(value, torch.ones(0, H),
                              torch.zeros(2, 0, dtype=torch.long), 3,
                              ["sum", "max"])
    assert torch.equal(out, torch.zeros(3, H, 2, C))


def test_pna_attention_layer_through_the_one_pass(monkeypatch):
    torch.manual_seed(0)
    n, edge_index = _graph(1)
    conv = PNAAttentionConv(8, C, heads=H, delta=1.0,
                            aggregators=("mean", "min", "max", "std"),
                            scalers=("identity", "amplification"))
    x = torch.randn(n, 8, requires_grad=True)
    out = conv(x, edge_index)
    grads = torch.autograd.grad(out.square().sum(), [x, *conv.parameters()])
    _composed(monkeypatch)
    expected = conv(x, edge_index)
    ref = torch.autograd.grad(expected.square().sum(),
                              [x, *conv.parameters()])
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
