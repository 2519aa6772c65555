"""Test-time augmentation: centre crop, centre + flip, and 10-crop, at one or several resolutions.

Each image is decoded once per resolution, resized once (shorter side to K / crop_pct, as test
DA does), normalised once, and the crops are cut from that tensor, so a 10-crop costs one decode
and one resize, not ten. The crops of a batch go through the model together.

10-crop follows torchvision's ``TenCrop``: the four corners and the centre, then the same five
crops of the horizontally mirrored image.
"""

from __future__ import annotations

from typing import Literal

import torch
from PIL import Image
from torchvision.transforms import functional as F

from fgvc.transforms import DataConfig, resize_size, to_model_input

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
    """PIL image -> (n_crops, 3, K, K) tensor for one resolution and crop mode."""

    def __init__(self, resolution: int, cfg: DataConfig, mode: CropMode = "center"):
        if mode not in CROPS_PER_MODE:
            raise ValueError(f"unknown crop mode {mode!r} (known: {', '.join(CROPS_PER_MODE)})")
        self.resolution, self.cfg, self.mode = resolution, cfg, mode

    def __call__(self, image: Image.Image) -> torch.Tensor:
        resized = F.resize(image, resize_size(self.resolution, self.cfg.crop_pct),
                           interpolation=self.cfg.mode)
        tensor = to_model_input(F.to_tensor(resized), self.cfg)
        if self.mode == "ten_crop":
            crops = five_crops(tensor, self.resolution) + five_crops(tensor.flip(-1),
                                                                      self.resolution)
        else:
            _, h, w = tensor.shape
            top, left = _center_offsets(h, w, self.resolution)
            centre = tensor[:, top:top + self.resolution, left:left + self.resolution]
            crops = [centre, centre.flip(-1)] if self.mode == "center_flip" else [centre]
        return torch.stack(crops).contiguous()


def combine_crops(logits: torch.Tensor, average: Average = "probs") -> torch.Tensor:
    """(B, n_crops, C) logits -> (B, C) probabilities, averaging probabilities or logits."""
    if average == "probs":
        return logits.float().softmax(dim=-1).mean(dim=1)
    if average == "logits":
        return logits.float().mean(dim=1).softmax(dim=-1)
    raise ValueError(f"unknown average {average!r} (known: probs, logits)")
