"""The lm task end to end: its configuration (nanoGPT's CPU run as the
defaults, causal patterns only), the recipe (nanoGPT's learning-rate rule
and decay groups; a 2-layer model that overfits a short text), ``tgnn
train --task lm`` on a text file with exact resume, the exported model,
``tgnn generate``, and bad input."""
import json
import math

import pytest
import torch

from tgnn_transformers.cli import main
from tgnn_transformers.models import build_model
from tgnn_transformers.models.language_model import CausalLanguageModel
from tgnn_transformers.train import resolve_config, run_experiment
from tgnn_transformers.train.generation import (find_model_file,
                                                generate_text,
                                                load_language_model)
from tgnn_transformers.train.io import load_checkpoint
from tgnn_transformers.train.loop import fit, seed_everything
from tgnn_transformers.train.recipes.lm import (gpt_optimizer,
                                                learning_rate, lm_recipe,
                                                load)

TEXT = ("to be, or not to be, that is the question: whether 'tis nobler "
        "in the mind to suffer the slings and arrows of outrageous "
        "fortune, or to take arms against a sea of troubles. ")

TINY = {"max_iters": 12, "eval_interval": 3, "eval_iters": 2,
        "block_size": 8, "hidden": 16, "heads": 2, "num_layers": 2,
        "batch_size": 4}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text(TEXT * 8)
    return path


def flags(options):
    out = []
    for key, value in options.items():
        out += ["--" + key.replace("_", "-"), str(value)]
    return out


def test_defaults_are_nanogpts_cpu_run():
    config = resolve_config("lm", "shakespeare-char", "mha")
    expected = {"block_size": 64, "batch_size": 12, "num_layers": 4,
                "heads": 4, "hidden": 128, "dropout": 0.0, "bias": False,
                "max_iters": 2000, "eval_interval": 250, "eval_iters": 20,
                "lr": 1e-3, "min_lr": 1e-4, "weight_decay": 0.1,
                "beta2": 0.99, "warmup": 0.05, "schedule": "cosine",
                "clip_grad": 1.0, "pos": "learned", "pattern": "causal",
                "ffn_multiplier": 4.0}
    assert {k: config[k] for k in expected} == expected
    assert config["epochs"] == 8  # one per evaluation
    model = build_model("lm", config.model_options(), 65)
    assert isinstance(model, CausalLanguageModel)
    # nanoGPT's model.py counts 0.80M parameters for this configuration
    assert model.num_parameters() == 804_096
    # the paper preset of GIN-Attention reaches the LM's attention
    paper = resolve_config("lm", "shakespeare-char", "gin-attention",
                           preset="paper")
    model = build_model("lm", paper.model_options(), 65)
    assert model.encoder.layers[0].attention.gin_form == "eps"


def test_build_model_defaults_to_a_gpt():
    """From Python the lm task's head defaults are a GPT's (causal graph,
    learned positions, FFN of 4x width, no biases), not the text task's
    values of the same options."""
    model = build_model("lm", "mha", 30, hidden=16, heads=2)
    assert model.pattern == "causal" and model.pos_kind == "learned"
    assert model.encoder.layers[0].ffn.lin1.out_features == 64
    assert model.encoder.layers[0].ffn.lin1.bias is None
    with pytest.raises(ValueError, match="num_classes must be None"):
        build_model("lm", "mha", 30, 4)
    with pytest.raises(ValueError, match="model 'gat' runs on the"):
        build_model("lm", "gat", 30)


@pytest.mark.parametrize("pattern,window,kind,dilation", [
    ("causal", 2, "causal", 1), ("window", 5, "causal-window", 1),
    ("dilated", 3, "causal-dilated", 2)])
def test_patterns_are_the_causal_halves(pattern, window, kind, dilation):
    model = build_model("lm", "mha", 20, pattern=pattern, window=window,
                        block_size=16, hidden=16, heads=2, num_layers=1)
    assert model.pattern == kind and model.dilation == dilation
    assert model.window == (None if kind == "causal" else window)


@pytest.mark.parametrize("overrides,words", [
    ({"pattern": "full"}, ["causal attention graph", "'full'",
                           "the ones it is asked to predict"]),
    ({"pattern": "binary-partition"}, ["causal, window or dilated"]),
    ({"pattern": "window", "window": 0}, ["window >= 1", "got 0"]),
    ({"pos": "relative"}, ["pos learned, sinusoidal, rope or none"]),
    ({"norm": "batch"}, ["norm layer or rms"]),
    ({"epochs": 3}, ["'epochs' does not apply", "lm task"]),
    ({"max_iters": 0}, ["'max_iters'", "[1, inf)"]),
    ({"beta2": 1.0}, ["'beta2'", "[0, 1)"]),
])
def test_config_refuses_what_the_lm_cannot_do(overrides, words):
    with pytest.raises((ValueError, TypeError)) as info:
        resolve_config("lm", "shakespeare-char", "mha", overrides)
    for word in words:
        assert word in str(info.value)


