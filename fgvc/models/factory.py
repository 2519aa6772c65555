"""Build a network by name and read its data settings (mean, std, interpolation) from it.

Names: any timm architecture, with a pretrained tag (``vit_base_patch14_dinov2.lvd142m``) or
as ``hf-hub:org/repo``; ``pretrainedmodels:<name>`` for Cadene's networks. Every network is
built to run at any input size: timm models that support it get ``dynamic_img_size`` (position
embeddings resampled and Swin windows/masks built for the size each forward pass sees), and the
fixed-size global ``AvgPool2d`` of Cadene's networks becomes adaptive.
"""

from __future__ import annotations

import os
import warnings

import timm
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from fgvc.errors import FgvcError
from fgvc.models import zoo  # noqa: F401  (registers fgvc's own architectures with timm)
from fgvc.models.config import ModelConfig
from fgvc.models.names import CADENE_PREFIX, HF_PREFIX
from fgvc.models.weights import WeightsError, load_weights
from fgvc.transforms import DataConfig

PAPER_CROP_PCT = 224 / 256
# Constructor keywords that make a timm model run at any input size; dropped one by one for
# families whose constructors do not take them (CNNs run at any size already).
ANY_SIZE_KWARGS = ("dynamic_img_size", "img_size")


def create_model(cfg: ModelConfig, num_classes: int, **arch_kwargs) -> nn.Module:
    """The network with a ``num_classes`` classifier, and its weights when the recipe names any.

    ``arch_kwargs`` go to timm's constructor (``depth=2, embed_dim=64``: small variants of a
    family for tests)."""
    if cfg.arch.startswith(CADENE_PREFIX):
        model = _create_cadene(cfg, num_classes)
    else:
        model = _create_timm(cfg, num_classes, arch_kwargs)
    if cfg.weights:
        load_weights(model, cfg.weights)
    return model


def _create_timm(cfg: ModelConfig, num_classes: int, arch_kwargs: dict) -> nn.Module:
    pretrained = cfg.pretrained == "imagenet"
    kwargs: dict = {"pretrained": pretrained, "num_classes": num_classes, **arch_kwargs}
    if cfg.drop_rate:
        kwargs["drop_rate"] = cfg.drop_rate
    extra: dict = {"dynamic_img_size": True}
    if cfg.img_size:
        extra["img_size"] = cfg.img_size
    try:
        while True:
            try:
                return timm.create_model(cfg.arch, **kwargs, **extra)
            except TypeError as err:
                rejected = [k for k in extra if repr(k) in str(err)]
                if not rejected:
                    raise
                for key in rejected:
                    extra.pop(key)
    except FgvcError:  # a builder's own refusal already says what to do
        raise
    except (OSError, RuntimeError, ConnectionError, ValueError) as err:
        if cfg.arch.startswith(HF_PREFIX):
            raise WeightsError(_hf_offline_message(cfg.arch, err)) from None
        if not pretrained:
            raise
        raise WeightsError(_offline_message(cfg.arch, err)) from None


def _hf_cache() -> str:
    home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    return os.environ.get("HF_HUB_CACHE", os.path.join(home, "hub"))


def _hf_offline_message(arch: str, err: Exception) -> str:
    repo = arch[len(HF_PREFIX):]
    return (f"cannot read {arch!r} from the Hugging Face Hub ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Offline? Fetch it once online "
            f"(its config.json and weights land in {_hf_cache()}/models--{repo.replace('/', '--')})"
            ", then run with HF_HUB_OFFLINE=1")


def _offline_message(arch: str, err: Exception) -> str:
    """Where the weights would come from, and where to put them by hand."""
    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except RuntimeError:
        cfg = None
    source = ""
    if cfg is not None and cfg.hf_hub_id:
        source = (f" They live at hf-hub:{cfg.hf_hub_id}; put that repository in the Hugging "
                  f"Face cache ({_hf_cache()}) and set HF_HUB_OFFLINE=1, or")
    elif cfg is not None and cfg.url:
        source = f" Download {cfg.url} elsewhere and"
    else:
        source = " Download the checkpoint elsewhere and"
    return (f"could not fetch pretrained weights for {arch!r} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}).{source} set "
            "model.pretrained: none and model.weights: /path/to/checkpoint (.pth, .pt or "
            ".safetensors); normalisation and crop settings still come from the tag's "
            "configuration")


def _create_cadene(cfg: ModelConfig, num_classes: int) -> nn.Module:
    import pretrainedmodels

    name = cfg.arch[len(CADENE_PREFIX):]
    settings = pretrainedmodels.pretrained_settings[name].get("imagenet", {})
    try:
        with warnings.catch_warnings():  # its torchvision calls use deprecated arguments
            warnings.simplefilter("ignore", UserWarning)
            model = pretrainedmodels.__dict__[name](
                num_classes=1000, pretrained="imagenet" if cfg.pretrained == "imagenet" else None)
    except (OSError, RuntimeError, ConnectionError) as err:
        raise WeightsError(
            f"could not fetch ImageNet weights for {cfg.arch!r} ({err}). Download "
            f"{settings.get('url', 'the checkpoint')} elsewhere and set model.weights to its path."
        ) from None
    model.pretrained_cfg = {
        "mean": tuple(settings.get("mean", IMAGENET_DEFAULT_MEAN)),
        "std": tuple(settings.get("std", IMAGENET_DEFAULT_STD)),
        "input_size": tuple(settings.get("input_size", (3, 224, 224))),
        "interpolation": "bilinear",
        "input_range": tuple(settings.get("input_range", (0, 1))),
        "input_space": settings.get("input_space", "RGB"),
    }
    make_global_pool_adaptive(model)
    in_features = model.last_linear.in_features
    model.last_linear = nn.Linear(in_features, num_classes)
    return model


def make_global_pool_adaptive(model: nn.Module) -> str | None:
    """Cadene's networks pool with a fixed ``AvgPool2d`` sized for their native input (7x7 for
    SENet at 224, 11x11 for PNASNet at 331), which fails or pools a corner at other sizes.
    The last top-level ``AvgPool2d`` is the global one; it becomes ``AdaptiveAvgPool2d(1)``,
    identical at the native size. Returns its name."""
    pools = [name for name, child in model.named_children() if isinstance(child, nn.AvgPool2d)]
    if not pools:
        return None
    setattr(model, pools[-1], nn.AdaptiveAvgPool2d(1))
    return pools[-1]


def _tagged(arch: str) -> bool:
    return arch.startswith(HF_PREFIX) or ("." in arch and not arch.startswith(CADENE_PREFIX))


def data_config(model: nn.Module, cfg: ModelConfig) -> DataConfig:
    """The model's own normalisation, input range, channel order and interpolation, with the
    recipe's overrides on top. The crop ratio is the recipe's, else the pretrained tag's when the
    name carries one (``arch.tag``, ``hf-hub:``), else the paper's 224/256."""
    pretrained = getattr(model, "pretrained_cfg", None) or {}
    crop_pct = cfg.crop_pct
    if crop_pct is None:
        crop_pct = pretrained.get("crop_pct") if _tagged(cfg.arch) else None
    return DataConfig(
        mean=tuple(cfg.mean or pretrained.get("mean", DataConfig.mean)),
        std=tuple(cfg.std or pretrained.get("std", DataConfig.std)),
        interpolation=cfg.interpolation or pretrained.get("interpolation", "bilinear"),
        crop_pct=float(crop_pct or PAPER_CROP_PCT),
        input_range=float(pretrained.get("input_range", (0, 1))[-1]),
        input_space=str(pretrained.get("input_space", "RGB")),
    )
