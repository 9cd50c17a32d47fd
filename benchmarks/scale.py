"""Scale-out on Cornell5 (LINKX, 18.7k nodes, 1.58M edges): neighbour-
sampled mini-batch throughput against batch size and number of processes,
and the memory of one training epoch full-batch against mini-batch.

    TGNN_DATA_MIRROR=../shared/data python benchmarks/scale.py

Throughput: ``tgnn``'s own node recipe (the ``mha`` model with Cornell5's
packaged defaults, 2 layers, 10 and 10 neighbours) under ``torchrun
--nproc_per_node=K`` (gloo), the median of ``--repeats`` epochs after one
warm-up epoch, as seed nodes per second (training nodes / epoch time) and
sampled nodes per second (nodes of all sampled subgraphs / epoch time).
Every configuration uses the same number of cores in all: K processes of
``cores / K`` threads.  Memory: the peak resident-set increase of one
epoch in a fresh process (the data set and model already loaded).

Writes ``benchmarks/results/scale.json`` and ``scale.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import RESULTS, machine, peak_memory, run_probe_if_asked

HERE = Path(__file__).resolve()
WORKER_FLAG = "--worker"


def recipe_for(spec):
    """The node recipe of ``spec`` (batch_size ``None``: full batch)."""
    from tgnn_transformers.data import load_dataset
    from tgnn_transformers.train import resolve_config
    from tgnn_transformers.train.recipes import node_recipe
    overrides = {"seeds": [0], "epochs": 1}
    if spec.get("batch_size"):
        overrides.update(batch_size=spec["batch_size"],
                         num_neighbors=spec["num_neighbors"])
    config = resolve_config("node", "cornell5", spec["model"], overrides)
    dataset = load_dataset("cornell5", root=spec["root"])
    data = dataset[0]
    return node_recipe(data, dataset.num_classes, config), data


def sampled_nodes(recipe_spec):
    """``(nodes of all subgraphs one epoch samples, seed nodes)``."""
    from torch_geometric.data import Data
    from tgnn_transformers.train.distributed import ShardSampler
    from tgnn_transformers.train.recipes import node_splits
    from tgnn_transformers.train.sampling import neighbor_loader
    from tgnn_transformers.data import load_dataset
    data = load_dataset("cornell5", root=recipe_spec["root"])[0]
    train = node_splits(data, 0)[0].nonzero().view(-1)
    loader = neighbor_loader(Data(x=data.x, edge_index=data.edge_index,
                                  num_nodes=data.num_nodes),
                             recipe_spec["num_neighbors"], train,
                             recipe_spec["batch_size"],
                             ShardSampler(train.numel(), True))
    return sum(batch.num_nodes for batch in loader), train.numel()


def worker(spec) -> None:
    """One rank of a throughput measurement (started by torchrun)."""
    from tgnn_transformers.train import distributed
    torch.set_num_threads(spec["threads"])
    distributed.setup(torch.device("cpu"))
    try:
        recipe, _ = recipe_for(spec)
        recipe.train_epoch()  # warm-up
        times = []
        for _ in range(spec["repeats"]):
            distributed.barrier()
            t0 = time.perf_counter()
            recipe.train_epoch()
            distributed.barrier()
            times.append(time.perf_counter() - t0)
        if distributed.is_main():
            print("EPOCH_SECONDS", json.dumps(times), flush=True)
        del recipe  # its DDP wrapper must go before the process group
    finally:
        distributed.teardown()


def measure_throughput(spec, processes: int) -> dict:
    cores = spec["cores"]
    spec = dict(spec, threads=max(1, cores // processes))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={processes}", str(HERE), WORKER_FLAG,
           json.dumps(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in done.stdout.splitlines():
        if line.startswith("EPOCH_SECONDS"):
            times = json.loads(line.split(maxsplit=1)[1])
            return {"processes": processes, "threads": spec["threads"],
                    "epoch_s": statistics.median(times), "times_s": times}
    raise RuntimeError(f"worker failed: {done.stderr[-2000:]}")


def build_epoch(spec):
    """Memory probe: one training epoch of ``spec``."""
    torch.set_num_threads(spec["cores"])
    recipe, _ = recipe_for(spec)
    return recipe.train_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mha")
    parser.add_argument("--batch-sizes", type=int, nargs="+",
                        default=[256, 1024, 4096])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--num-neighbors", type=int, nargs="+",
                        default=[10, 10])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    args = parser.parse_args()
    root = tempfile.mkdtemp()
    base = {"model": args.model, "root": root, "repeats": args.repeats,
            "num_neighbors": args.num_neighbors, "cores": args.cores}
    recipe_for(dict(base, batch_size=None))  # copy and process once

    rows = []
    for batch_size in args.batch_sizes:
        spec = dict(base, batch_size=batch_size)
        sampled, seeds = sampled_nodes(spec)
        for processes in args.processes:
            row = measure_throughput(spec, processes)
            row.update(batch_size=batch_size, seeds=seeds,
                       sampled_nodes=sampled,
                       seed_nodes_per_s=seeds / row["epoch_s"],
                       sampled_nodes_per_s=sampled / row["epoch_s"])
            rows.append(row)
            print(f"batch {batch_size:5d}  {processes} process(es) x "
                  f"{row['threads']} thread(s): epoch {row['epoch_s']:.2f} s,"
                  f" {row['seed_nodes_per_s']:.0f} seed nodes/s, "
                  f"{row['sampled_nodes_per_s']:.0f} sampled nodes/s",
                  flush=True)
    full = measure_throughput(dict(base, batch_size=None), 1)
    memory = {}
    for name, batch_size in (("full-batch", None),
                             ("mini-batch 1024", 1024)):
        memory[name] = peak_memory(str(HERE), dict(base, batch_size=batch_size))
        print(f"{name}: epoch peak memory {memory[name] / 2**20:.0f} MiB",
              flush=True)
    payload = {"machine": machine(), "dataset": "cornell5",
               "model": args.model, "num_neighbors": args.num_neighbors,
               "cores": args.cores, "throughput": rows,
               "full_batch_epoch_s": full["epoch_s"],
               "epoch_peak_memory_bytes": memory}
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS / "scale.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(RESULTS / "scale.json")
    (RESULTS / "scale.md").write_text(table(payload))
    print(table(payload))


def table(payload) -> str:
    m = payload["machine"]
    lines = [
        f"# Scale-out on Cornell5 ({payload['model']}, neighbours "
        f"{payload['num_neighbors']})", "",
        f"Machine: {m['platform']}, {payload['cores']} cores, torch "
        f"{m['torch']}, PyG {m['torch_geometric']}, torch-sparse "
        f"{m['torch_sparse']}. Median of the timed epochs.", "",
        "| batch size | processes × threads | epoch (s) | seed nodes/s | "
        "sampled nodes/s |", "|---|---|---|---|---|"]
    for r in payload["throughput"]:
        lines.append(f"| {r['batch_size']} | {r['processes']} × "
                     f"{r['threads']} | {r['epoch_s']:.2f} | "
                     f"{r['seed_nodes_per_s']:.0f} | "
                     f"{r['sampled_nodes_per_s']:.0f} |")
    lines += ["", f"Full-batch epoch (1 process × {payload['cores']} "
              f"threads): {payload['full_batch_epoch_s']:.2f} s.", "",
              "| one training epoch | peak memory above the loaded data "
              "|", "|---|---|"]
    for name, value in payload["epoch_peak_memory_bytes"].items():
        shown = "n/a" if value is None else f"{value / 2**20:.0f} MiB"
        lines.append(f"| {name} | {shown} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if WORKER_FLAG in sys.argv:
        worker(json.loads(sys.argv[sys.argv.index(WORKER_FLAG) + 1]))
    else:
        run_probe_if_asked(build_epoch)
        main()
