"""Runs that fail early and clearly, resume honestly, survive kill -9, and
leave strict, readable files."""
import io
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tgnn_transformers.cli import main
from tgnn_transformers.train import resolve_config, run_experiment
from tgnn_transformers.train.io import (CheckpointError, load_checkpoint,
                                        save_checkpoint, write_json)
from tgnn_transformers.train.loop import Progress
from tgnn_transformers.train.runner import ResumeError, summarize
from fixtures import wait_for_checkpoint

ROOT = Path(__file__).resolve().parents[1]

# (arguments, words the one-line error must contain)
CLI_BAD_INPUTS = [
    (["--epochs", "0"], ["'epochs'", "[1, inf)", "0"]),
    (["--epochs", "-5"], ["'epochs'", "-5"]),
    (["--task", "graph", "--dataset", "mutag", "--folds", "0"],
     ["'folds'", "[2, inf)"]),
    (["--task", "graph", "--dataset", "mutag", "--folds", "1"],
     ["'folds'", "got 1"]),
    (["--heads", "0"], ["'heads'", "got 0"]),
    (["--hidden", "10", "--heads", "3"], ["'heads'", "divide", "hidden=10"]),
    (["--task", "graph", "--dataset", "cora"],
     ["'cora'", "node data set", "graph task", "mutag"]),
    (["--task", "node", "--dataset", "mutag"],
     ["'mutag'", "graph data set", "node task", "cora"]),
    (["--dataset", "imagenet"], ["unknown dataset 'imagenet'", "cora"]),
    (["--mirror", "/nonexistent/mirror"], ["--mirror", "/nonexistent"]),
    (["--config", "/nonexistent/c.json"], ["--config", "no such file"]),
    (["--lr", "0"], ["'lr'", "(0, inf)"]),
    (["--dropout", "1.0"], ["'dropout'", "[0, 1)"]),
    (["--attention-dropout", "-0.1"], ["'attention_dropout'"]),
    (["--weight-decay", "-1"], ["'weight_decay'"]),
    (["--patience", "0"], ["'patience'"]),
    (["--model", "gcn", "--heads", "4"], ["'heads'", "'gcn'"]),
    (["--model", "mha", "--mlp-multiplier", "2"],
     ["'mlp_multiplier'", "'mha'"]),
    (["--folds", "3"], ["'folds'", "node task"]),
    (["--task", "link", "--batch-size", "8"], ["'batch_size'", "link"]),
    (["--task", "graph", "--dataset", "mutag", "--decoder", "mlp"],
     ["'decoder'"]),
    (["--seeds", "-1"], ["'seeds'", "-1"]),
    (["--task", "link", "--val-ratio", "1.5"], ["'val_ratio'", "(0, 1)"]),
    (["--checkpoint-every", "0"], ["'checkpoint_every'"]),
    (["--model", "gin-attention", "--mlp-multiplier", "0"],
     ["'mlp_multiplier'", "(0, inf)"]),
    (["--model", "pna-attention", "--scalers", "identity", "cubic"],
     None),  # argparse rejects the choice (exit 2)
]


@pytest.mark.parametrize("args, words", CLI_BAD_INPUTS,
                         ids=[" ".join(a) for a, _ in CLI_BAD_INPUTS])
def test_cli_bad_input_exits_2_with_one_line_before_any_work(
        args, words, tmp_path, capsys):
    out = tmp_path / "out"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    argv = ["train", "--out", str(out), "--quiet"]
    if "--mirror" not in args:
        argv += ["--mirror", str(mirror)]
    try:
        code = main(argv + args)
    except SystemExit as exc:  # argparse's own choice check
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    if words is not None:
        assert len(err.splitlines()) == 1, err
        assert err.startswith("tgnn: error:")
        for word in words:
            assert word in err, (word, err)
    assert not out.exists()  # nothing was started


def small(**overrides):
    return resolve_config("node", "cora", "mha",
                          {"epochs": 4, "hidden": 8, "heads": 2, **overrides})


def test_resume_with_other_settings_refuses_naming_them(env):
    run_experiment(small(), env / "run", quiet=True)
    with pytest.raises(ResumeError, match=r"hidden: 8 -> 16.*lr: 0.005 -> "
                       r"0.01"):
        run_experiment(small(hidden=16, lr=0.01), env / "run", quiet=True,
                       resume=True)
    # the same settings resume (here: read the finished runs back)
    again = run_experiment(small(), env / "run", quiet=True, resume=True)
    assert again["runs"][0]["best_epoch"] >= 1


def test_resume_refusal_on_the_cli(env, capsys):
    base = ["train", "--epochs", "2", "--hidden", "8", "--heads", "2",
            "--out", str(env / "run"), "--quiet"]
    assert main(base) == 0
    capsys.readouterr()
    assert main(base[:-3] + ["--hidden", "16", "--out", str(env / "run"),
                             "--quiet", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "hidden: 8 -> 16" in err and len(err.strip().splitlines()) == 1


def test_corrupt_or_truncated_checkpoint_is_never_loaded(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"w": torch.arange(100.0), "epoch": 3}, path)
    assert load_checkpoint(path)["epoch"] == 3
    blob = path.read_bytes()
    path.write_bytes(blob[:-10])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)
    flipped = bytearray(blob)
    flipped[-5] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="wrong header"):
        load_checkpoint(path)


