"""The model registry drives the task models, the configuration, the CLI and
the documentation's table of models; unknown options and bad values raise."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import GATConv

from tgnn_transformers import GINAttentionConv, PNAAttentionConv
from tgnn_transformers.cli import build_parser, main
from tgnn_transformers.models import (MODELS, OPTIONS, build_model,
                                      get_model, model_names, models_table)
from tgnn_transformers.train import resolve_config
from tgnn_transformers.train.config import RECIPE_OPTIONS

ROOT = Path(__file__).resolve().parents[1]
#: the page with the table of models (docs/guides/command-line.md)
MODELS_PAGE = ROOT / "docs" / "guides" / "command-line.md"


def tiny_graphs():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(9, 5, generator=gen)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 6, 0, 4],
                               [1, 2, 0, 4, 3, 6, 7, 8, 6, 8, 0, 4]])
    batch = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    edge_attr = torch.rand(edge_index.size(1), 3, generator=gen)
    return x, edge_index, edge_attr, batch


def small_options(name):
    spec = get_model(name)
    options = {"hidden": 8}
    accepted = spec.accepted()
    if "heads" in accepted:
        options["heads"] = 2
    if "delta" in accepted:
        options["delta"] = 0.9
    return options


def small_model(task, name):
    """``(net, inputs)``: a small ``name`` model for ``task`` in eval mode
    and the arguments of its forward on :func:`tiny_graphs` (also used by
    test_serialization.py)."""
    x, edge_index, edge_attr, batch = tiny_graphs()
    options = small_options(name)
    if get_model(name).edge_features:
        options["edge_dim"] = 3
    else:
        edge_attr = None
    if task == "link":
        net = build_model(task, name, 5, **options).eval()
        pairs = torch.tensor([[0, 1, 2], [3, 4, 5]])
        return net, (x, edge_index, pairs, edge_attr)
    net = build_model(task, name, 5, 4, **options).eval()
    return net, (x, edge_index, edge_attr, batch)


@pytest.mark.parametrize("name", [n for n, s in MODELS.items()
                                  if "node" in s.tasks])
@pytest.mark.parametrize("task", ["node", "graph", "link"])
def test_every_model_builds_and_runs_for_every_task(name, task):
    net, inputs = small_model(task, name)
    out = net(*inputs)
    expected = {"link": (3, ), "node": (9, 4), "graph": (3, 4)}[task]
    assert out.shape == expected
    assert torch.isfinite(out).all()


def test_conv_stack_equals_pyg_layers_written_out():
    """``gat`` from the registry is PyG's GAT stack of the GAT paper."""
    torch.manual_seed(0)
    net = build_model("node", "gat", 5, 4, hidden=8, heads=2, out_heads=1,
                      dropout=0.0, attention_dropout=0.0).eval()
    first, last = GATConv(5, 4, heads=2), GATConv(8, 4, heads=1,
                                                   concat=False)
    first.load_state_dict(net.encoder.convs[0].state_dict())
    last.load_state_dict(net.encoder.convs[1].state_dict())
    x, edge_index, _, _ = tiny_graphs()
    expected = last(F.elu(first(x, edge_index)), edge_index)
    torch.testing.assert_close(net(x, edge_index), expected)


def test_graph_transformer_honours_its_attention_options():
    """Once silently dropped: the inner GIN-Attention gets its options."""
    net = build_model("node", "graph-transformer", 5, 3, hidden=8, heads=2,
                      attention="gin-attention", mlp_multiplier=4.0,
                      normalization="relu")
    convs = [layer.attention for layer in net.encoder.encoder.layers]
    assert all(isinstance(c, GINAttentionConv) for c in convs)
    assert all(c.mlp_multiplier == 4.0 and c.normalization == "relu"
               for c in convs)
    net = build_model("node", "graph-transformer", 5, 3, hidden=8, heads=2,
                      attention="pna-attention", delta=1.0,
                      aggregators=["max", "sum"])
    conv = net.encoder.encoder.layers[0].attention
    assert isinstance(conv, PNAAttentionConv)
    assert conv.aggregators == ("max", "sum")


