"""The architectures of the paper, by name, with what fgvc adds to timm: ResNeXt-101 32x48d
(timm has its weights' config but no builder) and the MPN-COV ResNets (``mpncov.py``)."""

from __future__ import annotations

from functools import partial

import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import HybridEmbed
from timm.models import register_model
from timm.models.resnet import Bottleneck, ResNet
from timm.models.vision_transformer import VisionTransformer

from fgvc.errors import WeightsError
from fgvc.models import mpncov  # noqa: F401  (registers mpncov_resnet50/101/152)
from fgvc.models.mpncov import TIMM_FACTORY_ONLY

# Cadene (pretrainedmodels) name -> the timm port of the same network.
CADENE_TO_TIMM = {
    "senet154": "legacy_senet154",
    "se_resnext101_32x4d": "legacy_seresnext101_32x4d",
    "se_resnext50_32x4d": "legacy_seresnext50_32x4d",
    "se_resnet50": "legacy_seresnet50",
    "se_resnet101": "legacy_seresnet101",
    "se_resnet152": "legacy_seresnet152",
    "inceptionresnetv2": "inception_resnet_v2",
    "pnasnet5large": "pnasnet5large",
    "resnet50": "resnet50",
    "resnet101": "resnet101",
    "resnet152": "resnet152",
}


@register_model
def resnext101_32x48d(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNeXt-101 32x48d (829M parameters), the backbone of the paper's best ImageNet result.
    Its WSL weights are not downloadable through timm's builder: pass them as model.weights."""
    if pretrained:
        raise WeightsError("resnext101_32x48d: timm has no download for these weights; set "
                           "pretrained: none and weights: /path/to/ig_resnext101_32x48-*.pth")
    kwargs = {k: v for k, v in kwargs.items() if k not in TIMM_FACTORY_ONLY}
    model = ResNet(Bottleneck, [3, 4, 23, 3], cardinality=32, base_width=48, **kwargs)
    model.pretrained_cfg = {"input_size": (3, 224, 224), "interpolation": "bilinear",
                            "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
                            "crop_pct": 0.875, "classifier": "fc"}
    return model


@register_model
def vit_fgvc_tiny_patch8(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """A ViT sized for CPU experiments (6 blocks, width 96, 8 px patches, average pooling;
    about 0.5M parameters), built for 64 px: ``recipes/quickstart_vit.yaml`` trains it from
    scratch. timm's own tiny ViTs use 16 px patches, too coarse for 64 px images."""
    if pretrained:
        raise WeightsError("vit_fgvc_tiny_patch8 has no pretrained weights: set pretrained: none")
    kwargs = {k: v for k, v in kwargs.items() if k not in TIMM_FACTORY_ONLY}
    args = dict(img_size=64, patch_size=8, embed_dim=96, depth=6, num_heads=3, mlp_ratio=3.0,
                global_pool="avg", class_token=False)
    model = VisionTransformer(**{**args, **kwargs})
    model.pretrained_cfg = {"input_size": (3, 64, 64), "interpolation": "bilinear",
                            "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
                            "crop_pct": 0.875, "classifier": "head"}
    return model


def _conv_stem(widths: tuple[int, ...]) -> nn.Sequential:
    """3x3 convolutions of stride 2 (BN, ReLU), one per halving of the image."""
    layers, cin = [], 3
    for cout in widths:
        layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                   nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        cin = cout
    return nn.Sequential(*layers)


@register_model
def vit_fgvc_tiny_convstem(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """``vit_fgvc_tiny_patch8`` with its 8 px patch projection replaced by three 3x3 stride-2
    convolutions (an 8x8-pixel token each, as before): the "early convolutions" of Xiao et al.
    (2021), which let a ViT trained from scratch on a few hundred images learn at all, where the
    plain patch projection stays at chance for the quickstart's budget. Everything after the
    stem is the plain ViT (LayerNorm blocks, position embedding, ``fc_norm``, head)."""
    if pretrained:
        raise WeightsError("vit_fgvc_tiny_convstem has no pretrained weights: set "
                           "pretrained: none")
    kwargs = {k: v for k, v in kwargs.items() if k not in TIMM_FACTORY_ONLY}
    args = dict(img_size=64, patch_size=1, embed_dim=96, depth=6, num_heads=3, mlp_ratio=3.0,
                global_pool="avg", class_token=False,
                embed_layer=partial(HybridEmbed, backbone=_conv_stem((24, 48, 96)),
                                    feature_ratio=8))
    model = VisionTransformer(**{**args, **kwargs})
    model.pretrained_cfg = {"input_size": (3, 64, 64), "interpolation": "bilinear",
                            "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
                            "crop_pct": 0.875, "classifier": "head"}
    return model
