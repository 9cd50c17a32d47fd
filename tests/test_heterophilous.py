"""Heterophilous node classification: Minesweeper and Tolokers through
PyG's ``HeterophilousGraphDataset`` from the mirror (and a fixture in the
exact ``.npz`` layout), their 10 fixed splits as runs, ROC-AUC as their
metric (against scikit-learn and a count of pairs)."""
import json
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fixtures import write_heterophilous
from tgnn_transformers.cli import main
from tgnn_transformers.data import SOURCES, get_source, load_dataset
from tgnn_transformers.train import resolve_config
from tgnn_transformers.train.recipes import node_recipe, node_splits, roc_auc
from tgnn_transformers.train.recipes.node import binary_scores, runs
from tgnn_transformers.train.runner import run_seed

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.fixture
def fixture_mirror(tmp_path):
    """A mirror holding a small ``minesweeper.npz`` in the upstream
    layout (60 nodes, 4 features, 10 splits)."""
    mirror = tmp_path / "mirror"
    write_heterophilous(mirror / "heterophilous" / "minesweeper",
                        "minesweeper")
    return mirror


@pytest.mark.parametrize("name, nodes, edges, features, split", [
    ("minesweeper", 10_000, 78_804, 7, (5000, 2500, 2500)),
    ("tolokers", 11_758, 1_038_000, 10, (5879, 2939, 2940)),
])
def test_from_mirror_with_ten_fixed_splits(name, nodes, edges, features,
                                           split, tmp_path, data_mirror):
    dataset = load_dataset(name, root=tmp_path, mirror=data_mirror)
    data = dataset[0]
    assert (data.num_nodes, data.num_edges, data.num_features) == \
        (nodes, edges, features)
    assert dataset.num_classes == 2
    assert data.train_mask.shape == (nodes, 10)
    for k in range(10):
        masks = node_splits(data, k)
        assert tuple(int(m.sum()) for m in masks) == split
        assert not (masks[0] & masks[1]).any()
        assert not (masks[1] & masks[2]).any()
    assert not torch.equal(node_splits(data, 0)[0], node_splits(data, 1)[0])
    # PyG's folder layout: <root>/heterophilous/<name>/{raw,processed}.
    assert (tmp_path / "heterophilous" / name / "raw" / f"{name}.npz"
            ).is_file()
    assert (tmp_path / "heterophilous" / name / "processed").is_dir()


def test_fixture_in_the_upstream_layout_loads(tmp_path, fixture_mirror):
    data = load_dataset("minesweeper", root=tmp_path / "root",
                        mirror=fixture_mirror)[0]
    raw = np.load(fixture_mirror / "heterophilous" / "minesweeper" / "raw" /
                  "minesweeper.npz")
    assert data.num_nodes == 60
    # Each undirected edge once in the file, both directions in the graph.
    assert data.num_edges == 2 * len(raw["edges"])
    assert torch.equal(data.train_mask,
                       torch.from_numpy(raw["train_masks"]).t())
    assert torch.equal(node_splits(data, 3)[1],
                       torch.from_numpy(raw["val_masks"][3]))


def test_sources_carry_metric_and_splits():
    assert get_source("minesweeper").metric == "roc_auc"
    assert get_source("tolokers").metric == "roc_auc"
    assert get_source("roman-empire").metric == "accuracy"
    assert get_source("cora").metric == "accuracy"
    assert get_source("minesweeper").splits == 10
    assert get_source("cora").splits == 1
    assert get_source("cornell5").splits == 5
    assert get_source("cornell5").random_splits
    assert {k for k, s in SOURCES.items() if s.family == "heterophilous"} \
        == {"roman-empire", "amazon-ratings", "minesweeper", "tolokers",
            "questions"}


def test_runs_are_splits_times_seeds():
    config = resolve_config("node", "minesweeper", "gcn")
    assert config["splits"] == list(range(10))
    assert runs(config) == [{"split": k, "seed": 0} for k in range(10)]
    config = resolve_config("node", "tolokers", "mha",
                            {"splits": [2, 5], "seeds": [0, 1]})
    assert runs(config) == [{"split": 2, "seed": 0}, {"split": 2, "seed": 1},
                            {"split": 5, "seed": 0}, {"split": 5, "seed": 1}]
    # One split: one run per seed, named as before.
    config = resolve_config("node", "cora", "gat", {"seeds": [0, 1, 2]})
    assert config["splits"] == [0]
    assert runs(config) == [{"seed": 0}, {"seed": 1}, {"seed": 2}]
    # Random splits (LINKX): five by default, any index allowed.
    assert resolve_config("node", "cornell5", "gcn")["splits"] == \
        list(range(5))
    assert runs(resolve_config("node", "cornell5", "gcn",
                               {"splits": [7]})) == [{"split": 7, "seed": 0}]
    # Runs of one seed start from different random states.
    assert len({run_seed(r) for r in runs(resolve_config(
        "node", "minesweeper", "gcn"))}) == 10
    assert run_seed({"seed": 2, "fold": 3}) == 2003  # the graph task's


@pytest.mark.parametrize("dataset, splits, words", [
    ("minesweeper", [10], ["'minesweeper'", "10 split(s), 0-9", "[10]"]),
    ("cora", [1], ["'cora'", "1 split(s), 0", "[1]"]),
    ("tolokers", [1, 1], ["repeats 1", "each value counts once", "[1, 1]"]),
])
def test_bad_splits_name_the_data_set_and_its_splits(dataset, splits,
                                                     words):
    with pytest.raises(ValueError) as info:
        resolve_config("node", dataset, "gcn", {"splits": splits})
    for word in words:
        assert word in str(info.value)


