"""The text task end to end on a small slice of TREC: registry, CLI flags,
recipe options (AdamW, warm-up, decay, clipping, label smoothing), every
position kind and pattern, and the schedule."""
import json
import math

import pytest
import torch

from tgnn_transformers.cli import main
from tgnn_transformers.data import load_text_splits
from tgnn_transformers.models import build_model
from tgnn_transformers.train.config import resolve_config
from tgnn_transformers.train.recipes import lr_factor, text_recipe


def test_lr_schedule():
    assert [lr_factor(s, 10, 0.2, "linear") for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(2, 10, 0.2, "linear") == 1.0
    assert lr_factor(6, 10, 0.2, "linear") == pytest.approx(0.5)
    assert lr_factor(6, 10, 0.2, "cosine") == pytest.approx(0.5)
    assert lr_factor(4, 10, 0.2, "cosine") == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 0.25)))
    assert lr_factor(9, 10, 0.0, "constant") == 1.0


def test_config_checks_text_options():
    config = resolve_config("text", "trec", "gin-attention",
                            {"pos": "rope", "pattern": "binary-partition"})
    assert config["optimizer"] == "adamw" and config["pos"] == "rope"
    with pytest.raises(ValueError, match="text task needs"):
        resolve_config("text", "cora", "mha")
    with pytest.raises(ValueError, match="label_smoothing"):
        resolve_config("text", "trec", "mha", {"label_smoothing": 1.5})
    with pytest.raises(ValueError, match="does not apply|does not take"):
        resolve_config("text", "trec", "mha", {"pool": "add"})


def test_text_classifier_rejects_baselines_and_pools():
    with pytest.raises(ValueError, match="text task runs mha, gin-attention,"
                       " pna-attention"):
        build_model("text", "gcn", 50, 3)
    model = build_model("text", "mha", 50, 3, hidden=16, heads=2,
                        pooling="mean", pos="learned").eval()
    x = torch.tensor([2, 5, 6, 2, 7])
    batch = torch.tensor([0, 0, 0, 1, 1])
    ei = torch.tensor([[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]])
    position = torch.tensor([0, 1, 2, 0, 1])
    assert model(x, ei, batch, position).shape == (2, 3)


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_text_classifier_pools_each_sentence(pooling):
    """The head sees the [CLS] row, the mean or the feature-wise maximum of
    each sentence's encoder output."""
    model = build_model("text", "mha", 50, 3, hidden=16, heads=2,
                        pooling=pooling, pos="rope").eval()
    seen = {}
    model.encoder.register_forward_hook(
        lambda module, args, out: seen.update(h=out))
    model.head.register_forward_hook(
        lambda module, args, out: seen.update(pooled=args[0]))
    x = torch.tensor([2, 5, 6, 2, 7])
    batch = torch.tensor([0, 0, 0, 1, 1])
    ei = torch.tensor([[0, 1, 0, 2, 3, 4], [0, 1, 1, 2, 3, 4]])
    model(x, ei, batch, torch.tensor([0, 1, 2, 0, 1]))
    reduce = {"cls": lambda s: s[0], "mean": lambda s: s.mean(0),
              "max": lambda s: s.max(0).values}[pooling]
    h = seen["h"]
    torch.testing.assert_close(seen["pooled"],
                               torch.stack([reduce(h[:3]), reduce(h[3:])]))


@pytest.mark.parametrize("model,pos,pattern", [
    ("mha", "sinusoidal", "full"),
    ("mha", "relative", "global-window"),
    ("gin-attention", "rope", "binary-partition"),
    ("pna-attention", "learned", "window"),
])
def test_text_recipe_learns_on_trec_slice(data_mirror, tmp_path, model, pos,
                                          pattern):
    torch.manual_seed(0)
    splits = load_text_splits("trec", tmp_path, data_mirror, limit=240)
    config = resolve_config("text", "trec", model, {
        "pos": pos, "pattern": pattern, "epochs": 4, "hidden": 32,
        "heads": 4, "batch_size": 16, "warmup": 0.2, "schedule": "cosine",
        "clip_grad": 0.5, "label_smoothing": 0.1})
    recipe = text_recipe(splits, config)
    losses = [recipe.train_epoch() for _ in range(4)]
    assert losses[-1] < losses[0]
    result = recipe.evaluate()
    assert 0 <= result["test"] <= 1 and math.isfinite(result["val_loss"])
    # the schedule decayed to (near) zero at the last step
    assert recipe.optimizer.param_groups[0]["lr"] < 1e-4


def test_cli_text_task(data_mirror, tmp_path, monkeypatch):
    import tgnn_transformers.data as data
    real = data.load_text_splits
    monkeypatch.setattr(data, "load_text_splits",
                        lambda *a, **k: real(*a, **k, limit=300))
    out = tmp_path / "run"
    rc = main(["train", "--task", "text", "--dataset", "trec", "--model",
               "mha", "--pattern", "window", "--pos", "rope", "--epochs",
               "2", "--hidden", "16", "--heads", "2", "--optimizer", "adamw",
               "--warmup", "0.1", "--schedule", "linear", "--clip-grad",
               "1.0", "--label-smoothing", "0.1", "--quiet", "--out",
               str(out), "--root", str(tmp_path / "data"), "--mirror",
               str(data_mirror)])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "text" and metrics["config"]["pos"] == "rope"
    assert 0 <= metrics["test"]["mean"] <= 1


def test_resumed_text_run_continues_its_learning_rate_schedule(
        data_mirror, tmp_path):
    """The scheduler is checkpointed: interrupted + resumed == straight."""
    from tgnn_transformers.train import fit, seed_everything
    from tgnn_transformers.train.recipes import text_recipe
    splits = load_text_splits("trec", tmp_path, data_mirror, limit=120)
    config = resolve_config("text", "trec", "mha", {
        "epochs": 3, "hidden": 16, "heads": 2, "batch_size": 32,
        "warmup": 0.3, "schedule": "cosine"})

    def run(checkpoint, stop_after=None, resume=False):
        seed_everything(0)
        recipe = text_recipe(splits, config)

        def stop(epoch):
            if epoch == stop_after:
                raise KeyboardInterrupt

        try:
            return fit(recipe, epochs=3, patience=10, quiet=True,
                       checkpoint=checkpoint, resume=resume,
                       on_epoch_end=stop)
        except KeyboardInterrupt:
            return None

    straight = run(tmp_path / "a.pt")
    assert run(tmp_path / "b.pt", stop_after=1) is None
    resumed = run(tmp_path / "b.pt", resume=True)
    assert resumed.history == straight.history
