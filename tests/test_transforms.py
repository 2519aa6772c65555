"""The FixRes transforms: output sizes at any aspect ratio, test DA determinism, DA2's crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fgvc.transforms import DataConfig, ShiftedCenterCrop, build_transform, resize_size

CFG = DataConfig()


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("augment", ["train", "test", "test2"])
@pytest.mark.parametrize("size", [(50, 50), (120, 40), (40, 120), (300, 200)])
@pytest.mark.parametrize("resolution", [32, 64])
def test_output_shape(augment, size, resolution):
    out = build_transform(augment, resolution, CFG)(random_image(*size))
    assert out.shape == (3, resolution, resolution)
    assert out.dtype == torch.float32


def test_resize_is_the_papers_ratio():
    assert resize_size(224, 224 / 256) == 256
    assert resize_size(448, 224 / 256) == 512
    assert resize_size(64, 224 / 256) == int(64 * 256 / 224)


def test_test_transform_is_deterministic_and_centred():
    image = random_image(97, 61, seed=1)
    transform = build_transform("test", 32, CFG)
    first, second = transform(image), transform(image)
    assert torch.equal(first, second)
    # Same as resizing the shorter side and cutting the centre by hand.
    from torchvision.transforms import functional as F

    resized = F.resize(image, resize_size(32, CFG.crop_pct))
    assert resized.size[1] == resize_size(32, CFG.crop_pct)  # shorter side is the height
    manual = F.normalize(F.to_tensor(F.center_crop(resized, 32)), CFG.mean, CFG.std)
    assert torch.allclose(first, manual)


def test_portrait_images_are_not_padded():
    """The authors' portrait bug padded tall images; the shorter side must be resized instead."""
    image = Image.new("RGB", (40, 120), (200, 10, 10))
    out = build_transform("test", 32, DataConfig(mean=(0, 0, 0), std=(1, 1, 1)))(image)
    assert torch.allclose(out[0], torch.full((32, 32), 200 / 255), atol=1e-3)


def test_normalisation_follows_the_model_config():
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    half = DataConfig(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert torch.allclose(build_transform("test", 32, half)(image), torch.ones(3, 32, 32))


def test_train_crop_scale_is_respected():
    torch.manual_seed(0)
    image = random_image(200, 200)
    transform = build_transform("train", 32, CFG, crop_scale=(1.0, 1.0))
    assert transform(image).shape == (3, 32, 32)
    rrc = transform.transforms[0]
    assert rrc.scale == (1.0, 1.0)


def test_da2_crop_is_vertically_centred_and_shifted_horizontally():
    # Columns carry their own index, rows a constant: the crop's position can be read back.
    width, height, size = 100, 40, 32
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, :, 0] = np.arange(width)[None, :]
    pixels[:, :, 1] = np.arange(height)[:, None]
    image = Image.fromarray(pixels)
    lefts = set()
    for seed in range(50):
        import random

        random.seed(seed)
        crop = np.asarray(ShiftedCenterCrop(size)(image))
        assert crop.shape == (size, size, 3)
        assert crop[0, 0, 1] == (height - size) // 2  # vertically centred
        lefts.add(int(crop[0, 0, 0]))
    assert min(lefts) >= 0 and max(lefts) <= width - size
    assert len(lefts) > 10  # really shifted at random
