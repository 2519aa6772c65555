"""DataLoaders for a split at a resolution, reproducible per epoch so a resumed run sees the
same order it would have seen; sharded across processes under torchrun."""

from __future__ import annotations

import atexit
import contextlib
import math
import weakref
from collections.abc import Callable

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
)

from fgvc.datasets.base import DatasetIndex
from fgvc.datasets.decode import DEFAULT_OPTIONS, DecodeOptions
from fgvc.datasets.images import ImageDataset, collate_skipping_bad
from fgvc.engine import shared_batches
from fgvc.engine.distributed import ShardSampler, current
from fgvc.engine.samplers import build_sampler
from fgvc.engine.seeding import epoch_seed, seed_everything
from fgvc.engine.shared_batches import ReusedBufferCollate, SharedBatchIter
from fgvc.recipes.training import SamplerConfig

PREFETCH_FACTOR = 2  # batches in flight per worker (torch's default)


def make_loader(index: DatasetIndex, split: str, *, transform: Callable, batch_size: int,
                num_workers: int, on_bad_image: str, shuffle: bool = False, seed: int = 0,
                epoch: int = 0, drop_last: bool = False,
                decode: DecodeOptions = DEFAULT_OPTIONS, skip: int = 0,
                sampler_cfg: SamplerConfig | None = None,
                dataset: Dataset | None = None, collate_fn: Callable = collate_skipping_bad,
                device_transform: Callable | None = None,
                persistent: bool = False) -> DataLoader:
    """``shuffle``: a training order that is a function of (seed, epoch); distributed, each
    process gets its shard of it (``set_epoch``, so shards change every epoch). Without
    ``shuffle``: the split in order, distributed as disjoint shards without padding.
    ``sampler_cfg`` (with ``shuffle``): a class-balanced or repeated-augmentation draw, also a
    function of (seed, epoch) and sharded the same way.
    ``dataset`` replaces the split's images (same length), e.g. to draw the same order
    without reading any image. ``device_transform`` is kept on the loader for the loops to apply
    to each batch once it is on the device (uint8 -> normalised float, ``DeviceNormalize``).
    ``persistent``: keep the workers between passes. A shuffled loader is then one for every
    epoch: ``loader.epochs.set_epoch(epoch, skip)`` before each pass gives exactly the batches a
    new loader for that epoch gives. A loader without ``shuffle`` may persist only when its
    transform draws no random numbers, since its workers' generators are not reset."""
    samples = index.split(split)
    if dataset is None:
        dataset = ImageDataset(index.root, samples, transform, on_bad_image, decode)
    env = current()
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch, env.rank))
    if collate_fn is collate_skipping_bad and num_workers > 0 and shared_batches.supported():
        collate_fn = ReusedBufferCollate(slots=PREFETCH_FACTOR)
    common = {"num_workers": num_workers, "collate_fn": collate_fn,
              "pin_memory": torch.cuda.is_available(),
              "persistent_workers": persistent and num_workers > 0,
              "worker_init_fn": ignore_stop_signals,
              "prefetch_factor": PREFETCH_FACTOR if num_workers > 0 else None}
    if shuffle:
        labels = [s.label for s in samples] if sampler_cfg is not None else None
        epochs = EpochBatches(len(dataset), batch_size, drop_last, seed=seed, labels=labels,
                              sampler_cfg=sampler_cfg)
        epochs.set_epoch(epoch, skip)
        loader = Loader(BatchSeeded(dataset), batch_sampler=epochs, generator=generator,
                        **common)
        loader.epochs = epochs
    else:
        sampler = ShardSampler(len(dataset), env.rank, env.world_size) if env.enabled else None
        if skip:
            sampler = SkipSampler(sampler or range(len(dataset)), skip)
        drop_last = drop_last and len(dataset) / env.world_size > batch_size
        loader = Loader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                        generator=generator, **common)
    loader.device_transform = device_transform
    return loader


