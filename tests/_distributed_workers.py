"""Worker functions the multi-process tests start with
``torch.multiprocessing.spawn`` (importable by the spawned children)."""
import os


def join(rank: int, world: int, port: int) -> None:
    """What torchrun does for a worker: the env:// rendezvous variables.
    A worker stuck for 3 minutes prints its stack and exits, so a hang
    fails the test with a reason instead of stalling the suite."""
    import faulthandler
    faulthandler.dump_traceback_later(180, exit=True)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank),
                       "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})


def shard_indices(rank: int, world: int, port: int, size: int,
                  passes: int, folder: str) -> None:
    """Each rank writes the indices its training and evaluation shards
    hold, over ``passes`` passes, into ``folder``."""
    import json
    import torch
    from tgnn_transformers.train import distributed
    join(rank, world, port)
    distributed.setup(torch.device("cpu"))
    try:
        torch.manual_seed(100 + rank)  # different RNGs: rank 0's wins
        train = distributed.ShardSampler(size, shuffle=True)
        evaluation = distributed.ShardSampler(size, shuffle=False)
        record = {"train": [list(train) for _ in range(passes)],
                  "train_len": len(train), "eval": list(evaluation),
                  "eval_len": len(evaluation),
                  "sums": distributed.sum_across_ranks(rank + 1, 2.5)}
        with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
            json.dump(record, f)
    finally:
        distributed.teardown()


def interrupted_run(rank: int, world: int, port: int, config: dict,
                    out: str, stop_after: int) -> None:
    """``run_experiment`` on ``world`` processes that die after epoch
    ``stop_after`` as a crash kills them (no cleanup, no exception
    handling; rank 0 has written that epoch's checkpoint)."""
    import torch
    from tgnn_transformers.train import run_experiment
    torch.set_num_threads(1)
    join(rank, world, port)

    def crash(name, epoch):
        if epoch == stop_after:
            os._exit(0)
    run_experiment(config, out, quiet=True, on_epoch_end=crash)
