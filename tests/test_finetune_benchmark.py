"""benchmarks/finetune.py: the grid's resume logic and the summary table
(no training)."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_finetune", ROOT / "benchmarks" / "finetune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(bench, dataset, method, seed, test, **extra):
    cell = bench.plan([dataset], [method], [seed], None, None)[0]
    return {**cell, "test": test, "val": test + 0.01,
            "trainable_parameters": 1000 if method != "full" else 10 ** 6,
            "wall_s": 10.0, "train_seconds_per_epoch": 4.0,
            "torch_threads": 1, "best_epoch": 1,
            "machine": {"platform": "test", "cpus": 2, "torch": "x"},
            **extra}


def test_plan_order_and_resume(bench, tmp_path):
    cells = bench.plan(["trec", "sst2"], ["head", "lora"], [0, 1], None,
                       None)
    # data set, then seed, then method: an interrupted grid has every
    # method at its first seeds
    assert [(c["dataset"], c["seed"], c["method"]) for c in cells[:4]] == [
        ("trec", 0, "head"), ("trec", 0, "lora"), ("trec", 1, "head"),
        ("trec", 1, "lora")]
    runs = tmp_path / "runs.jsonl"
    bench.append_run(runs, _record(bench, "trec", "head", 0, 0.8))
    bench.append_run(runs, _record(bench, "trec", "lora", 1, 0.9))
    todo = bench.pending(cells, bench.read_runs(runs))
    assert len(todo) == len(cells) - 2
    assert ("trec", "head", 0) not in {(c["dataset"], c["method"],
                                        c["seed"]) for c in todo}
    # another setting (epochs, lr, subset) is another cell
    other = bench.plan(["trec"], ["head"], [0], 5, None)
    assert bench.pending(other, bench.read_runs(runs)) == other
    sub = bench.plan(["trec"], ["head"], [0], None, 100)
    assert bench.pending(sub, bench.read_runs(runs)) == sub


def test_report_table_and_claim(bench, tmp_path):
    runs = tmp_path / "runs.jsonl"
    for seed, (g, lo) in enumerate([(0.96, 0.95), (0.94, 0.95)]):
        bench.append_run(runs, _record(bench, "trec", "sparse-gin", seed, g))
        bench.append_run(runs, _record(bench, "trec", "lora", seed, lo))
    text = bench.report(tmp_path)
    assert (tmp_path / "finetune.md").read_text() == text
    row = next(line for line in text.splitlines()
               if line.startswith("| trec | sparse-gin"))
    assert "95.0 ± 1.0" in row and "| 0,1 |" in row
    assert "TREC" in text or "trec" in text
    claim = next(line for line in text.splitlines()
                 if line.startswith("- **trec**"))
    assert "target ≥ 95: **met**" in claim
    assert "+0.0 points" in claim and "holds" in claim
    assert "- **sst2**: Sparse GIN not run (time)." in text
    json.loads(runs.read_text().splitlines()[0])
