"""Build a network by name and read its data settings (mean, std, interpolation) from it."""

from __future__ import annotations

import warnings

import timm
import torch.nn as nn

from fgvc.models import zoo  # noqa: F401  (registers fgvc's own architectures with timm)
from fgvc.models.weights import WeightsError, load_weights
from fgvc.recipes.recipe import ModelConfig
from fgvc.transforms import DataConfig

CADENE_PREFIX = "pretrainedmodels:"


def is_known_arch(name: str) -> bool:
    if name.startswith(CADENE_PREFIX):
        return name[len(CADENE_PREFIX):] in _cadene_names()
    return timm.is_model(name)


def known_arch_names() -> list[str]:
    """Every name ``model.arch`` accepts, for "did you mean" on a misspelt one."""
    return list(timm.list_models()) + [CADENE_PREFIX + n for n in _cadene_names()]


def _cadene_names() -> list[str]:
    try:
        import pretrainedmodels
    except ImportError:
        return []
    return list(pretrainedmodels.model_names)


def create_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The network with a ``num_classes`` classifier, and its weights when the recipe names any."""
    if cfg.arch.startswith(CADENE_PREFIX):
        model = _create_cadene(cfg, num_classes)
    else:
        model = _create_timm(cfg, num_classes)
    if cfg.weights:
        load_weights(model, cfg.weights)
    return model


def _create_timm(cfg: ModelConfig, num_classes: int) -> nn.Module:
    pretrained = cfg.pretrained == "imagenet"
    try:
        return timm.create_model(cfg.arch, pretrained=pretrained, num_classes=num_classes,
                                 drop_rate=cfg.drop_rate)
    except (OSError, RuntimeError, ConnectionError) as err:
        if not pretrained:
            raise
        raise WeightsError(
            f"could not fetch ImageNet weights for {cfg.arch!r} ({type(err).__name__}: {err}). "
            "Offline? Download the checkpoint on a machine with network access and set "
            "model.pretrained: none and model.weights: /path/to/checkpoint (.pth, .pt or "
            ".safetensors)."
        ) from None


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
        "mean": tuple(settings.get("mean", (0.485, 0.456, 0.406))),
        "std": tuple(settings.get("std", (0.229, 0.224, 0.225))),
        "input_size": tuple(settings.get("input_size", (3, 224, 224))),
        "interpolation": "bilinear",
        "input_range": tuple(settings.get("input_range", (0, 1))),
        "input_space": settings.get("input_space", "RGB"),
    }
    in_features = model.last_linear.in_features
    model.last_linear = nn.Linear(in_features, num_classes)
    return model


def data_config(model: nn.Module, cfg: ModelConfig) -> DataConfig:
    """The model's own normalisation, input range, channel order and interpolation, with the
    recipe's overrides on top."""
    pretrained = getattr(model, "pretrained_cfg", None) or {}
    return DataConfig(
        mean=tuple(cfg.mean or pretrained.get("mean", DataConfig.mean)),
        std=tuple(cfg.std or pretrained.get("std", DataConfig.std)),
        interpolation=cfg.interpolation or pretrained.get("interpolation", "bilinear"),
        crop_pct=cfg.crop_pct,
        input_range=float(pretrained.get("input_range", (0, 1))[-1]),
        input_space=str(pretrained.get("input_space", "RGB")),
    )
