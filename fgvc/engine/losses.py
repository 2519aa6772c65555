"""The training objective: cross-entropy with optional label smoothing, per-class weights for
long-tailed data, and soft targets when the batch is mixed (mixup/cutmix)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fgvc.engine.mixing import mix


def class_weights(labels: Sequence[int], num_classes: int, mode: str) -> torch.Tensor | None:
    """Per-class loss weights: ``inverse_sqrt`` 1/sqrt(n_c), ``inverse`` 1/n_c, ``none`` None;
    scaled so the mean weight over the training images is 1 (the learning rate keeps its
    meaning). Classes absent from the labels get the largest present weight."""
    if mode == "none":
        return None
    counts = torch.bincount(torch.as_tensor(list(labels), dtype=torch.long),
                            minlength=num_classes).double()
    power = {"inverse_sqrt": 0.5, "inverse": 1.0}[mode]
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = counts[present] ** -power
    weights[~present] = weights[present].max()
    weights *= counts.sum() / (weights * counts).sum()
    return weights.float()


@dataclass
class Objective:
    """What a training step minimises. With ``mixup`` the targets are soft (smoothing folded in
    by timm's Mixup); PyTorch's ``cross_entropy`` takes soft targets and class weights alike, so
    one call covers every combination."""

    label_smoothing: float = 0.0
    weights: torch.Tensor | None = None
    mixup: object | None = None  # timm.data.Mixup

    def prepare(self, images: torch.Tensor, labels: torch.Tensor):
        """``(images, targets, labels)``: the batch as the network sees it, the loss targets,
        and the hard labels that train accuracy is counted against."""
        if self.mixup is None:
            return images, labels, labels
        return mix(self.mixup, images, labels)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weights = None if self.weights is None else self.weights.to(logits.device)
        smoothing = self.label_smoothing if targets.ndim == 1 else 0.0
        return F.cross_entropy(logits.float(), targets, weight=weights, label_smoothing=smoothing)