def test_cli_checks_splits_before_loading_data(tmp_path, capsys):
    (tmp_path / "mirror").mkdir()
    code = main(["train", "--dataset", "minesweeper", "--model", "gcn",
                 "--splits", "12", "--mirror", str(tmp_path / "mirror"),
                 "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "0-9" in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------
# ROC-AUC
# --------------------------------------------------------------------------

def pair_count_auc(scores, labels):
    """The probability that a positive outscores a negative (ties half)."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@given(st.lists(st.tuples(st.integers(-4, 4), st.booleans()), min_size=2,
                max_size=40))
def test_roc_auc_equals_sklearn_and_the_pair_count(rows):
    """Integer scores, so ties are frequent."""
    scores = [float(s) for s, _ in rows]
    labels = [y for _, y in rows]
    got = roc_auc(torch.tensor(scores), torch.tensor(labels))
    if all(labels) or not any(labels):
        assert np.isnan(got)
        return
    assert got == pytest.approx(
        sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)
    assert got == pytest.approx(pair_count_auc(scores, labels), abs=1e-12)


def test_binary_scores_rank_as_the_positive_probability():
    logits = torch.randn(50, 2)
    labels = torch.randint(0, 2, (50, ))
    prob = logits.softmax(-1)[:, 1]
    assert roc_auc(binary_scores(logits), labels) == pytest.approx(
        sklearn_metrics.roc_auc_score(labels.numpy(), prob.numpy()))


def test_node_recipe_scores_binary_heterophilous_data_by_roc_auc(
        tmp_path, fixture_mirror):
    data = load_dataset("minesweeper", root=tmp_path / "root",
                        mirror=fixture_mirror)[0]
    config = resolve_config("node", "minesweeper", "gcn",
                            {"hidden": 8, "num_layers": 2, "epochs": 2})
    recipe = node_recipe(data, 2, config, split=4)
    assert recipe.metric == "roc_auc" and recipe.higher_is_better
    recipe.train_epoch()
    scores = recipe.evaluate()
    recipe.model.eval()
    with torch.no_grad():
        logits = recipe.model(data.x, data.edge_index)
    for name, mask in zip(("train", "val", "test"), node_splits(data, 4)):
        prob = logits.softmax(-1)[mask, 1]
        assert scores[name] == pytest.approx(sklearn_metrics.roc_auc_score(
            data.y[mask].numpy(), prob.numpy()), abs=1e-6)
    with pytest.raises(ValueError, match="ROC-AUC, which needs 2 classes"):
        node_recipe(data, 3, config)


def test_cli_runs_the_selected_splits(tmp_path, fixture_mirror,
                                      monkeypatch):
    monkeypatch.setenv("TGNN_DATA_ROOT", str(tmp_path / "root"))
    out = tmp_path / "out"
    assert main(["train", "--dataset", "minesweeper", "--model", "mha",
                 "--mirror", str(fixture_mirror), "--epochs", "2",
                 "--hidden", "8", "--heads", "2", "--num-layers", "2",
                 "--splits", "0", "3", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metric"] == "roc_auc"
    assert [r["run"] for r in metrics["runs"]] == [
        {"split": 0, "seed": 0}, {"split": 3, "seed": 0}]
    assert metrics["config"]["splits"] == [0, 3]
    # The Platonov et al. defaults of the data set were applied.
    assert metrics["config"]["residual"] is True
    assert metrics["config"]["self_loops"] is False
    assert (out / "checkpoints" / "split3-seed0.done.pt").is_file()


def test_minesweeper_end_to_end_on_the_mirror(tmp_path, data_mirror,
                                              monkeypatch):
    """A few epochs of every kind of model on the real graph."""
    monkeypatch.setenv("TGNN_DATA_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("TGNN_DATA_MIRROR", str(data_mirror))
    for model, extra in (("gin-attention", []),
                         ("gps", ["--attention-graph", "local"])):
        out = tmp_path / model
        assert main(["train", "--dataset", "minesweeper", "--model", model,
                     "--epochs", "2", "--hidden", "16", "--heads", "2",
                     "--num-layers", "2", "--splits", "0", *extra,
                     "--out", str(out), "--quiet"]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert 0.0 <= metrics["test"]["mean"] <= 1.0
        assert metrics["metric"] == "roc_auc"
    shutil.rmtree(tmp_path / "root")


def test_ogb_node_task_loads_its_split_as_masks(tmp_path, monkeypatch):
    """The one-split data sets go through the same load / runs / build
    (an OGB graph: its split as masks, edges made undirected)."""
    pytest.importorskip("ogb")
    from fixtures import write_ogbn_arxiv
    from tgnn_transformers.train.config import recipe_module
    mirror = tmp_path / "mirror"
    write_ogbn_arxiv(mirror / "ogb" / "ogbn_arxiv")
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("prompted"))
    config = resolve_config("node", "ogbn-arxiv", "gcn",
                            {"hidden": 8, "seeds": [0, 1], "pe": "rw",
                             "pe_dim": 3})
    recipes = recipe_module("node")
    loaded = recipes.load(config, root=tmp_path / "root", mirror=mirror)
    assert int(loaded.data.train_mask.sum()) == 24
    assert loaded.pe.shape == (40, 3)
    assert recipes.runs(config) == [{"seed": 0}, {"seed": 1}]
    recipe = recipes.build(loaded, config, {"seed": 0})
    assert recipe.metric == "accuracy" and recipe.train_epoch() > 0
