"""An exponential moving average of a stage's weights (timm's ``ModelEmaV3``): updated after
every optimiser step, evaluated beside the raw weights every epoch, saved in the epoch
checkpoints, and the stage's final weights when ``ema.use_for_final``."""

from __future__ import annotations

import torch.nn as nn
from timm.utils import ModelEmaV3

from fgvc.recipes.training import EmaConfig


def build_ema(model: nn.Module, cfg: EmaConfig | None) -> ModelEmaV3 | None:
    """A copy of ``model`` (parameters and buffers) that ``ema.update(model, step)`` averages.
    With ``warmup`` the decay at optimiser step t is min(decay, 1 - (1 + t) ** -2/3), so early,
    poor weights fade quickly; the first update copies the weights."""
    if cfg is None:
        return None
    return ModelEmaV3(model, decay=cfg.decay, use_warmup=cfg.warmup)
