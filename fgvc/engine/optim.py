"""Optimisers and learning-rate schedules, as pure functions of the iteration number."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from fgvc.errors import RecipeError
from fgvc.recipes.recipe import OptimizerConfig, ScheduleConfig


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """The parameter names (fnmatch patterns) the model keeps out of weight decay beyond biases
    and norms: timm's ``no_weight_decay()`` (a ViT's ``pos_embed``, ``cls_token``), read as
    ``timm.optim.create_optimizer_v2`` reads it; none for a model without one."""
    names = getattr(model, "no_weight_decay", None)
    return set(names()) if callable(names) else set()


def _decay_1d(decay_all: bool) -> dict:
    """The keyword that makes timm's group helpers decay biases and norms too; nothing when
    they stay undecayed, timm's default."""
    return {"weight_decay_exclude_1d": False} if decay_all else {}


def parameter_groups(model: nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict]:
    """The trainable parameters in timm's weight-decay groups (``param_groups_weight_decay``, as
    ``create_optimizer_v2`` builds them): no decay on biases, norm parameters (1-D) and what
    the model's ``no_weight_decay()`` names. ``decay_all`` (the authors' release) decays biases
    and norms too, never what the model names."""
    from timm.optim import param_groups_weight_decay

    groups = param_groups_weight_decay(model, weight_decay,
                                       no_weight_decay_list=no_weight_decay_names(model),
                                       **_decay_1d(decay_all))
    # The decayed group first, the order fgvc has always used: a checkpoint's optimiser state
    # is matched to the groups by position, so runs saved before still resume.
    return sorted((g for g in groups if g["params"]), key=lambda g: g["weight_decay"] == 0)


def layer_decay_groups(model: nn.Module, weight_decay: float, layer_decay: float,
                       decay_all: bool = False) -> list[dict]:
    """timm's layer-wise lr decay groups (BEiT): the model's ``group_matcher`` numbers its layers
    (ViT blocks, ResNet stages' blocks, ...) from the stem (0) to the head (L); a group's
    ``lr_scale`` is ``layer_decay ** (L - layer)``. Weight decay as in ``parameter_groups``."""
    from timm.optim import param_groups_layer_decay

    if not hasattr(model, "group_matcher"):
        raise RecipeError(f"optimizer.layer_decay: {type(model).__name__} does not number its "
                          "layers (no timm group_matcher); use a timm architecture or drop "
                          "layer_decay")
    return param_groups_layer_decay(model, weight_decay,
                                    no_weight_decay_list=no_weight_decay_names(model),
                                    layer_decay=layer_decay,
                                    **_decay_1d(decay_all))


def _fused_supported(params: list[torch.Tensor]) -> bool:
    """One fused kernel per step instead of a loop of small ones (on a ResNet-18 on 2 CPU cores
    AdamW's step takes 9.5 ms fused against 49 ms foreach): on CUDA, and on the CPU from torch
    2.4, which added fused CPU kernels; every parameter on one device type."""
    if all(p.is_cuda for p in params):
        return True
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 4) and all(p.device.type == "cpu" for p in params)


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    if cfg.layer_decay is not None:
        groups = layer_decay_groups(model, cfg.weight_decay, cfg.layer_decay, cfg.decay_all)
    else:
        groups = parameter_groups(model, cfg.weight_decay, cfg.decay_all)
    if not groups:
        raise RecipeError("nothing to train: no parameter requires a gradient")
    fused = _fused_supported([p for g in groups for p in g["params"]])
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               fused=fused or None)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused or None)


def lr_at(step: int, steps_per_epoch: int, epochs: int, base_lr: float,
          cfg: ScheduleConfig) -> float:
    """Learning rate at iteration ``step``: linear warm-up, then constant, step or cosine."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if cfg.name == "constant":
        return base_lr
    if cfg.name == "step":
        return base_lr * cfg.gamma ** (step // (cfg.every * steps_per_epoch))
    total = max(1, epochs * steps_per_epoch - warmup)
    progress = min(1.0, (step - warmup) / total)
    return cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """``lr`` times each group's ``lr_scale`` (layer-wise decay; 1 otherwise)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
