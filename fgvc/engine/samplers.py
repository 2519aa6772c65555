"""Epoch samplers beyond a plain shuffle: class-balanced (long-tailed data such as iNaturalist
and Herbarium) and repeated augmentation (the FixRes paper's ImageNet sampler).

Written here rather than taken from a library because no maintained sampler gives all three of:
a draw that is a function of (recipe seed, epoch) only, so ``--resume`` repeats it exactly;
``DistributedSampler``'s sharding (every process strides the same global list, padded by
wrapping around); and a reshuffle every epoch (the FixRes release never reshuffled; timm's
``RepeatAugSampler`` seeds with the epoch alone, ignoring the run's seed).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from fgvc.recipes.training import SamplerConfig


class EpochSampler(Sampler[int], ABC):
    """This process's share of a global index list drawn from (seed, epoch): positions
    ``rank, rank + world, ...`` of the list padded to a multiple of ``world``, as
    ``DistributedSampler`` does."""

    def __init__(self, length: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1):
        self.length, self.seed, self.epoch = length, seed, epoch
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @abstractmethod
    def draw(self, generator: torch.Generator) -> torch.Tensor:
        """The global index list of one epoch; each sampler below defines its own draw."""

    def global_indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        indices = self.draw(generator).tolist()
        total = math.ceil(len(indices) / self.world_size) * self.world_size
        return (indices * math.ceil(total / max(len(indices), 1)))[:total]

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_indices()[self.rank::self.world_size])

    def __len__(self) -> int:
        return math.ceil(self.length / self.world_size)


class ClassBalancedSampler(EpochSampler):
    """``length`` images drawn with replacement, class c with probability proportional to
    n_c ** power (each image of class c weighs n_c ** (power - 1))."""

    def __init__(self, labels: Sequence[int], power: float, length: int, **kwargs):
        super().__init__(length, **kwargs)
        labels_t = torch.as_tensor(list(labels), dtype=torch.long)
        counts = torch.bincount(labels_t).double()
        self.weights = counts[labels_t] ** (power - 1.0)

    def draw(self, generator: torch.Generator) -> torch.Tensor:
        return torch.multinomial(self.weights, self.length, replacement=True, generator=generator)


class RepeatedAugmentationSampler(EpochSampler):
    """A fresh permutation each epoch, each image repeated ``repetitions`` times in a row, so
    that striding across processes sends the copies to different processes; the epoch is the
    first ``length`` entries (several permutations when it is longer than one)."""

    def __init__(self, num_images: int, repetitions: int, length: int, **kwargs):
        super().__init__(length, **kwargs)
        self.num_images, self.repetitions = num_images, repetitions

    def draw(self, generator: torch.Generator) -> torch.Tensor:
        rounds = math.ceil(self.length / (self.num_images * self.repetitions))
        perms = [torch.randperm(self.num_images, generator=generator) for _ in range(rounds)]
        return torch.cat(perms).repeat_interleave(self.repetitions)[:self.length]


def build_sampler(cfg: SamplerConfig, labels: Sequence[int], *, seed: int, epoch: int, rank: int,
                  world_size: int) -> EpochSampler | None:
    """The recipe's sampler, or None for ``random`` (the loader's own shuffle)."""
    if cfg.name == "random":
        return None
    length = max(1, round(len(labels) * cfg.len_factor))
    common = {"seed": seed, "epoch": epoch, "rank": rank, "world_size": world_size}
    if cfg.name == "class_balanced":
        return ClassBalancedSampler(labels, cfg.power, length, **common)
    return RepeatedAugmentationSampler(len(labels), cfg.repetitions, length, **common)
