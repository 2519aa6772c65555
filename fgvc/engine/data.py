"""DataLoaders for a split at a resolution, reproducible per epoch so a resumed run sees the
same order it would have seen."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from fgvc.datasets.base import DatasetIndex
from fgvc.datasets.images import ImageDataset, collate_skipping_bad


def make_loader(index: DatasetIndex, split: str, *, transform: Callable, batch_size: int,
                num_workers: int, on_bad_image: str, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False) -> DataLoader:
    dataset = ImageDataset(index.root, index.split(split), transform, on_bad_image)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last and len(dataset) > batch_size,
        num_workers=num_workers,
        collate_fn=collate_skipping_bad,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        generator=generator,
    )
