"""benchmarks/lm.py without training: its reference GPT computes the same
function as the package's ``mha`` language model given the same weights
(so the benchmark compares like with like), nanoGPT's learning-rate
schedule, the optimizer's decay groups, and the report."""
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_lm", ROOT / "benchmarks" / "lm.py")
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up while the file executes
    sys.modules["bench_lm"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_lm", None)


def test_reference_and_ours_compute_the_same_gpt(bench):
    config = bench.TrainConfig(block_size=16, hidden=32, heads=4,
                               num_layers=2)
    torch.manual_seed(0)
    ref = bench.build({"model": "reference"}, config, 13)
    ours = bench.build({"model": "mha"}, config, 13)
    assert sum(p.numel() for p in ref.parameters()) == \
        ours.num_parameters()
    bench.load_reference_into(ours, ref)
    idx = torch.randint(0, 13, (3, 16))
    targets = torch.randint(0, 13, (3, 16))
    ref_logits, ref_loss = ref(idx, targets)
    logits, loss = ours(idx, targets)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    ref_loss.backward()
    loss.backward()
    torch.testing.assert_close(ours.token_embedding.weight.grad,
                               ref.wte.weight.grad, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(
        ours.encoder.layers[1].attention.lin_key.weight.grad,
        ref.blocks[1].qkv.weight.grad[32:64], atol=1e-6, rtol=1e-4)


def test_learning_rate_is_nanogpts(bench):
    config = bench.TrainConfig()  # lr 1e-3, warm-up 100, decay to 2000
    lr = lambda it: bench.learning_rate(it, config)  # noqa: E731
    assert lr(0) == pytest.approx(1e-3 / 101)
    assert lr(99) == pytest.approx(1e-3 * 100 / 101)
    assert lr(100) == pytest.approx(1e-3)
    middle = 100 + (2000 - 100) / 2
    assert lr(int(middle)) == pytest.approx(1e-4 + 0.5 * 9e-4)
    assert lr(2000) == pytest.approx(1e-4)
    assert lr(2500) == 1e-4
    quarter = 100 + 475
    assert lr(quarter) == pytest.approx(
        1e-4 + 0.5 * (1 + math.cos(math.pi / 4)) * 9e-4)


@pytest.mark.parametrize("run", ["reference", "mha", "gin-attention+paper"])
def test_decay_only_on_matrices(bench, run):
    config = bench.TrainConfig(hidden=32, heads=4, num_layers=2,
                               block_size=8)
    model = bench.build(bench._runs(run)[run], config, 13)
    optimizer = bench.configure_optimizer(model, config)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0
    norm_gains = {id(p) for m in model.modules()
                  if "Norm" in type(m).__name__ for p in m.parameters()}
    biases = {id(p) for name, p in model.named_parameters()
              if name.endswith("bias")}
    assert all(p.dim() >= 2 and id(p) not in norm_gains | biases
               for p in decay["params"])
    # biases, gains, GIN's eps and sharpening; per-head norm gains and
    # biases [H, C]
    assert all(p.dim() < 2 or id(p) in norm_gains | biases
               for p in no_decay["params"])
    if run == "gin-attention+paper":
        assert any(p.dim() == 2 for p in no_decay["params"])
    ids = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def _record(run, seed, val, step, experiment="cpu", config=None):
    curve = [{"iter": 0, "train": 4.2, "val": 4.2},
             {"iter": 2000, "train": val - 0.1, "val": val}]
    return {"run": run, "seed": seed, "experiment": experiment,
            "final_val_loss": val, "final_train_loss": val - 0.1,
            "best_val_loss": val, "gap": 0.1, "median_step_s": step,
            "final_eval": {"iters": 200, "val": val - 0.01,
                           "train": val - 0.11},
            "wall_s": 200.0, "parameters": 1000, "curve": curve,
            "config": config or {}, "machine": {"cpus": 2}}


def test_report_tabulates_runs(bench, tmp_path, capsys):
    folder = tmp_path / "cpu"
    folder.mkdir()
    for run, step, seed, val in [("reference", 0.1, 0, 1.9),
                                 ("reference", 0.1, 1, 1.8),
                                 ("mha", 0.12, 0, 1.80)]:
        (folder / f"{run}_seed{seed}.json").write_text(json.dumps(
            _record(run, seed, val, step)))
    bench.main(["report", "--out", str(tmp_path)])
    summary = (folder / "summary.md").read_text()
    assert "| reference | 2 | 1,000 | 1.8500 ± 0.0707 | 1.8400 ± 0.0707 |" \
        in summary
    assert "| mha | 1 | 1,000 | 1.8000 | 1.7900 | 1.6900 | 0.1000 | 120.0 " \
        "| 1.20x |" in summary
    # compared with mha: reference's mean - mha's, over its standard error
    assert "| reference | +0.0500 (+1.0 se) | +0.0500 (+1.0 se) |" in summary


def test_report_borrows_runs_of_the_same_configuration(bench, tmp_path):
    """The claim's mha and reference runs are the cpu experiment's (same
    configuration); a run of another configuration is refused."""
    for experiment, run, val in [("cpu", "mha", 1.9), ("cpu", "mha", 1.92),
                                 ("claim", "gin-attention", 2.0),
                                 ("claim", "gin-attention", 2.02)]:
        folder = tmp_path / experiment
        folder.mkdir(exist_ok=True)
        seed = len(list(folder.glob(f"{run}_*")))
        (folder / f"{run}_seed{seed}.json").write_text(json.dumps(
            _record(run, seed, val, 0.1, experiment)))
    bench.main(["report", "--experiment", "claim", "--with", "cpu",
                "--out", str(tmp_path)])
    summary = (tmp_path / "claim" / "summary.md").read_text()
    assert "| mha (cpu) | 1 |" in summary
    assert "| gin-attention | +0.1000 (+7.1 se) | +0.1000 (+7.1 se) | " \
        "+0.0000" in summary
    # the claim answered in words from the same differences
    assert "- `gin-attention` (2 seeds against 2): training loss +0.1000 " \
        "(higher, +7.1 se); validation loss +0.1000 (higher, +7.1 se); " \
        "gap +0.0000 (within noise, " in summary
    assert ": the claim does not hold (training loss, validation loss the " \
        "other way)." in summary
    other = _record("mha", 5, 1.9, 0.1, config={"block_size": 256})
    (tmp_path / "cpu" / "mha_seed5.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="another configuration"):
        bench.main(["report", "--experiment", "claim", "--with", "cpu",
                    "--out", str(tmp_path)])


def test_claim_answer_calls_only_clear_differences(bench):
    def runs(label, trains, gaps):
        records = []
        for seed, (train, gap) in enumerate(zip(trains, gaps)):
            record = _record(label, seed, train + gap, 0.1)
            record["final_eval"].update(train=train, val=train + gap)
            records.append(record)
        return records
    by_run = {"mha": runs("mha", [1.80, 1.81, 1.79], [0.14, 0.15, 0.13]),
              "lower": runs("lower", [1.70, 1.71, 1.69], [0.10, 0.11, 0.09]),
              "noisy": runs("noisy", [1.70, 1.90, 1.80], [0.14, 0.16, 0.12])}
    lower, noisy = bench._claim_answer(by_run, "mha")
    assert lower.startswith("- `lower` (3 seeds against 3): training loss "
                            "-0.1000 (lower, ")
    assert "gap -0.0400 (smaller, " in lower
    assert lower.endswith(": the claim holds.")
    assert "(within noise, " in noisy
    assert noisy.endswith("the claim is not shown (differences within "
                          "noise).")


def test_the_2023_configuration(bench):
    """nanoGPT as it stood when its README reported 1.88: embeddings not
    decayed, warm-up from 0, tanh GELU, weight decay 0.01."""
    config = bench.TrainConfig(hidden=32, heads=4, num_layers=2,
                               block_size=8,
                               **bench.EXPERIMENTS["cpu-2023"]["config"])
    assert bench.learning_rate(0, config) == 0.0
    assert bench.learning_rate(50, config) == pytest.approx(5e-4)
    for run in ("reference", "mha"):
        model = bench.build({"model": run}, config, 13)
        decay, no_decay = bench.configure_optimizer(model,
                                                    config).param_groups
        embeddings = {id(m.weight) for m in model.modules()
                      if isinstance(m, torch.nn.Embedding)}
        assert embeddings and not embeddings & {id(p) for p in
                                                decay["params"]}
        assert decay["weight_decay"] == 0.01
    ours = bench.build({"model": "mha"}, config, 13)
    assert ours.encoder.layers[0].ffn.activation == "gelu_tanh"
    ref = bench.build({"model": "reference"}, config, 13)
    bench.load_reference_into(ours, ref)
    idx = torch.randint(0, 13, (2, 8))
    torch.testing.assert_close(ours(idx)[0], ref(idx)[0], atol=1e-5,
                               rtol=1e-5)


def test_generation_benchmark_runs_small(bench, tmp_path, data_mirror,
                                         monkeypatch):
    monkeypatch.setenv("TGNN_DATA_MIRROR", str(data_mirror))
    bench.main(["generation", "--set", "block_size=8", "hidden=16",
                "num_layers=1", "heads=2", "--train-iters", "0",
                "--new-tokens", "12", "--repeats", "1", "--out",
                str(tmp_path)])
    record = json.loads((tmp_path / "generation" /
                         "generation.json").read_text())
    assert record["greedy_identical"] and record["sampled_identical"]
    assert set(record["tokens_per_s"]) == {"cached", "recompute",
                                           "sliding", "reference sliding"}
    assert len(record["greedy_text"]) == 12
    assert (tmp_path / "generation" / "summary.md").is_file()
