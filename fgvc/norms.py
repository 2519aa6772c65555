"""The input normalisations (mean, std per RGB channel) of the pretrained families, for the
modules that must not import torch.

They are timm's ``IMAGENET_DEFAULT_MEAN/STD``, ``IMAGENET_INCEPTION_MEAN/STD`` and
``OPENAI_CLIP_MEAN/STD`` (timm/data/constants.py), copied because ``import timm.data`` imports
torch, and ``fgvc models list`` (fgvc/models/catalog.py) and the transforms' defaults must not
pay for it; tests/test_models.py checks the copy equals timm's. Modules that import timm anyway
use timm's constants directly.
"""

from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

NORMS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "inception": (INCEPTION_MEAN, INCEPTION_STD),
    "clip": (CLIP_MEAN, CLIP_STD),
}
