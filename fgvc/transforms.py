"""The FixRes transforms: train DA, test DA and test DA2, normalised per model.

Train DA zooms in on objects (RandomResizedCrop), test DA shows them smaller (resize the shorter
side to K/crop_pct then centre-crop K). That is the apparent-object-size discrepancy of the
paper; stage 2 fixes it by adapting the network to test DA at a higher resolution.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as F

Augment = Literal["train", "test", "test2", "train_resize_crop"]
_INTERPOLATION = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class DataConfig:
    """How a model expects its input: taken from its pretrained configuration."""

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    crop_pct: float = 224 / 256
    input_range: float = 1.0  # 255 for networks trained on 0-255 pixels (Cadene's bninception)
    input_space: str = "RGB"  # or "BGR"

    @property
    def mode(self) -> T.InterpolationMode:
        return _INTERPOLATION[self.interpolation]


def resize_size(resolution: int, crop_pct: float) -> int:
    """Shorter side before the centre crop: int(K * 256/224) for the paper's crop ratio."""
    return int(resolution / crop_pct)


class ShiftedCenterCrop:
    """Test DA2's crop: centred vertically, shifted horizontally at random by up to the margin."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        top = max(0, (height - self.size) // 2)
        margin = max(0, width - self.size)
        left = random.randint(0, margin)
        return F.crop(image, top, left, self.size, self.size)


def to_model_input(tensor: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """A [0, 1] RGB tensor (C, H, W) in the model's channel order, range and normalisation."""
    if cfg.input_space == "BGR":
        tensor = tensor.flip(0)
    if cfg.input_range != 1.0:
        tensor = tensor * cfg.input_range
    return F.normalize(tensor, cfg.mean, cfg.std)


class ToModelInput:
    """PIL image -> normalised tensor, as the model's pretrained configuration asks."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return to_model_input(F.to_tensor(image), self.cfg)


def _finish(cfg: DataConfig) -> list:
    return [ToModelInput(cfg)]


def train_transform(resolution: int, cfg: DataConfig,
                    crop_scale: tuple[float, float] = (0.08, 1.0)) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(resolution, scale=tuple(crop_scale), ratio=(3 / 4, 4 / 3),
                            interpolation=cfg.mode),
        T.RandomHorizontalFlip(),
        T.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3),
        *_finish(cfg),
    ])


def train_resize_crop_transform(resolution: int, cfg: DataConfig) -> T.Compose:
    """The paper's appendix D variant of train DA: shorter side resized as for test DA, then a
    random K x K crop (no scale change), flip and colour jitter."""
    return T.Compose([
        T.Resize(resize_size(resolution, cfg.crop_pct), interpolation=cfg.mode),
        T.RandomCrop(resolution),
        T.RandomHorizontalFlip(),
        T.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3),
        *_finish(cfg),
    ])


def test_transform(resolution: int, cfg: DataConfig) -> T.Compose:
    """Deterministic: the same image always gives the same tensor."""
    return T.Compose([
        T.Resize(resize_size(resolution, cfg.crop_pct), interpolation=cfg.mode),
        T.CenterCrop(resolution),
        *_finish(cfg),
    ])


def test2_transform(resolution: int, cfg: DataConfig) -> T.Compose:
    return T.Compose([
        T.Resize(resize_size(resolution, cfg.crop_pct), interpolation=cfg.mode),
        T.RandomHorizontalFlip(),
        T.ColorJitter(brightness=0.05, contrast=0.05, saturation=0.05),
        ShiftedCenterCrop(resolution),
        *_finish(cfg),
    ])


_BUILDERS = {"train": train_transform, "test": test_transform, "test2": test2_transform,
             "train_resize_crop": train_resize_crop_transform}


def build_transform(augment: Augment, resolution: int, cfg: DataConfig,
                    crop_scale: tuple[float, float] = (0.08, 1.0), *,
                    auto_augment: str | None = None, random_erasing: float = 0.0) -> T.Compose:
    """``crop_scale`` is RandomResizedCrop's area range; only train DA uses it.
    ``auto_augment`` (a timm string) acts on the image before normalisation,
    ``random_erasing`` (a probability) on the normalised tensor."""
    if augment not in _BUILDERS:
        raise ValueError(f"unknown augment {augment!r} (known: {', '.join(_BUILDERS)})")
    if augment == "train":
        pipeline = train_transform(resolution, cfg, crop_scale)
    else:
        pipeline = _BUILDERS[augment](resolution, cfg)
    if auto_augment or random_erasing:
        pipeline = add_timm_augmentation(pipeline, resolution, cfg, auto_augment, random_erasing)
    return pipeline


def add_timm_augmentation(pipeline: T.Compose, resolution: int, cfg: DataConfig,
                          auto_augment: str | None, random_erasing: float) -> T.Compose:
    """timm's RandAugment / AugMix / AutoAugment (chosen by the string's first word, as timm's
    ``create_transform`` does) just before the normalisation, and timm's per-pixel
    RandomErasing after it."""
    from timm.data import auto_augment as aa
    from timm.data.random_erasing import RandomErasing
    from timm.data.transforms import str_to_pil_interp

    ops = list(pipeline.transforms)
    if auto_augment:
        params = {"translate_const": int(resolution * 0.45),
                  "img_mean": tuple(min(255, round(255 * m)) for m in cfg.mean),
                  "interpolation": str_to_pil_interp(cfg.interpolation)}
        make = (aa.rand_augment_transform if auto_augment.startswith("rand") else
                aa.augment_and_mix_transform if auto_augment.startswith("augmix") else
                aa.auto_augment_transform)
        try:
            op = make(auto_augment, params)
        except (AssertionError, ValueError, KeyError, IndexError) as err:
            raise ValueError(f"auto_augment: timm cannot read {auto_augment!r} "
                             f"({type(err).__name__}: {err})") from None
        ops.insert(len(ops) - 1, op)  # the last op is ToModelInput
    if random_erasing:
        ops.append(RandomErasing(probability=random_erasing, mode="pixel", device="cpu"))
    return T.Compose(ops)

