"""Test-time augmentation: centre crop, centre + flip, and 10-crop, at one or several resolutions.

Each image is decoded once (for all resolutions of a pass, which see the pixels of a pass at
their resolution alone: ``transforms.decode_resized``), resized once per resolution (shorter
side to K / crop_pct, as test DA does), and the crops are cut from that tensor, so a 10-crop
costs one decode and one resize, not ten; normalisation happens once per batch on the device.
The crops of a batch go through the model together.

10-crop follows torchvision's ``TenCrop``: the four corners and the centre, then the same five
crops of the horizontally mirrored image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from torchvision.transforms import functional as F

from fgvc.errors import UsageError
from fgvc.transforms import (
    DataConfig,
    decode_resized,
    encoded_image,
    resize_size,
    to_model_input,
)

CropMode = Literal["center", "center_flip", "ten_crop"]
Average = Literal["probs", "logits"]
CROPS_PER_MODE = {"center": 1, "center_flip": 2, "ten_crop": 10}


def _center_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    # The same rounding as torchvision's center_crop.
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def five_crops(image: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Top-left, top-right, bottom-left, bottom-right and centre crops of a (C, H, W) tensor."""
    _, h, w = image.shape
    if size > h or size > w:
        raise ValueError(f"crop {size} is larger than the resized image {h}x{w}")
    top, left = _center_offsets(h, w, size)
    return [image[:, :size, :size], image[:, :size, w - size:], image[:, h - size:, :size],
            image[:, h - size:, w - size:], image[:, top:top + size, left:left + size]]


class MultiCrop:
    """An image -> (n_crops, 3, K, K) tensor for one resolution and crop mode; for a list of
    resolutions, ``{resolution: tensor}`` from one pass over the file (multi-resolution
    evaluation).

    ``load(root, rel, decode_options)`` is the DataLoader's fast path: decode, resize
    (``decode_resized``: each resolution's pixels are those of a single-resolution pass), cut the
    crops, uint8 out (normalised on the device by ``DeviceNormalize``). Calling it on a PIL image
    is the reference path (normalised float).
    """

    def __init__(self, resolution: int | Sequence[int], cfg: DataConfig,
                 mode: CropMode = "center"):
        if mode not in CROPS_PER_MODE:
            raise UsageError(f"unknown crop mode {mode!r} (known: {', '.join(CROPS_PER_MODE)})")
        self.multi = not isinstance(resolution, int)
        self.resolutions = list(resolution) if self.multi else [resolution]
        self.resolution, self.cfg, self.mode = self.resolutions[0], cfg, mode

    def cut(self, tensor: torch.Tensor, resolution: int) -> torch.Tensor:
        """The crops of one resized (C, H, W) image, stacked."""
        if self.mode == "ten_crop":
            crops = five_crops(tensor, resolution) + five_crops(tensor.flip(-1), resolution)
        else:
            _, h, w = tensor.shape
            top, left = _center_offsets(h, w, resolution)
            centre = tensor[:, top:top + resolution, left:left + resolution]
            crops = [centre, centre.flip(-1)] if self.mode == "center_flip" else [centre]
        return torch.stack(crops).contiguous()

    def _shorts(self) -> list[int]:
        return [resize_size(r, self.cfg.crop_pct) for r in self.resolutions]

    def _out(self, crops: list[torch.Tensor]):
        return dict(zip(self.resolutions, crops, strict=True)) if self.multi else crops[0]

    def __call__(self, image: Image.Image):
        return self._out([
            self.cut(to_model_input(F.to_tensor(F.resize(image, short,
                                                         interpolation=self.cfg.mode)),
                                    self.cfg), r)
            for r, short in zip(self.resolutions, self._shorts(), strict=True)])

    def load(self, root: Path, rel: str, options=None):
        resized = decode_resized(encoded_image(root, rel, options), self._shorts(), self.cfg.mode)
        return self._out([self.cut(image, r)
                          for r, image in zip(self.resolutions, resized, strict=True)])


def combine_crops(logits: torch.Tensor, average: Average = "probs") -> torch.Tensor:
    """(B, n_crops, C) logits -> (B, C) probabilities, averaging probabilities or logits."""
    if average == "probs":
        return logits.float().softmax(dim=-1).mean(dim=1)
    if average == "logits":
        return logits.float().mean(dim=1).softmax(dim=-1)
    raise UsageError(f"unknown average {average!r} (known: probs, logits)")
