"""Seeding, so that a run, and a resumed run, draws the same random numbers."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one process's epoch: its shuffle and its augmentation draws."""
    return seed * 100_003 + epoch * 7919 + rank
