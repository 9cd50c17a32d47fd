"""Data-parallel training with ``torchrun``: one process per device, the
data sharded per rank, the model in :class:`DistributedDataParallel`, the
metrics summed across ranks, and only rank 0 writing files.

PyTorch's own engine does the work (``torch.distributed`` with gloo on the
CPU, nccl on CUDA); this module holds the few decisions a training run
needs on top of it.  Without ``torchrun`` (no ``WORLD_SIZE`` above 1 in the
environment) every function is the single-process identity, so the
recipes have one code path.
"""
from __future__ import annotations

import os
from typing import (Any, Callable, Dict, Iterator, Optional, Tuple, TypeVar)

import torch
import torch.distributed as dist

T = TypeVar("T")


def env_world_size() -> int:
    """The number of processes ``torchrun`` started (1 without it)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"environment variable WORLD_SIZE must be an "
                         f"integer, got {value!r}") from None
    if size < 1:
        raise ValueError(f"environment variable WORLD_SIZE must be at "
                         f"least 1, got {size}")
    return size


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0, the process that writes files and shows progress."""
    return rank() == 0


def backend() -> Optional[str]:
    return dist.get_backend() if dist.is_initialized() else None


def local_device(device: torch.device) -> torch.device:
    """Under ``torchrun`` a bare ``cuda`` means this process's GPU
    (``LOCAL_RANK``); an explicit ``cuda:N`` is kept."""
    if device.type == "cuda" and device.index is None and \
            env_world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def setup(device: torch.device) -> bool:
    """Joins the process group ``torchrun`` prepared (gloo on the CPU, nccl
    on CUDA) when ``WORLD_SIZE`` is above 1 and no group exists yet;
    returns whether it created one (the caller then calls
    :func:`teardown`)."""
    if env_world_size() == 1 or dist.is_initialized():
        return False
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but "
                               f"{name} is not set: start multi-process "
                               "runs with torchrun")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return True


def teardown() -> None:
    """Leaves the process group.  Call it once no
    :class:`DistributedDataParallel` wrapper is referenced: one destroyed
    after its group hangs in gloo's shutdown."""
    if dist.is_initialized():
        import gc
        gc.collect()  # wrappers kept only by reference cycles go first
        dist.destroy_process_group()


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in :class:`DistributedDataParallel` (gradients averaged
    across ranks, parameters broadcast from rank 0 at construction), or
    ``model`` itself in a single process.  Train through the wrapper;
    evaluate and checkpoint the module itself."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel
    device = next(model.parameters()).device
    ids = [device] if device.type == "cuda" else None
    # Every trainable parameter of the package's models reaches the loss
    # of every step (tests/test_hardening.py checks each model and task),
    # so DDP need not search the autograd graph for unused ones (a
    # traversal per step, and torch's warning when it finds none).
    return DistributedDataParallel(model, device_ids=ids,
                                   find_unused_parameters=False)


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_across_ranks(*values: float) -> Tuple[float, ...]:
    """The sums of ``values`` over all ranks (each rank passes its own)."""
    if world_size() == 1:
        return tuple(float(v) for v in values)
    device = torch.device("cpu")
    if backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return tuple(total.tolist())


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def in_turn(load: Callable[[], T]) -> T:
    """``load()`` on rank 0 first, then on each machine's first process,
    then on the rest: PyG data sets process their raw files into a cache
    on the first load, and processes writing it at once read each other's
    half-written files."""
    if world_size() == 1:
        return load()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    turn = 0 if is_main() else 1 if local == 0 else 2
    result = None
    for phase in range(3):
        if phase == turn:
            result = load()
        barrier()
    return result


class ShardSampler(torch.utils.data.Sampler):
    """The indices ``0`` to ``size - 1`` of one rank.

    Training (``shuffle=True``): a new permutation every pass, seeded by
    rank 0's global RNG (which checkpoints restore) and broadcast so that
    every rank cuts the same permutation; padded by repeating its first
    indices to a multiple of the world size, so every rank runs the same
    number of batches (DDP's collectives need that), as
    :class:`~torch.utils.data.DistributedSampler` does.  Evaluation
    (``shuffle=False``): every ``world_size``-th index, no padding, so the
    summed metrics count each item once.  In one process it is a plain
    (shuffled) pass over all indices.
    """

    def __init__(self, size: int, shuffle: bool):
        self.size, self.shuffle = size, shuffle

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        seed = broadcast(int(torch.randint(0, 2**62, ()).item()))
        generator = torch.Generator().manual_seed(seed)
        return torch.randperm(self.size, generator=generator)

    def indices(self) -> torch.Tensor:
        order, ranks = self._order(), world_size()
        if self.shuffle and ranks > 1 and self.size % ranks:
            pad = ranks - self.size % ranks
            order = torch.cat([order, order[:pad].repeat(
                -(-pad // max(self.size, 1)))[:pad]])
        return order[rank()::ranks]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        ranks = world_size()
        if self.shuffle:
            return -(-self.size // ranks)
        return len(range(rank(), self.size, ranks))


def describe() -> Dict[str, Any]:
    """``world_size`` and ``backend`` for the environment block of
    ``metrics.json``."""
    return {"world_size": world_size(), "backend": backend()}
