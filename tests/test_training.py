"""Each task trains a few epochs end to end and writes its files; resume
continues from the checkpoint and ends where an uninterrupted run ends."""
import json
import subprocess
import sys

import pytest
import torch

from tgnn_transformers.cli import build_parser, main
from tgnn_transformers.train import resolve_config, run_experiment


def check_outputs(out, runs):
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["runs"]) == runs
    assert 0.0 <= metrics["test"]["mean"] <= 1.0
    assert metrics["environment"]["torch"] == torch.__version__
    header = (out / "history.csv").read_text().splitlines()[0]
    for col in ("run", "epoch", "train_loss", "val_loss", "val", "test"):
        assert col in header
    assert (out / "curves.png").stat().st_size > 1000
    return metrics


@pytest.mark.parametrize("model", ["mha", "gin-attention", "pna-attention",
                                   "graph-transformer", "gat"])
def test_node_task_cli(model, env):
    out = env / "out"
    code = main(["train", "--task", "node", "--dataset", "cora", "--model",
                 model, "--epochs", "3", "--seeds", "0", "1", "--hidden",
                 "16", "--heads", "2", "--out", str(out), "--quiet"])
    assert code == 0
    metrics = check_outputs(out, runs=2)
    assert metrics["config"]["hidden"] == 16
    assert metrics["config"]["lr"] == 0.005  # from the packaged defaults


@pytest.mark.parametrize("model", ["gin-attention", "gin"])
def test_graph_task_folds(model, env):
    out = env / "out"
    assert main(["train", "--task", "graph", "--dataset", "mutag", "--model",
                 model, "--folds", "3", "--epochs", "2",
                 "--hidden", "16", "--out", str(out), "--quiet"]) == 0
    check_outputs(out, runs=3)


@pytest.mark.parametrize("model", ["gin-attention", "mha", "gat"])
def test_graph_task_attends_with_bond_types(model, data_mirror, tmp_path,
                                            monkeypatch):
    from tgnn_transformers.data import load_dataset
    from tgnn_transformers.train.recipes import graph_recipe
    monkeypatch.setenv("TGNN_DATA_MIRROR", str(data_mirror))
    dataset = load_dataset("mutag", root=str(tmp_path))
    with_edges = graph_recipe(dataset, resolve_config(
        "graph", "mutag", model, {"hidden": 16, "edge_features": True}),
        fold=0, seed=0)
    first = with_edges.model.encoder.convs[0]
    assert first.lin_edge is not None and first.lin_edge.in_channels == 4
    assert with_edges.train_epoch() > 0
    without = graph_recipe(dataset, resolve_config(
        "graph", "mutag", model, {"hidden": 16, "edge_features": False}),
        fold=0, seed=0)
    assert without.model.encoder.convs[0].lin_edge is None
    assert without.evaluate()["val"] >= 0


def test_link_task(env):
    out = env / "out"
    assert main(["train", "--task", "link", "--dataset", "cora", "--model",
                 "mha", "--epochs", "3", "--hidden", "16", "--out", str(out),
                 "--quiet"]) == 0
    metrics = check_outputs(out, runs=1)
    assert metrics["metric"] == "roc_auc"


def test_resume_ends_where_uninterrupted_run_ends(env):
    config = resolve_config("node", "cora", "gin-attention",
                            {"epochs": 8, "hidden": 16, "heads": 2,
                             "seeds": [0, 1]})
    full = run_experiment(config, env / "full", quiet=True)

    class Interrupt(Exception):
        pass

    def stop(run, epoch):
        if run == "seed1" and epoch == 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_experiment(config, env / "cut", quiet=True, on_epoch_end=stop)
    assert (env / "cut" / "checkpoints" / "seed0.done.pt").exists()
    assert not (env / "cut" / "metrics.json").exists()
    resumed = run_experiment(config, env / "cut", quiet=True, resume=True)
    for a, b in zip(full["runs"], resumed["runs"]):
        assert a["test"] == b["test"] and a["best_epoch"] == b["best_epoch"]
    hist_full = (env / "full" / "history.csv").read_text()
    assert hist_full == (env / "cut" / "history.csv").read_text()


def test_same_seed_same_result(env):
    config = resolve_config("node", "cora", "mha",
                            {"epochs": 3, "hidden": 16, "heads": 2})
    a = run_experiment(config, env / "a", quiet=True)
    b = run_experiment(config, env / "b", quiet=True)
    assert a["runs"][0]["test"] == b["runs"][0]["test"]
    assert (env / "a" / "history.csv").read_text() == \
        (env / "b" / "history.csv").read_text()


def test_help_documents_every_option():
    text = build_parser()._subparsers._group_actions[0].choices[
        "train"].format_help()
    for flag in ("--task", "--dataset", "--model", "--seeds", "--folds",
                 "--out", "--root", "--mirror", "--epochs", "--hidden",
                 "--heads", "--lr", "--dropout", "--resume", "--quiet"):
        assert flag in text
    result = subprocess.run([sys.executable, "-m", "tgnn_transformers.cli",
                             "train", "--help"], capture_output=True,
                            text=True)
    assert result.returncode == 0 and "TGNN_DATA_MIRROR" in result.stdout


def test_missing_data_is_a_clear_cli_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TGNN_DATA_ROOT", str(tmp_path / "root"))
    empty = tmp_path / "mirror"
    empty.mkdir()
    code = main(["train", "--dataset", "cora", "--mirror", str(empty),
                 "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2
    assert "TGNN_DATA_MIRROR" in capsys.readouterr().err
