"""Data-parallel training under ``torchrun``: NCCL on GPUs, gloo on CPUs.

One process per device. Training shards every epoch with ``DistributedSampler`` and calls
``set_epoch`` (the FixRes release did not, so its shards never reshuffled); evaluation and
prediction shard the split without padding, so every image is counted exactly once; only the
main process writes files. A single process launched by ``torchrun`` takes the same path (its
process group, DDP wrapper and collectives with one member), so a one-GPU ``torchrun`` checks the
NCCL code path; a plain ``python``/``fgvc`` process has no process group.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # under a process group set up by torchrun, even of one process

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init_distributed(device: torch.device) -> DistEnv:
    """Join the process group torchrun set up (a no-op for a process torchrun did not start)."""
    if not launched_by_torchrun():
        return DistEnv()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    env = current()
    if device.type == "cuda":
        torch.cuda.set_device(env.local_rank)
    return env


def current() -> DistEnv:
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                       launched=True)
    return DistEnv()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def main_first(make):
    """``make()`` on the main process first, then on the others: downloads, dataset generation
    and caches happen once."""
    env = current()
    if env.enabled and not env.is_main:
        barrier()
    value = make()
    if env.enabled and env.is_main:
        barrier()
    return value


def broadcast_object(value):
    """The main process's ``value`` on every process."""
    if not current().enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: list[float]) -> list[float]:
    if not current().enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64,
                          device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_objects(value) -> list:
    """Every process's ``value``, in rank order (the same list on every process)."""
    if not current().enabled:
        return [value]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: a split shared out without padding or repeats."""

    def __init__(self, length: int, rank: int, world_size: int):
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))
