"""Data-parallel training across processes (``torchrun``), with results equal to one process.

Design: ``TrainConfig.batch_size`` is the *global* batch. Every rank builds the same global
batch ``i`` of the epoch (the order and the negatives depend only on ``(seed, epoch, i)``),
keeps its contiguous share of the samples (``Batch.shard``, sizes differ by at most one)
and re-deduplicates the news of that share. Each rank's loss is
``sum of its samples' losses * world_size / global_batch_size``, so DistributedDataParallel's
gradient *average* equals the gradient of the global batch's mean loss: 2 ranks with
``--batch-size 64`` take the same steps as 1 process with ``--batch-size 64`` (up to float
rounding; dropout masks are drawn per rank, so bitwise-equal runs need ``--dropout 0``).

Everything is read from torchrun's environment variables (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT) when ``init_from_env`` is called, never at import.
"""
from __future__ import annotations

import atexit
import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
import torch.distributed as dist


# Rank 0 evaluates the dev split while the others wait in a collective: allow a long wait.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info(environ: Mapping[str, str] | None = None) -> DistInfo:
    """Rank and world size from torchrun's variables (one process when they are absent)."""
    env = os.environ if environ is None else environ
    return DistInfo(rank=int(env.get("RANK", 0)), world_size=int(env.get("WORLD_SIZE", 1)),
                    local_rank=int(env.get("LOCAL_RANK", 0)))


def current() -> DistInfo:
    """This process's place in the initialised process group (one process when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=env_info().local_rank)


def init_from_env(device: str | None = None) -> tuple[DistInfo, str | None]:
    """Join the process group torchrun describes; return it and the device this rank should use.

    gloo on CPU, nccl on CUDA (each rank on ``cuda:LOCAL_RANK``). Without torchrun's variables
    nothing is initialised and ``device`` comes back unchanged.
    """
    info = env_info()
    if not info.enabled:
        return info, device
    if dist.is_available() and dist.is_initialized():
        return current(), device
    use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if use_cuda:
        device = f"cuda:{info.local_rank}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
    atexit.register(shutdown)
    return current(), device if use_cuda else (device or "cpu")


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def finish() -> None:
    """Leave the process group together: wait for every rank, then tear it down.

    A rank that destroys the group while another still exchanges with it can abort inside
    gloo ("terminate called without an active exception"), so the normal end of a run meets
    at a barrier first. The atexit ``shutdown`` stays for runs that end with an error.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if current().enabled:
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Each node's first process (LOCAL_RANK 0) runs the block first, e.g. to fill that node's
    data cache; the other processes run it after them and find the cache filled."""
    info = current()
    first = info.local_rank == 0
    if info.enabled and not first:
        dist.barrier()
    yield
    if info.enabled and first:
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (unchanged in one process)."""
    if not current().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks of a small tensor (on this rank's device, as nccl needs)."""
    if current().enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values