def test_datasets_of_the_lm_task(text_file):
    with pytest.raises(ValueError, match="'cora' is a node data set, but "
                       "the lm task needs one of: shakespeare-char, or "
                       "text:PATH"):
        resolve_config("lm", "cora", "mha")
    with pytest.raises(ValueError, match="no text file at /nonexistent"):
        resolve_config("lm", "text:/nonexistent/x.txt", "mha")
    with pytest.raises(ValueError, match="runs on the .* not 'lm'"):
        resolve_config("lm", "shakespeare-char", "gcn")
    # a text file's path keeps its case
    upper = text_file.with_name("Short.TXT")
    upper.write_text(TEXT)
    config = resolve_config("lm", f"text:{upper}", "mha")
    assert config["dataset"] == f"text:{upper}"
    assert load(config).text == TEXT


def nanogpt_get_lr(it, learning_rate=1e-3, warmup_iters=100,
                   lr_decay_iters=2000, min_lr=1e-4):
    """nanoGPT's train.py, verbatim but for the arguments."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


def test_learning_rate_is_nanogpts_get_lr():
    config = resolve_config("lm", "shakespeare-char", "mha")
    for it in range(2002):
        assert learning_rate(it, config) == pytest.approx(
            nanogpt_get_lr(it), rel=1e-12)
    flat = {**config, "schedule": "constant", "warmup": 0.0}
    assert learning_rate(7, flat) == 1e-3
    linear = {**config, "schedule": "linear", "warmup": 0.0}
    assert learning_rate(1000, linear) == pytest.approx(1e-4 + 0.5 * 9e-4)


def test_weight_decay_groups_follow_nanogpt():
    """Decay on every parameter of >= 2 dimensions (matrices, embeddings,
    the tied head once) but the norms' (GIN's per-head MLP norms too);
    none on gains, biases, eps and sharpening scalars."""
    config = resolve_config("lm", "shakespeare-char", "gin-attention",
                            {"bias": True, "mlp_norm": "layer"})
    model = build_model("lm", config.model_options(), 65)
    optimizer = gpt_optimizer(model, config)
    decay, rest = (g["params"] for g in optimizer.param_groups)
    from tgnn_transformers.nn.headwise import HeadwiseLayerNorm
    norm_params = {id(p) for m in model.modules()
                   if isinstance(m, (torch.nn.LayerNorm, HeadwiseLayerNorm))
                   for p in m.parameters()}
    assert {id(p) for p in decay} == {
        id(p) for name, p in model.named_parameters()
        if p.dim() >= 2 and id(p) not in norm_params
        and not name.endswith("bias")}
    # the per-head MLPs' [H, C] biases and norm gains are not decayed
    mlp = model.encoder.layers[0].attention.mlp
    assert mlp.lin1.bias.dim() == 2 and mlp.norm.weight.dim() == 2
    assert all(p is not mlp.lin1.bias and p is not mlp.norm.weight
               for p in decay)
    assert len(decay) + len(rest) == len(list(model.parameters()))
    assert optimizer.param_groups[0]["weight_decay"] == 0.1
    assert optimizer.param_groups[1]["weight_decay"] == 0.0
    assert optimizer.defaults["betas"] == (0.9, 0.99)
    assert any(p is model.token_embedding.weight for p in decay)


def test_a_two_layer_model_overfits_a_short_text(text_file, tmp_path):
    config = resolve_config("lm", f"text:{text_file}", "mha", {
        "num_layers": 2, "hidden": 64, "heads": 4, "block_size": 32,
        "batch_size": 8, "max_iters": 250, "eval_interval": 125,
        "eval_iters": 4, "lr": 3e-3, "schedule": "constant",
        "warmup": 0.0, "weight_decay": 0.0})
    seed_everything(0)
    corpus = load(config)
    recipe = lm_recipe(corpus, config, seed=0)
    assert recipe.metric == "loss" and not recipe.higher_is_better
    result = fit(recipe, epochs=config["epochs"], patience=10, quiet=True,
                 export=tmp_path / "model.pt")
    first, last = result.history[0], result.history[-1]
    assert last["iter"] == 250 and result.best_epoch == 2
    assert last["train"] < 0.3 < math.log(corpus.vocab_size)
    assert last["train"] < first["train"]
    # the exported model recites the text greedily, with and without cache
    model, vocab, record = load_language_model(tmp_path / "model.pt")
    assert record["epoch"] == 2 and record["val"] == last["val"]
    prompt = TEXT[:32]
    for cache in (True, False):
        text = generate_text(model, vocab, prompt, 40, temperature=0,
                             cache=cache)
        assert text == (TEXT * 2)[:72]


def test_train_resume_and_generate_on_the_command_line(text_file, tmp_path,
                                                       capsys):
    """``tgnn train --task lm --dataset text:PATH``; a run stopped after
    two evaluations resumes to the uninterrupted run's history, metrics
    and exported weights; ``tgnn generate`` samples from it."""
    argv = ["train", "--task", "lm", "--dataset", f"text:{text_file}",
            "--model", "gin-attention", "--quiet"] + flags(TINY)
    whole = tmp_path / "whole"
    assert main(argv + ["--out", str(whole)]) == 0
    assert "val loss" in capsys.readouterr().out
    metrics = json.loads((whole / "metrics.json").read_text())
    assert metrics["metric"] == "loss" and not metrics["higher_is_better"]
    assert metrics["runs"][0]["epochs_run"] == 4
    assert (whole / "curves.png").is_file()
    history = (whole / "history.csv").read_text()
    lines = history.splitlines()
    assert lines[0] == "run,epoch,train_loss,val_loss,train,val,test,iter,lr"
    # metrics.json keeps the best (lowest) validation loss
    assert metrics["val"]["mean"] == min(float(line.split(",")[5])
                                         for line in lines[1:])
    assert [line.split(",")[7] for line in lines[1:]] == [
        "3.0", "6.0", "9.0", "12.0"]

    class Stop(Exception):
        pass

    def stop(name, epoch):
        if epoch == 2:
            raise Stop
    config = resolve_config("lm", f"text:{text_file}", "gin-attention",
                            TINY)
    cut = tmp_path / "cut"
    with pytest.raises(Stop):
        run_experiment(config, cut, quiet=True, on_epoch_end=stop)
    assert main(argv + ["--out", str(cut), "--resume"]) == 0
    assert (cut / "history.csv").read_text() == history
    resumed = json.loads((cut / "metrics.json").read_text())
    assert resumed["val"] == metrics["val"]
    a, b = (load_checkpoint(find_model_file(d)) for d in (whole, cut))
    assert a["epoch"] == b["epoch"]
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    capsys.readouterr()

    # generation: the prompt and its continuation, the same for one seed
    gen = ["generate", str(whole), "--prompt", "to be", "--max-new-tokens",
           "30"]
    assert main(gen + ["--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("to be") and len(first) == len("to be") + 31
    assert main(gen + ["--seed", "3"]) == 0
    assert capsys.readouterr().out == first
    assert main(gen + ["--seed", "3", "--no-cache"]) == 0
    assert capsys.readouterr().out == first
    assert main(gen + ["--temperature", "0"]) == 0
    greedy = capsys.readouterr().out
    assert main(gen + ["--temperature", "0", "--no-cache"]) == 0
    assert capsys.readouterr().out == greedy


@pytest.mark.parametrize("extra,words", [
    (["--prompt", "to be?"], ["'?'", "position 5", "vocabulary"]),
    (["--max-new-tokens", "-1"], ["--max-new-tokens", ">= 0", "-1"]),
    (["--temperature", "-0.5"], ["--temperature", ">= 0"]),
    (["--top-k", "0"], ["--top-k", ">= 1"]),
    (["--seed", "-2"], ["--seed", ">= 0"]),
    (["--prompt", ""], ["--prompt", "at least one character"]),
    (["--device", "tpu"], ["--device 'tpu'"]),
])
def test_generate_bad_input_is_one_line_and_status_2(text_file, tmp_path,
                                                     capsys, extra, words):
    run = tmp_path / "run"
    config = resolve_config("lm", f"text:{text_file}", "mha",
                            {**TINY, "max_iters": 3})
    run_experiment(config, run, quiet=True)
    capsys.readouterr()
    assert main(["generate", str(run)] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tgnn: error:") and "\n" not in err
    for word in words:
        assert word in err


def test_generate_needs_a_run_folder_with_a_model(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "none")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main(["generate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "has no trained language model (models/*.pt)" in err
    assert "tgnn train --task lm" in err
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "seed0.pt").write_bytes(b"not a checkpoint")
    assert main(["generate", str(tmp_path)]) == 2
    assert "not a tgnn_transformers checkpoint" in capsys.readouterr().err


def test_train_cli_checks_lm_options_before_loading(capsys):
    assert main(["train", "--task", "lm", "--dataset", "shakespeare-char",
                 "--pattern", "full"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tgnn: error:") and "causal" in err
    assert main(["train", "--task", "lm", "--dataset",
                 "text:/nonexistent.txt"]) == 2
    assert "no text file" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_train_in_bf16_and_generate(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--task", "lm", "--dataset", f"text:{text_file}",
                 "--model", "mha", "--device", "cuda", "--precision",
                 "bf16", "--quiet", "--out", str(out)] + flags(TINY)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["device"]["device"].startswith("cuda")
    assert math.isfinite(metrics["val"]["mean"])
    capsys.readouterr()
    for cache in ([], ["--no-cache"]):
        assert main(["generate", str(out), "--device", "cuda", "--prompt",
                     "to be", "--max-new-tokens", "20", "--temperature",
                     "0"] + cache) == 0
    first, second = capsys.readouterr().out.splitlines()[-2:]
    assert first == second and first.startswith("to be")
