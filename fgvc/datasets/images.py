"""Samples to tensors for a DataLoader, with bad images skipped and counted instead of crashing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset, default_collate

from fgvc.datasets.base import DatasetError, Sample, SampleTable
from fgvc.datasets.decode import (
    BAD_IMAGE_ERRORS,
    DEFAULT_OPTIONS,
    DecodeOptions,
    failure_reason,
    open_rgb,
)
from fgvc.datasets.integrity import check_inside_root

log = logging.getLogger(__name__)
__all__ = ["BAD_IMAGE_ERRORS", "ImageDataset", "collate_skipping_bad"]


class ImageDataset(Dataset):
    """Decode ``root/sample.path`` and transform it; yields ``(tensor, label, index)``.

    Decoding (bit depth, EXIF orientation, pixel limit) follows ``decode`` (``DecodeOptions``
    from the recipe's ``dataset`` section). A missing or unreadable image yields ``None`` when
    ``on_bad_image='skip'`` (the collate function drops it and counts it) and raises a
    ``DatasetError`` naming the file otherwise. A file that leads out of the root through a
    symbolic link is refused (``DatasetError``) unless ``decode.follow_symlinks_outside``.
    """

    def __init__(self, root: Path, samples: Sequence[Sample], transform: Callable,
                 on_bad_image: str = "skip", decode: DecodeOptions = DEFAULT_OPTIONS):
        self.root = Path(root)
        self.samples = samples if isinstance(samples, SampleTable) else list(samples)  # compact
        self.transform = transform
        self.on_bad_image = on_bad_image
        self.decode = decode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        path = self.root / sample.path
        load = getattr(self.transform, "load", None)  # the fast path, see fgvc/transforms.py
        if not self.decode.follow_symlinks_outside:
            check_inside_root(self.root, sample.path, self.root, f"image {sample.image_id!r}")
        try:
            item = (load(self.root, sample.path, self.decode) if load is not None
                    else self.transform(open_rgb(self.root, sample.path, self.decode)))
        except BAD_IMAGE_ERRORS as err:
            if self.on_bad_image == "fail":
                raise DatasetError(f"cannot read image {path}: {failure_reason(err)}") from None
            log.warning("skipping unreadable image %s: %s", path, failure_reason(err))
            return None
        return item, sample.label, index


def collate_skipping_bad(batch: list, stack: Callable[[list], object] = default_collate
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Stack the good items; the last element counts the bad ones dropped from this batch.
    ``stack`` stacks the images (a loader worker's reused buffers: ``shared_batches.py``)."""
    good = [item for item in batch if item is not None]
    bad = len(batch) - len(good)
    if not good:
        empty = torch.empty(0)
        return empty, empty.long(), empty.long(), bad
    images = stack([g[0] for g in good])  # a batch, or {resolution: batch}
    labels = torch.tensor([g[1] for g in good], dtype=torch.long)
    indices = torch.tensor([g[2] for g in good], dtype=torch.long)
    return images, labels, indices, bad
