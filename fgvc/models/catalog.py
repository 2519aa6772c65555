"""The architectures fgvc documents, as a static table: ``fgvc models list`` reads it without
importing torch or timm, and recipe checking accepts its names without building anything.

The numbers (parameters with a 1000-class head, default resolution, normalisation,
interpolation) are what the factory builds; ``tests/test_models_list.py`` checks them against
real construction. ``fgvc models list`` and ``fgvc models show`` (fgvc/models/show.py) print it,
and build any other timm name on the meta device for the rest; the names ``model.arch`` accepts
beyond it are checked in fgvc/models/names.py. It imports only the torch-free fgvc/norms.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fgvc.norms import NORMS


@dataclass(frozen=True)
class Entry:
    """One architecture: ``group`` is ``paper`` (the paper's networks and their peers),
    ``modern`` (one or two per recent family) or ``cpu`` (small, for CPU runs)."""

    name: str
    family: str
    params: int
    resolution: int
    norm: str
    interpolation: str
    group: str
    note: str = ""

    @property
    def mean(self) -> tuple[float, ...]:
        return NORMS[self.norm][0]

    @property
    def std(self) -> tuple[float, ...]:
        return NORMS[self.norm][1]

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "params": self.params,
                "default_resolution": self.resolution, "normalisation": self.norm,
                "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation, "note": self.note}


def _e(name: str, family: str, params: int, resolution: int, norm: str, interpolation: str,
       group: str, note: str = "") -> Entry:
    return Entry(name, family, params, resolution, norm, interpolation, group, note)


_CADENE = "pretrainedmodels:"
ENTRIES: tuple[Entry, ...] = (
    _e("resnet50", "ResNet", 25_557_032, 224, "imagenet", "bicubic", "paper",
       "the paper's ImageNet tables; recipes imagenet_resnet50_*, herbarium2019_resnet50"),
    _e("resnet101", "ResNet", 44_549_160, 224, "imagenet", "bicubic", "paper"),
    _e("resnet152", "ResNet", 60_192_808, 224, "imagenet", "bicubic", "paper"),
    _e("legacy_seresnext101_32x4d", "SE-ResNeXt", 48_955_416, 224, "imagenet", "bilinear",
       "paper", "recipe inat2019_seresnext101"),
    _e("legacy_senet154", "SENet", 115_088_984, 224, "imagenet", "bilinear", "paper",
       "recipes inat2019_senet154, herbarium2019_senet154"),
    _e("inception_resnet_v2", "Inception-ResNet-v2", 55_843_464, 299, "inception", "bicubic",
       "paper", "recipe inat2019_inceptionresnetv2"),
    _e("pnasnet5large", "PNASNet", 86_057_668, 331, "inception", "bicubic", "paper",
       "the paper's FixPNASNet-5"),
    _e("resnext101_32x8d", "ResNeXt", 88_791_336, 224, "imagenet", "bilinear", "paper"),
    _e("resnext101_32x16d", "ResNeXt", 194_026_792, 224, "imagenet", "bilinear", "paper"),
    _e("resnext101_32x32d", "ResNeXt", 468_530_472, 224, "imagenet", "bilinear", "paper"),
    _e("resnext101_32x48d", "ResNeXt", 828_411_176, 224, "imagenet", "bilinear", "paper",
       "the paper's best ImageNet result; WSL weights by hand (model.weights)"),
    _e("efficientnet_b0", "EfficientNet", 5_288_548, 224, "imagenet", "bicubic", "paper",
       "FixEfficientNet's family (b0-b7 here)"),
    _e("efficientnet_b1", "EfficientNet", 7_794_184, 240, "inception", "bicubic", "paper"),
    _e("efficientnet_b2", "EfficientNet", 9_109_994, 256, "imagenet", "bicubic", "paper"),
    _e("efficientnet_b3", "EfficientNet", 12_233_232, 288, "imagenet", "bicubic", "paper"),
    _e("efficientnet_b4", "EfficientNet", 19_341_616, 320, "imagenet", "bicubic", "paper"),
    _e("efficientnet_b5", "EfficientNet", 30_389_784, 448, "imagenet", "bicubic", "paper"),
    _e("efficientnet_b6", "EfficientNet", 43_040_704, 528, "imagenet", "bicubic", "paper"),
    _e("efficientnet_b7", "EfficientNet", 66_347_960, 600, "imagenet", "bicubic", "paper"),
    _e("mpncov_resnet50", "MPN-COV ResNet", 56_929_832, 448, "imagenet", "bilinear", "paper",
       "fgvc's: covariance pooling (iSQRT-COV) after layer4"),
    _e("mpncov_resnet101", "MPN-COV ResNet", 75_921_960, 448, "imagenet", "bilinear", "paper"),
    _e("mpncov_resnet152", "MPN-COV ResNet", 91_565_608, 448, "imagenet", "bilinear", "paper",
       "recipe inat2019_mpncov"),
    _e(_CADENE + "senet154", "SENet", 115_088_984, 224, "imagenet", "bilinear", "paper",
       "Cadene's original of legacy_senet154 (pip install pretrainedmodels)"),
    _e(_CADENE + "se_resnext101_32x4d", "SE-ResNeXt", 48_955_416, 224, "imagenet", "bilinear",
       "paper", "Cadene's original of legacy_seresnext101_32x4d"),
    _e(_CADENE + "inceptionresnetv2", "Inception-ResNet-v2", 55_843_464, 299, "inception",
       "bilinear", "paper", "Cadene's original of inception_resnet_v2"),
    _e(_CADENE + "pnasnet5large", "PNASNet", 86_057_668, 331, "inception", "bilinear", "paper",
       "Cadene's original of pnasnet5large"),
    _e(_CADENE + "resnet50", "ResNet", 25_557_032, 224, "imagenet", "bilinear", "paper",
       "Cadene's (torchvision's) resnet50"),
    _e("vit_base_patch16_224", "ViT", 86_567_656, 224, "inception", "bicubic", "modern",
       "ViT-B/16; position embedding resampled at any size"),
    _e("deit_base_patch16_224", "DeiT", 86_567_656, 224, "imagenet", "bicubic", "modern"),
    _e("vit_base_patch14_dinov2", "DINOv2", 87_348_712, 518, "imagenet", "bicubic", "modern",
       "self-supervised ViT-B/14; sizes must be multiples of 14"),
    _e("eva02_base_patch14_448", "EVA-02", 87_117_544, 448, "clip", "bicubic", "modern",
       "recipe cub200_eva02 (tag mim_in22k_ft_in22k_in1k)"),
    _e("swin_base_patch4_window12_384", "Swin", 87_903_584, 384, "imagenet", "bicubic", "modern",
       "recipe cub200_swin (tag ms_in22k_ft_in1k)"),
    _e("convnext_base", "ConvNeXt", 88_591_464, 224, "imagenet", "bicubic", "modern",
       "recipe cub200_convnext (tag fb_in22k_ft_in1k_384)"),
    _e("regnety_160", "RegNetY", 83_590_140, 224, "imagenet", "bicubic", "modern"),
    _e("resnet18", "ResNet", 11_689_512, 224, "imagenet", "bicubic", "cpu",
       "the quickstart's (`fgvc recipes show quickstart`)"),
    _e("vit_fgvc_tiny_patch8", "ViT", 681_736, 64, "imagenet", "bilinear", "cpu",
       "fgvc's CPU-sized ViT: 6 blocks, width 96, 8 px patches"),
    _e("vit_fgvc_tiny_convstem", "ViT", 725_344, 64, "imagenet", "bilinear", "cpu",
       "the tiny ViT with a 3-convolution stem; recipe quickstart_vit"),
)
BY_NAME: dict[str, Entry] = {e.name: e for e in ENTRIES}

# The paper's networks and their usual peers; modern backbones, one or two per family.
SUPPORTED = [e.name for e in ENTRIES if e.group == "paper"]
MODERN = [e.name for e in ENTRIES if e.group == "modern"]


def is_listed(name: str) -> bool:
    """True for a catalogue name that needs no optional package (every name but Cadene's):
    such a ``model.arch`` is known without importing timm."""
    return name in BY_NAME and not name.startswith(_CADENE)