@pytest.mark.parametrize("name, options, error, words", [
    ("gcn", {"mlp_multiplier": 4.0}, ValueError,
     ["'mlp_multiplier'", "'gcn'", "dropout, ffn_multiplier, hidden, "
      "norm, num_layers, residual, root_weight"]),
    ("gcn", {"ffn_multiplier": 1.0}, ValueError,
     ["'ffn_multiplier'", "'gcn'", "residual=True", "ffn_multiplier=0"]),
    ("sage", {"root_weight": False}, ValueError,
     ["'root_weight'", "'sage'"]),
    ("gps", {"local": "gps"}, ValueError, ["'local'", "gin", "'gps'"]),
    ("gps", {"attention_graph": "full"}, ValueError,
     ["'attention_graph'", "complete | local"]),
    ("graph-transformer", {"attention": "mha", "mlp_multiplier": 2.0},
     ValueError, ["'mlp_multiplier'", "'graph-transformer'"]),
    ("mha", {"dropout": 1.5}, ValueError, ["'dropout'", "[0, 1)", "1.5"]),
    ("mha", {"heads": 0}, ValueError, ["'heads'", "int in [1, inf)", "0"]),
    ("mha", {"heads": 2.5}, TypeError, ["'heads'", "2.5"]),
    ("mha", {"root_weight": "yes"}, TypeError, ["'root_weight'", "bool"]),
    ("gin-attention", {"normalization": "tanh"}, ValueError,
     ["'normalization'", "softmax | relu", "'tanh'"]),
    ("pna-attention", {"aggregators": "max"}, TypeError,
     ["'aggregators'", "list of"]),
    ("pna-attention", {"aggregators": ["max", "median"]}, ValueError,
     ["'aggregators'", "'median'"]),
    ("mha", {"hidden": 10, "heads": 3}, ValueError, ["'heads'", "divide"]),
    ("graph-transformer", {"attention": "gin"}, ValueError,
     ["'attention'", "gin-attention"]),
])
def test_bad_options_raise_naming_option_model_and_accepted(name, options,
                                                            error, words):
    with pytest.raises(error) as info:
        build_model("node", name, 5, 3, **options)
    for word in words:
        assert word in str(info.value)


def test_unknown_model_and_task():
    with pytest.raises(ValueError, match="unknown model 'bert'.*mha"):
        build_model("node", "bert", 5, 3)
    with pytest.raises(ValueError, match="unknown task 'audio'"):
        build_model("audio", "mha", 5, 3)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("link", "mha", 5, 3)
    with pytest.raises(ValueError, match=r"'pool'.*add \| mean.*'max'"):
        build_model("graph", "mha", 5, 3, pool="max")


def test_config_keys_are_checked_against_the_registry(tmp_path):
    config = resolve_config("node", "cora", "gcn")
    # shared defaults that gcn does not take are left out, not applied
    assert "heads" not in config and "attention_dropout" not in config
    assert resolve_config("node", "cora", "mha")["heads"] == 8
    with pytest.raises(ValueError, match="command line.*'heads'.*'gcn'"):
        resolve_config("node", "cora", "gcn", {"heads": 4})
    with pytest.raises(ValueError, match="'folds'.*node task"):
        resolve_config("node", "cora", "mha", {"folds": 3})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"node": {"defaults": {"layers": 2}}}))
    with pytest.raises(ValueError, match="bad.json.*unknown option 'layers'"):
        resolve_config("node", "cora", "mha", config_file=str(bad))
    bad.write_text(json.dumps({"node": {"models": {"gcn": {"heads": 2}}}}))
    with pytest.raises(ValueError, match="models.gcn.*'heads'"):
        resolve_config("node", "cora", "gcn", config_file=str(bad))


def test_packaged_defaults_resolve_for_every_model_task_and_dataset():
    from tgnn_transformers.train.config import load_defaults
    table = load_defaults()
    for task, section in table.items():
        for dataset in section.get("datasets", {}):
            for name, spec in MODELS.items():
                if task not in spec.tasks:
                    with pytest.raises(ValueError, match=f"not '{task}'"):
                        resolve_config(task, dataset, name)
                    continue
                config = resolve_config(task, dataset, name)
                assert config["model"] == name


def test_cli_flags_and_choices_come_from_the_registry(capsys):
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {a.dest: a for a in train._actions}
    assert list(flags["model"].choices) == list(MODELS)
    for option in list(OPTIONS.values()) + list(RECIPE_OPTIONS.values()):
        assert (option.name in flags) == option.user, option.name
        if option.user and option.choices is not None:
            assert tuple(flags[option.name].choices) == option.choices
    assert main(["models"]) == 0
    assert capsys.readouterr().out.strip() == models_table()


def test_cli_rejects_an_option_of_another_model_before_loading_data(
        tmp_path, capsys):
    tmp_path.joinpath("mirror").mkdir()
    code = main(["train", "--model", "gcn", "--mlp-multiplier", "4",
                 "--mirror", str(tmp_path / "mirror"), "--out",
                 str(tmp_path / "out"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "'mlp_multiplier'" in err and "'gcn'" in err
    assert not (tmp_path / "out").exists()


def test_mlp_norm_none_from_the_command_line():
    args = build_parser().parse_args(["train", "--mlp-norm", "none"])
    assert args.mlp_norm is None


def test_docs_model_table_is_the_registry():
    text = MODELS_PAGE.read_text()
    block = re.search(r"<!-- models:start -->\n(.*?)\n<!-- models:end -->",
                      text, re.S)
    assert block is not None, f"{MODELS_PAGE} lacks the models table markers"
    assert block.group(1).strip() == models_table()


def test_benchmark_lists_come_from_the_registry():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import accuracy
    finally:
        sys.path.pop(0)
    assert accuracy.NODE_MODELS == model_names(compared_on="node")
    assert accuracy.ATTENTION == set(model_names("attention"))


def test_tgnn_models_console_script():
    out = subprocess.run([sys.executable, "-m", "tgnn_transformers.cli",
                          "models"], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == models_table()