class EpochBatches(Sampler[list]):
    """A shuffled loader's batches for the epoch last set (``set_epoch``), each index paired
    with the epoch's seed so ``BatchSeeded`` seeds the batch in whichever worker loads it; a
    loader with persistent workers therefore serves every epoch of a stage, batch for batch
    what a new loader per epoch gives. The order: distributed, ``DistributedSampler``'s shard;
    with a ``sampler_cfg``, its draw (``samplers.py``); otherwise ``RandomSampler``'s
    permutation from the epoch's generator after the one draw a ``DataLoader`` takes from it
    for its workers' base seed (so the order is the one a plain shuffled ``DataLoader`` with
    that generator gives, and the one fgvc gave before loaders persisted)."""

    def __init__(self, length: int, batch_size: int, drop_last: bool, *, seed: int,
                 labels: list[int] | None = None, sampler_cfg: SamplerConfig | None = None):
        self.length, self.batch_size, self.seed = length, batch_size, seed
        env = current()
        self.rank = env.rank
        self.sampler: Sampler[int] | None = None
        if sampler_cfg is not None:
            self.sampler = build_sampler(sampler_cfg, labels, seed=seed, epoch=0, rank=env.rank,
                                         world_size=env.world_size)
        per_process = len(self.sampler) if self.sampler is not None else length / env.world_size
        self.drop_last = drop_last and per_process > batch_size
        if self.sampler is None and env.enabled:
            self.sampler = DistributedSampler(range(length), env.world_size, env.rank,
                                              shuffle=True, seed=seed, drop_last=self.drop_last)
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """The epoch the next pass serves, without its first ``skip`` samples (a resumed
        epoch's batches already done)."""
        self.epoch, self.skip = epoch, skip

    def order(self) -> Sampler[int]:
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)
            order = self.sampler
        else:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, self.rank))
            torch.empty((), dtype=torch.int64).random_(generator=generator)  # the base seed
            order = RandomSampler(range(self.length), generator=generator)
        return SkipSampler(order, self.skip) if self.skip else order

    def __iter__(self):
        seed = epoch_seed(self.seed, self.epoch, self.rank)
        for batch in BatchSampler(self.order(), self.batch_size, self.drop_last):
            yield [(seed, i) for i in batch]

    def __len__(self) -> int:
        order = self.sampler if self.sampler is not None else range(self.length)
        count = max(len(order) - self.skip, 0)
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)


class SkipSampler(Sampler[int]):
    """``inner``'s indices without the first ``skip``: iterating ``inner`` in full keeps its
    random draws, so the rest of the order is exactly the one an uninterrupted epoch sees."""

    def __init__(self, inner: Sampler[int], skip: int):
        self.inner, self.skip = inner, skip

    def __iter__(self):
        it = iter(self.inner)
        for _ in range(self.skip):
            next(it, None)
        return it

    def __len__(self) -> int:
        return max(len(self.inner) - self.skip, 0)


class Loader(DataLoader):
    """A ``DataLoader`` whose worker processes are ended at interpreter exit.

    The workers ignore SIGTERM (``ignore_stop_signals``), and at exit multiprocessing ends
    daemon children with SIGTERM and then waits for them; an iterator still alive then (kept by
    a persistent loader, or by a traceback's frame) would make the process wait forever. Its
    workers are ended first, the way the iterator ends them itself (a stop message each)."""

    def _get_iterator(self):
        if self.num_workers > 0 and isinstance(self.collate_fn, ReusedBufferCollate):
            iterator = SharedBatchIter(self)
        else:
            iterator = super()._get_iterator()
        if self.num_workers > 0:
            _iterators_with_workers.add(iterator)
            _workers.update(iterator._workers)
        return iterator


_iterators_with_workers: weakref.WeakSet = weakref.WeakSet()
_workers: weakref.WeakSet = weakref.WeakSet()  # their processes, alive while multiprocessing's


@atexit.register  # after torch's import: runs before torch's and multiprocessing's handlers
def _end_workers() -> None:
    """Ends the workers of live iterators the way the iterator does, then kills any worker
    still running: one whose iterator is gone but whose shutdown did not reach it (an iterator
    freed by the garbage collector on one of its own queue threads sends its stop message where
    nothing delivers it) would otherwise ignore multiprocessing's SIGTERM and be waited for."""
    for iterator in list(_iterators_with_workers):
        with contextlib.suppress(Exception):  # exiting anyway: no traceback for a closed queue
            iterator._shutdown_workers()
    for worker in list(_workers):
        if worker.is_alive():
            worker.kill()


def ignore_stop_signals(_worker_id: int) -> None:
    """Loader workers ignore SIGTERM/SIGUSR1 (SLURM signals every process of a job): the main
    process finishes its step, checkpoints and then ends them itself."""
    import signal

    for signum in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)


class BatchSeeded(Dataset):
    """Seeds the random generators before each training batch from (epoch seed, the batch's
    first sample; unique within an epoch's permutation), so augmentation draws are a function
    of the batch alone: the same whichever worker loads it, however many workers there are,
    and whether or not the epoch was resumed half-way from a mid-epoch checkpoint. The batch
    arrives as (epoch seed, index) pairs from ``EpochBatches``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, items: list[tuple[int, int]]) -> list:
        seed, first = items[0]
        seed_everything((seed * 1_000_003 + int(first)) % 2**63)
        return [self.dataset[i] for _, i in items]
