"""Data-parallel training under ``torchrun``: NCCL on GPUs, gloo on CPUs.

One process per device. Training shards every epoch with ``DistributedSampler`` and calls
``set_epoch`` (the FixRes release did not, so its shards never reshuffled); evaluation and
prediction shard the split without padding, so every image is counted exactly once; only the
main process writes files. A single process launched by ``torchrun`` takes the same path (its
process group, DDP wrapper and collectives with one member), so a one-GPU ``torchrun`` checks the
NCCL code path; a plain ``python``/``fgvc`` process has no process group.

Several nodes (``torchrun --nnodes N --rdzv_backend c10d``) take the same path: ranks are global,
global rank 0 alone writes, and the nodes are assumed to share one filesystem for the data and
the run folder (rank 0 generates or checks the data first; every rank then compares its view of
the dataset with rank 0's and stops on a difference). Every collective has a bounded timeout
(``FGVC_COLLECTIVE_TIMEOUT`` seconds), and a failed one is traced to the rank that stopped
answering, so a lost process never leaves the others waiting.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from fgvc.datasets.base import DatasetIndex
from fgvc.errors import FgvcError

log = logging.getLogger(__name__)

TIMEOUT_ENV = "FGVC_COLLECTIVE_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0  # long enough for rank 0 to check a large dataset while others wait


class CollectiveError(FgvcError, RuntimeError):
    """A collective failed because a process stopped answering (it died or hangs)."""


class RankMismatchError(FgvcError, ValueError):
    """Processes of one run see different inputs (e.g. nodes without a shared filesystem)."""


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
        timeout = timedelta(seconds=collective_timeout())
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
        # A gloo group of its own for tracing a lost rank: point-to-point, even beside NCCL.
        _liveness.group = dist.new_group(backend="gloo", timeout=timeout)
    env = current()
    if device.type == "cuda":
        torch.cuda.set_device(env.local_rank)
    if env.is_main and _restarts_share_store():
        log.warning("--max-restarts with torchrun's shared rendezvous store: a restarted group "
                    "can read the addresses of the processes it replaced and fail to connect "
                    "(pytorch/pytorch#135712); start torchrun with "
                    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1")
    return env


def _restarts_share_store() -> bool:
    """torchrun may restart the group and its workers reuse the rendezvous store, whose keys
    outlive a restart."""
    return (int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0
            and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True")


def collective_timeout() -> float:
    """Seconds a collective may wait for the slowest process (``FGVC_COLLECTIVE_TIMEOUT``)."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise CollectiveError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds > 0")
    return value


def restart_count() -> int:
    """How often torchrun (``--max-restarts``) has restarted this process group; 0 otherwise."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def node_count() -> int:
    """Nodes (torchrun agents) of the run: 1 outside torchrun."""
    return int(os.environ.get("GROUP_WORLD_SIZE", "1") or 1)


def current() -> DistEnv:
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                       launched=True)
    return DistEnv()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _liveness.group = None


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


def sync_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (batch-norm statistics) on every process. DDP sends them at the start
    of each training forward, so after the last step each process holds statistics updated on
    its own shard only; the saved weights are rank 0's, and sharded evaluation and prediction
    must use those same weights on every shard."""
    if not current().enabled:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


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


def dataset_digest(index: DatasetIndex) -> str:
    """What a process read of the dataset: classes and every split's paths, ids and labels."""
    h = hashlib.sha256()
    for value in (index.classes, index.category_ids):
        h.update(repr(value).encode())
    for name, table in sorted(index.splits.items()):
        h.update(f"\0{name}\0{len(table)}".encode())
        for sample in table:
            h.update(f"{sample.path}\0{sample.image_id}\0{sample.label}\n".encode())
    return h.hexdigest()


def check_same_everywhere(what: str, digest: Callable[[], str]) -> None:
    """Stop every process when ``digest()`` (of ``what``) differs from rank 0's; computed only
    under torchrun."""
    if not current().enabled:
        return
    values = gather_objects(digest())
    differ = [rank for rank, v in enumerate(values) if v != values[0]]
    if differ:
        raise RankMismatchError(
            f"{what}: rank(s) {', '.join(map(str, differ))} see other contents than rank 0 "
            "(several nodes must share one filesystem for the data; check the path on each node)")


class _Liveness:
    group = None  # the gloo group made by init_distributed


_liveness = _Liveness()


def find_lost_ranks(timeout_s: float | None = None) -> list[int] | None:
    """After a failed collective: the ranks that no longer answer, as rank 0 sees them (rank 0
    itself where it cannot be reached), waiting at most ``timeout_s`` for each; ``None`` where
    there is no process group to ask.

    Point-to-point on the liveness group: rank 0 waits for a word from every other rank in turn,
    so a dead or hung rank is named one by one (a collective's own error names only a socket),
    then tells the others its verdict."""
    group = _liveness.group
    if group is None or not dist.is_initialized():
        return None
    rank, world = dist.get_rank(), dist.get_world_size()
    # The collective timeout by default: a live rank stuck in another collective with the lost
    # one reaches this point only when its own collective times out.
    timeout = timedelta(seconds=timeout_s or collective_timeout())
    word = torch.zeros(1)
    if rank != 0:
        try:
            dist.send(torch.ones(1), dst=0, group=group)
            verdict = torch.zeros(world)
            work = dist.irecv(verdict, src=0, group=group)
            work.wait(timeout)
            return [r for r in range(world) if verdict[r] > 0]
        except RuntimeError:
            return [0]
    lost = []
    for peer in range(1, world):
        try:
            work = dist.irecv(word, src=peer, group=group)
            work.wait(timeout)
        except RuntimeError:
            lost.append(peer)
    verdict = torch.zeros(world)
    verdict[lost] = 1.0
    for peer in range(1, world):
        if peer not in lost:
            try:
                dist.send(verdict, dst=peer, group=group)
            except RuntimeError:
                lost.append(peer)
    return sorted(lost)


def explain_collective_failure(err: BaseException) -> CollectiveError | None:
    """One line for a collective that failed because processes were lost; ``None`` when every
    process still answers (the failure was something else, reported as it is)."""
    lost = find_lost_ranks()
    if not lost:
        return None
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return CollectiveError(
        f"rank {dist.get_rank()}: lost rank(s) {', '.join(map(str, lost))} of "
        f"{dist.get_world_size()} (a process died or hung; collectives wait at most "
        f"{collective_timeout():g} s, {TIMEOUT_ENV}): {first[:200]}")
