"""Mixup and CutMix for a training stage: timm's ``Mixup`` with the recipe's settings."""

from __future__ import annotations

import torch
from timm.data import Mixup

from fgvc.recipes.training import MixupConfig


def build_mixup(cfg: MixupConfig | None, num_classes: int,
                label_smoothing: float = 0.0) -> Mixup | None:
    """Batch-wise mixing whose soft targets already carry the label smoothing, so the loss is a
    plain soft-target cross-entropy. Its draws come from numpy's global generator, which a stage
    seeds from (seed, epoch): a resumed run mixes exactly as the uninterrupted one."""
    if cfg is None:
        return None
    return Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, prob=cfg.prob,
                 switch_prob=cfg.switch_prob, mode="batch", label_smoothing=label_smoothing,
                 num_classes=num_classes)


def mix(mixup: Mixup, images: torch.Tensor,
        labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images, soft_targets, labels)`` mixed in pairs. A batch made odd by skipped unreadable
    images loses its last image (timm mixes a batch with its reverse and needs an even size)."""
    if len(labels) % 2:
        images, labels = images[:-1], labels[:-1]
    if len(labels) == 0:
        return images, labels.new_zeros((0, mixup.num_classes), dtype=torch.float32), labels
    mixed, targets = mixup(images, labels)
    return mixed, targets, labels
