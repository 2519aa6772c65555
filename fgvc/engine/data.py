"""DataLoaders for a split at a resolution, reproducible per epoch so a resumed run sees the
same order it would have seen; sharded across processes under torchrun."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from fgvc.datasets.base import DatasetIndex
from fgvc.datasets.decode import DEFAULT_OPTIONS, DecodeOptions
from fgvc.datasets.images import ImageDataset, collate_skipping_bad
from fgvc.engine.distributed import ShardSampler, current
from fgvc.engine.seeding import seed_everything


def make_loader(index: DatasetIndex, split: str, *, transform: Callable, batch_size: int,
                num_workers: int, on_bad_image: str, shuffle: bool = False, seed: int = 0,
                epoch: int = 0, drop_last: bool = False,
                decode: DecodeOptions = DEFAULT_OPTIONS, skip: int = 0) -> DataLoader:
    """``shuffle``: a training order that is a function of (seed, epoch); distributed, each
    process gets its shard of it (``set_epoch``, so shards change every epoch). Without
    ``shuffle``: the split in order, distributed as disjoint shards without padding."""
    dataset = ImageDataset(index.root, index.split(split), transform, on_bad_image, decode)
    env = current()
    drop_last = drop_last and len(dataset) > batch_size * env.world_size
    sampler = None
    if env.enabled and shuffle:
        sampler = DistributedSampler(dataset, env.world_size, env.rank, shuffle=True, seed=seed,
                                     drop_last=drop_last)
        sampler.set_epoch(epoch)
    elif env.enabled:
        sampler = ShardSampler(len(dataset), env.rank, env.world_size)
    # Augmentation draws in the workers: distinct per epoch and per process.
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch * 7919 + env.rank)
    if shuffle:
        dataset = BatchSeeded(dataset, seed * 100_003 + epoch * 7919 + env.rank)
    if skip:
        # The same generator drives the same permutation; only its head is dropped.
        sampler = SkipSampler(sampler or RandomSampler(dataset, generator=generator), skip)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate_skipping_bad,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        generator=generator,
        worker_init_fn=ignore_stop_signals,
    )


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
    and whether or not the epoch was resumed half-way from a mid-epoch checkpoint."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index]

    def __getitems__(self, indices: list[int]) -> list:
        seed_everything((self.seed * 1_000_003 + int(indices[0])) % 2**63)
        return [self.dataset[i] for i in indices]
