"""The public shape of the attention convs: one constructor signature with
TransformerConv's shared arguments, PyG's forward order, the package-wide
names, TorchScript refused with a pointer to torch.compile, repr and
reset_parameters."""
import inspect

import pytest
import torch
from torch_geometric.nn import TransformerConv
from torch_geometric.utils import degree

from tgnn_transformers import functional
from tgnn_transformers.nn import (ATTENTION_CONVS, GINAttentionConv,
                                  GraphTransformer, GraphTransformerLayer,
                                  MultiHeadAttentionConv, PNAAttentionConv)

SHARED = ["in_channels", "out_channels", "heads", "concat", "beta", "dropout",
          "edge_dim", "bias", "root_weight", "out_proj", "backend", "rope"]
OPTIONS = {
    MultiHeadAttentionConv: [],
    GINAttentionConv: ["eps", "train_eps", "mlp_multiplier", "mlp_norm",
                       "sharpen", "normalization", "threshold", "top_k",
                       "gin_form", "mlp_dropout", "mlp_rounding",
                       "value_proj", "threshold_mode", "top_k_fraction"],
    PNAAttentionConv: ["aggregators", "scalers", "deg", "delta", "mixer",
                       "include_self", "mixer_multiplier", "mlp_norm",
                       "mlp_rounding", "value_proj", "normalization",
                       "threshold", "top_k", "threshold_mode",
                       "top_k_fraction"],
}
CONVS = list(OPTIONS)


def build(cls, *args, **kwargs):
    if cls is PNAAttentionConv:
        kwargs.setdefault("delta", 1.0)
    return cls(*args, **kwargs)


@pytest.mark.parametrize("cls", CONVS)
def test_one_constructor_signature(cls):
    params = inspect.signature(cls).parameters
    names = list(params)
    assert names == SHARED + OPTIONS[cls] + ["kwargs"]
    # TransformerConv's names, order and defaults, positional as there.
    ref = inspect.signature(TransformerConv).parameters
    for name in list(ref)[:-1]:  # all but **kwargs
        assert params[name].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert params[name].default == ref[name].default, name
    assert params["out_proj"].default is False
    assert params["backend"].default == "auto"
    for name in OPTIONS[cls]:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    # The shared arguments are documented in every class.
    for name in SHARED:
        assert f"\n        {name}: " in cls.__doc__, name
    for name in OPTIONS[cls]:
        assert f"\n        {name}: " in cls.__doc__, name
    assert "{shared_args}" not in cls.__doc__


@pytest.mark.parametrize("cls", CONVS)
def test_shared_arguments_positional_and_defaults(cls):
    conv = build(cls, 8, 4, 2, False, True, 0.1, 3, False, True, True,
                 "sparse")
    assert (conv.heads, conv.concat, conv.beta, conv.dropout, conv.edge_dim,
            conv.backend) == (2, False, True, 0.1, 3, "sparse")
    assert conv.lin_query.bias is None and conv.out_proj is not None
    assert conv.lin_skip is not None
    default = build(cls, 8, 4)
    assert default.root_weight and default.lin_skip is not None
    assert default.out_proj is None and default.heads == 1
    with pytest.raises(TypeError, match="epsilon"):
        build(cls, 8, 4, epsilon=0.1)


def test_variant_options_are_keyword_only():
    with pytest.raises(TypeError):
        GINAttentionConv(8, 4, 2, True, False, 0.0, None, True, True, False,
                         "auto", 0.5)  # eps cannot be positional
    conv = GINAttentionConv(8, 4, 2, eps=0.5, train_eps=False)
    assert torch.equal(conv.eps, torch.full((2, ), 0.5))


@pytest.mark.parametrize("cls", CONVS)
def test_forward_takes_pyg_argument_order(cls):
    params = inspect.signature(cls.forward).parameters
    assert list(params) == ["self", "x", "edge_index", "edge_attr", "batch",
                            "return_attention_weights", "pos", "attn_bias",
                            "cache"]
    for name in ("pos", "attn_bias", "cache"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    conv = build(cls, 8, 4, heads=2)
    x, edge_index = torch.randn(6, 8), torch.randint(0, 6, (2, 15))
    out, (ei, alpha) = conv(x, edge_index, None, None, True)
    assert alpha.shape == (15, 2) and ei is edge_index
    torch.testing.assert_close(conv(x, edge_index, None,
                                    torch.zeros(6, dtype=torch.long)),
                               out)
    with pytest.raises(TypeError, match="return_attention_weights"):
        conv(x, edge_index, None, True)


def test_attention_names():
    assert ATTENTION_CONVS == {"mha": MultiHeadAttentionConv,
                               "gin-attention": GINAttentionConv,
                               "pna-attention": PNAAttentionConv}
    for name, cls in ATTENTION_CONVS.items():
        kwargs = {"delta": 1.0} if cls is PNAAttentionConv else {}
        layer = GraphTransformerLayer(16, 2, name, attention_kwargs=kwargs)
        assert type(layer.attention) is cls
        # Named convs are built in the transformer form.
        assert layer.attention.out_proj is not None
        assert layer.attention.lin_skip is None
    with pytest.warns(DeprecationWarning, match="gin-attention"):
        layer = GraphTransformerLayer(16, 2, "gin")
    assert type(layer.attention) is GINAttentionConv
    with pytest.raises(ValueError, match="pna-attention"):
        GraphTransformerLayer(16, 2, "linformer")


@pytest.mark.parametrize("cls", CONVS)
def test_torch_jit_script_points_to_torch_compile(cls):
    conv = build(cls, 8, 4, heads=2)
    with pytest.raises(RuntimeError, match="torch.compile"):
        torch.jit.script(conv)

    class Model(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(8, 8)
            self.conv = conv

        def forward(self, x, edge_index):
            return self.conv(self.lin(x), edge_index)

    with pytest.raises(RuntimeError, match="torch.compile"):
        torch.jit.script(Model())
    with pytest.raises(RuntimeError, match="torch.compile"):
        torch.jit.script(GraphTransformer(8, 2, 2))


def test_repr_is_pygs_format():
    assert repr(MultiHeadAttentionConv(32, 16, heads=4)) == \
        "MultiHeadAttentionConv(32, 16, heads=4)"
    assert repr(TransformerConv(32, 16, heads=4)) == \
        "TransformerConv(32, 16, heads=4)"
    assert repr(GINAttentionConv(32, 16, heads=4, root_weight=False,
                                 out_proj=True)) == (
        "GINAttentionConv(32, 16, heads=4, out_proj=True, root_weight=False, "
        "mlp_multiplier=0.5, sharpen=True)")
    assert repr(PNAAttentionConv(32, 16, heads=4, delta=1.0)).startswith(
        "PNAAttentionConv(32, 16, heads=4, aggregators=")


@pytest.mark.parametrize("cls", CONVS)
def test_reset_parameters_reinitialises_every_weight(cls):
    conv = build(cls, 8, 4, heads=2, beta=True, out_proj=True, edge_dim=2)
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    conv.reset_parameters()
    after = conv.state_dict()
    random = [k for k in before if k.endswith("weight")
              and "norm" not in k]
    assert random and all(not torch.equal(before[k], after[k])
                          for k in random)


def test_in_degree_reads_the_cached_index():
    edge_index = torch.randint(0, 9, (2, 40))
    deg = functional.in_degree(edge_index, 9, 9)
    assert torch.equal(deg, degree(edge_index[1], 9, dtype=torch.long))
    assert "in_degree" in functional.__all__
