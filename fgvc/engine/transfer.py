"""A batch onto the device: the one copy every pass makes (training, evaluation, prediction,
label-free adaptation, the adapt cache and the activation statistics)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fgvc.engine.device import channels_last_on


def to_device(images: torch.Tensor | tuple, device: torch.device, channels_last: bool,
              prepare: Callable | None = None):
    """A batch (or a tuple of cached activations, see feature_cache.py) on the device;
    ``prepare`` (the loader's ``device_transform``) turns uint8 images into model input there."""
    if isinstance(images, tuple):
        return tuple(to_device(t, device, channels_last and t.ndim == 4) for t in images)
    images = images.to(device, non_blocking=True)
    if prepare is not None:
        images = prepare(images)
    if channels_last_on(device, channels_last):
        images = images.contiguous(memory_format=torch.channels_last)
    return images