def test_resume_from_a_truncated_checkpoint_fails_clearly(env, capsys):
    argv = ["train", "--epochs", "3", "--hidden", "8", "--heads", "2",
            "--out", str(env / "run"), "--quiet"]
    assert main(argv) == 0
    done = env / "run" / "checkpoints" / "seed0.done.pt"
    done.write_bytes(done.read_bytes()[:50])
    assert main(argv + ["--resume"]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err


def test_result_files_have_normal_modes_and_strict_json(env):
    old = os.umask(0o022)
    try:
        run_experiment(small(), env / "run", quiet=True)
    finally:
        os.umask(old)
    for path in [env / "run" / "metrics.json", env / "run" / "run.json",
                 env / "run" / "history.csv",
                 *(env / "run" / "checkpoints").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path

    def no_constants(name):
        raise AssertionError(f"{name} in JSON")

    json.loads((env / "run" / "metrics.json").read_text(),
               parse_constant=no_constants)


def test_nan_metrics_are_null_with_a_reason(tmp_path):
    summary = summarize([float("nan"), float("nan")])
    assert summary["mean"] is None and summary["n"] == 0
    assert "reason" in summary
    write_json({"a": float("nan"), "b": [1.0, float("inf")]},
               tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == {
        "a": None, "b": [1.0, None]}


def test_a_failed_run_leaves_an_error_file(env):
    class Boom(RuntimeError):
        pass

    def explode(run, epoch):
        raise Boom("stopped on purpose")

    with pytest.raises(Boom):
        run_experiment(small(), env / "run", quiet=True,
                       on_epoch_end=explode)
    error = json.loads((env / "run" / "error.json").read_text())
    assert error["error"] == "Boom" and "on purpose" in error["message"]
    assert "Traceback" in error["traceback"]
    # a later successful run (resuming it; a fresh run into the folder
    # would be refused) removes it
    run_experiment(small(), env / "run", quiet=True, resume=True)
    assert not (env / "run" / "error.json").exists()


def test_run_killed_with_sigkill_resumes_to_the_uninterrupted_result(env):
    args = ["train", "--dataset", "cora", "--model", "mha", "--epochs",
            "30", "--patience", "100", "--hidden", "8", "--heads", "2",
            "--seeds", "0", "--quiet"]
    full, cut = env / "full", env / "cut"
    assert main(args + ["--out", str(full)]) == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "tgnn_transformers.cli", *args, "--out",
         str(cut)], env=dict(os.environ), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    checkpoint = cut / "checkpoints" / "seed0.pt"
    wait_for_checkpoint(process, checkpoint, 3)
    killed = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert killed, "the run ended before it could be killed"
    assert not (cut / "metrics.json").exists()
    assert main(args + ["--out", str(cut), "--resume"]) == 0
    a = json.loads((full / "metrics.json").read_text())
    b = json.loads((cut / "metrics.json").read_text())
    assert a["runs"][0]["test"] == b["runs"][0]["test"]
    assert a["runs"][0]["best_epoch"] == b["runs"][0]["best_epoch"]
    assert (full / "history.csv").read_text() == \
        (cut / "history.csv").read_text()


class FakeTerminal(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty

    def fileno(self):
        raise OSError("no real terminal")  # width cannot be read: 0


@pytest.mark.parametrize("tty", [False, True])
def test_progress_without_a_terminal_width_logs_lines(tty, monkeypatch,
                                                      caplog):
    monkeypatch.setattr(sys, "stderr", FakeTerminal(tty))
    progress = Progress(total=50, desc="cora/mha", quiet=False, every=25)
    assert progress.bar is None
    with caplog.at_level(logging.INFO, logger="tgnn_transformers.train"):
        for epoch in range(1, 51):
            progress.update(epoch, {"train_loss": 0.5, "val": 0.7})
    progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "epoch 25/50" in lines[0] and "epochs/s" in lines[0]
    assert "loss 0.5000" in lines[1] and "val 0.7000" in lines[1]


def test_setup_script_skips_pip_when_nothing_changed(tmp_path):
    """A fake venv python records what setup.sh asks of it."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts")
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    log = tmp_path / "calls.log"
    fake = venv / "python"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n"
                    "[ \"$1\" = --version ] && echo 'Python 3.11.7'\n"
                    "exit 0\n")
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "TGNN_EXTRAS"}

    def pip_calls():
        subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, env=env,
                       check=True)
        calls = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return [c for c in calls if c.startswith("-m pip")]

    assert any("torch==" in c for c in pip_calls())      # first: installs
    assert pip_calls() == []                              # second: skips
    with open(tmp_path / "pyproject.toml", "a") as f:
        f.write("\n# changed\n")
    assert pip_calls() != []                              # changed: again
