"""``output_layer``: the last layer of a GIN-/PNA-Attention conv stack, a conv
of the model itself (``same``) or a plain multi-head attention conv
(``mha``), checked once by the registry (benchmarks/results/ablation.md)."""
import pytest
import torch
import torch.nn.functional as F

from tgnn_transformers import (GINAttentionConv, MultiHeadAttentionConv,
                               PNAAttentionConv)
from tgnn_transformers.models import MODELS, build_model, get_model
from tgnn_transformers.models.registry import VARIANT_OPTIONS
from tgnn_transformers.train import resolve_config


def graph():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(9, 5, generator=gen)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 6, 0, 4],
                               [1, 2, 0, 4, 3, 6, 7, 8, 6, 8, 0, 4]])
    return x, edge_index


@pytest.mark.parametrize("name, first_layer, extra", [
    ("gin-attention", GINAttentionConv, {"mlp_multiplier": 2.0}),
    ("pna-attention", PNAAttentionConv, {"delta": 1.0}),
])
@pytest.mark.parametrize("root_weight", [False, True])
def test_mha_output_layer_equals_the_stack_written_out(name, first_layer,
                                                       extra, root_weight):
    """The registry's stack is the model's conv, ELU, then a plain
    MultiHeadAttentionConv averaging out_heads heads to the classes."""
    torch.manual_seed(0)
    net = build_model("node", name, 5, 3, hidden=8, heads=2, out_heads=2,
                      dropout=0.0, attention_dropout=0.0,
                      root_weight=root_weight, output_layer="mha",
                      **extra).eval()
    first = first_layer(5, 4, heads=2, concat=True, out_proj=False,
                        root_weight=root_weight, **extra)
    last = MultiHeadAttentionConv(8, 3, heads=2, concat=False,
                                  out_proj=False, root_weight=root_weight)
    assert type(net.encoder.convs[1]) is MultiHeadAttentionConv
    first.load_state_dict(net.encoder.convs[0].state_dict())
    last.load_state_dict(net.encoder.convs[1].state_dict())
    x, edge_index = graph()
    expected = last(F.elu(first(x, edge_index)), edge_index)
    torch.testing.assert_close(net(x, edge_index), expected)


@pytest.mark.parametrize("name", ["gin-attention", "pna-attention"])
def test_same_output_layer_is_the_default_and_keeps_the_stack(name):
    assert get_model(name).default("output_layer") == "same"
    options = {"hidden": 8, "heads": 2, "delta": 1.0} \
        if name == "pna-attention" else {"hidden": 8, "heads": 2}
    net = build_model("node", name, 5, 3, **options)
    assert type(net.encoder.convs[-1]) is MODELS[name].layer
    # one layer: that layer is the output layer
    net = build_model("node", name, 5, 3, num_layers=1, output_layer="mha",
                      **options)
    assert [type(c) for c in net.encoder.convs] == [MultiHeadAttentionConv]


def test_mha_output_layer_runs_on_sampled_blocks():
    torch.manual_seed(0)
    net = build_model("node", "gin-attention", 5, 3, hidden=8, heads=2,
                      output_layer="mha").eval()
    x, edge_index = graph()
    blocks = [(edge_index, 9), (edge_index, 9)]
    torch.testing.assert_close(net.encoder.forward_blocks(x, blocks),
                               net(x, edge_index))


@pytest.mark.parametrize("name, options, words", [
    ("gin-attention", {"output_layer": "linear"},
     ["'output_layer'", "same | mha", "'linear'"]),
    ("gin-attention", {"output_layer": "mha", "residual": True},
     ["'output_layer'", "residual=False", "output_layer='mha'",
      "residual=True"]),
    ("mha", {"output_layer": "mha"}, ["'output_layer'", "'mha'"]),
    ("gat", {"output_layer": "mha"}, ["'output_layer'", "'gat'"]),
    ("graph-transformer", {"attention": "gin-attention",
                           "output_layer": "mha"},
     ["'output_layer'", "'graph-transformer'"]),
])
def test_output_layer_is_checked_once(name, options, words):
    with pytest.raises(ValueError) as info:
        build_model("node", name, 5, 3, **options)
    for word in words:
        assert word in str(info.value)


def test_output_layer_is_a_stack_option_not_a_conv_option():
    # A graph transformer or gps hands VARIANT_OPTIONS to its attention
    # conv; output_layer is no argument of any conv.
    assert "output_layer" not in VARIANT_OPTIONS


@pytest.mark.parametrize("dataset", ["cora", "citeseer"])
@pytest.mark.parametrize("name", ["gin-attention", "pna-attention"])
def test_packaged_defaults_use_the_mha_output_layer_on_planetoid(dataset,
                                                                 name):
    assert resolve_config("node", dataset, name)["output_layer"] == "mha"
    # explicit wins; the paper preset stays as published
    assert resolve_config("node", dataset, name, {"output_layer": "same"}
                          )["output_layer"] == "same"
    assert resolve_config("node", "pubmed", name)["output_layer"] == "same"


@pytest.mark.parametrize("name", ["gin-attention", "pna-attention"])
def test_paper_preset_keeps_the_published_last_layer(name):
    config = resolve_config("node", "cora", name, preset="paper")
    assert config["output_layer"] == "same"
    # graph transformers take only the conv options of a preset
    config = resolve_config("node", "cora", "graph-transformer",
                            {"attention": name}, preset="paper")
    assert "output_layer" not in config


@pytest.mark.parametrize("task", ["text", "lm"])
def test_tasks_without_a_conv_stack_refuse_an_mha_output_layer(task):
    with pytest.raises(ValueError, match=r"output_layer.*'same'.*'mha'"):
        build_model(task, "gin-attention", 30, 3 if task == "text" else
                    None, hidden=8, heads=2, output_layer="mha")


@pytest.mark.parametrize("name", ["gin-attention", "pna-attention"])
def test_a_conv_takes_its_preset_without_the_stacks_options(name):
    from tgnn_transformers import GINAttentionConv, PNAAttentionConv
    spec = get_model(name)
    conv_options = spec.conv_preset("paper")
    assert "output_layer" in spec.preset("paper")
    assert "output_layer" not in conv_options
    cls = GINAttentionConv if name == "gin-attention" else PNAAttentionConv
    extra = {"delta": 1.0} if name == "pna-attention" else {}
    conv = cls(8, 4, heads=2, **conv_options, **extra)
    out = conv(torch.randn(5, 8), torch.tensor([[0, 1, 2], [1, 2, 3]]))
    assert out.shape == (5, 8)
