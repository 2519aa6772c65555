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
from fgvc.engine.samplers import build_sampler
from fgvc.recipes.training import SamplerConfig


def make_loader(index: DatasetIndex, split: str, *, transform: Callable, batch_size: int,
                num_workers: int, on_bad_image: str, shuffle: bool = False, seed: int = 0,
                epoch: int = 0, drop_last: bool = False,
                decode: DecodeOptions = DEFAULT_OPTIONS,
                sampler_cfg: SamplerConfig | None = None) -> DataLoader:
    """``shuffle``: a training order that is a function of (seed, epoch); distributed, each
    process gets its shard of it (``set_epoch``, so shards change every epoch). Without
    ``shuffle``: the split in order, distributed as disjoint shards without padding.
    ``sampler_cfg`` (with ``shuffle``): a class-balanced or repeated-augmentation draw, also a
    function of (seed, epoch) and sharded the same way."""
    samples = index.split(split)
    dataset = ImageDataset(index.root, samples, transform, on_bad_image, decode)
    env = current()
    sampler = None
    if shuffle and sampler_cfg is not None:
        sampler = build_sampler(sampler_cfg, [s.label for s in samples], seed=seed, epoch=epoch,
                                rank=env.rank, world_size=env.world_size)
    per_process = len(sampler) if sampler is not None else len(dataset) / env.world_size
    drop_last = drop_last and per_process > batch_size
    if sampler is not None:
        shuffle = False  # the sampler's draw is the order
    elif env.enabled and shuffle:
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
