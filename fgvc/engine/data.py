"""DataLoaders for a split at a resolution, reproducible per epoch so a resumed run sees the
same order it would have seen; sharded across processes under torchrun."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, DistributedSampler

from fgvc.datasets.base import DatasetIndex
from fgvc.datasets.decode import DEFAULT_OPTIONS, DecodeOptions
from fgvc.datasets.images import ImageDataset, collate_skipping_bad
from fgvc.engine.distributed import ShardSampler, current


def make_loader(index: DatasetIndex, split: str, *, transform: Callable, batch_size: int,
                num_workers: int, on_bad_image: str, shuffle: bool = False, seed: int = 0,
                epoch: int = 0, drop_last: bool = False,
                decode: DecodeOptions = DEFAULT_OPTIONS) -> DataLoader:
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
    )
