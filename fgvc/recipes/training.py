"""The training options a timm user expects, as recipe sections: weight EMA, mixup/cutmix,
the epoch sampler and class weights in the loss (``stages[]``), and their one-line summary for
``fgvc validate``. Kept apart from ``recipe.py`` so the schema of these knobs lives in one place.
The functions take a ``recipe.StageConfig``, named in words: recipe.py imports this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# timm's auto-augment strings: RandAugment ("rand-m9-mstd0.5-inc1"; "rand-...-tweights" etc.,
# TrivialAugment is RandAugment with "-n1-mstd101"), AugMix ("augmix-m5-w4-d2") and AutoAugment
# policies ("original", "originalr", "v0", "v0r", "3a", optionally "-mstd0.5").
AUTO_AUGMENT_RE = re.compile(r"^(rand|augmix|original|originalr|v0|v0r|3a)(-[A-Za-z]+[0-9.]*)*$")


@dataclass
class EmaConfig:
    """An exponential moving average of the weights (timm's ModelEmaV3), one update per
    optimiser step; ``warmup`` ramps the decay up over the first steps."""

    decay: float = 0.9998
    warmup: bool = True
    use_for_final: bool = True

    def check(self) -> list[tuple[str, str]]:
        if not 0 < self.decay < 1:
            return [("decay", f"must be in (0, 1), got {self.decay!r}")]
        return []


@dataclass
class MixupConfig:
    """timm's Mixup/CutMix on each batch, with soft targets (label smoothing folded in)."""

    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    prob: float = 1.0
    switch_prob: float = 0.5

    def check(self) -> list[tuple[str, str]]:
        out = []
        for key in ("mixup_alpha", "cutmix_alpha"):
            if getattr(self, key) < 0:
                out.append((key, f"must be >= 0, got {getattr(self, key)!r}"))
        if self.mixup_alpha == 0 and self.cutmix_alpha == 0:
            out.append(("mixup_alpha", "mixup_alpha and cutmix_alpha are both 0: nothing to mix "
                        "(drop the mixup section)"))
        for key in ("prob", "switch_prob"):
            if not 0 <= getattr(self, key) <= 1:
                out.append((key, f"must be in [0, 1], got {getattr(self, key)!r}"))
        return out


@dataclass
class SamplerConfig:
    """Which images an epoch draws. ``random``: a permutation; ``class_balanced``: classes drawn
    with probability proportional to (class frequency) ** ``power`` (0.5 = square-root sampling,
    0 = uniform over classes, 1 = the data's own frequencies); ``repeated_augmentation``: each
    drawn image ``repetitions`` times, the copies on different processes. ``len_factor``: the
    epoch's length in images, as a multiple of the split's size (class_balanced and
    repeated_augmentation)."""

    name: Literal["random", "class_balanced", "repeated_augmentation"] = "random"
    power: float = 0.5
    repetitions: int = 3
    len_factor: float = 1.0

    def check(self) -> list[tuple[str, str]]:
        out = []
        if not 0 <= self.power <= 1:
            out.append(("power", f"must be in [0, 1], got {self.power!r}"))
        if self.repetitions < 1:
            out.append(("repetitions", f"must be >= 1, got {self.repetitions!r}"))
        if self.len_factor <= 0:
            out.append(("len_factor", f"must be > 0, got {self.len_factor!r}"))
        return out


@dataclass
class LossConfig:
    """Cross-entropy, optionally weighted per class: ``inverse_sqrt`` weighs class c by
    1/sqrt(n_c), ``inverse`` by 1/n_c (normalised so that the mean weight per image is 1)."""

    class_weights: Literal["none", "inverse_sqrt", "inverse"] = "none"


def check_training_options(stage) -> list[tuple[str, str]]:
    """Checks that involve more than one field of a stage."""
    out = []
    if stage.name == "adapt" and stage.mixup is not None:
        out.append(("mixup", "an adapt stage fits the classifier to test-time images: mixup/cutmix "
                    "would change what it adapts to; set it on the train stage only"))
    if stage.mixup is not None and stage.batch_size % 2:
        out.append(("batch_size", f"mixup pairs images within a batch: needs an even batch size, "
                    f"got {stage.batch_size}"))
    if stage.accumulate < 1:
        out.append(("accumulate", f"must be >= 1, got {stage.accumulate!r}"))
    if stage.auto_augment is not None and not AUTO_AUGMENT_RE.match(stage.auto_augment):
        out.append(("auto_augment", f"not a timm auto-augment string: {stage.auto_augment!r} "
                    "(e.g. 'rand-m9-mstd0.5-inc1', 'augmix-m5-w4-d2', 'original', "
                    "'rand-m9-n1-mstd101' for TrivialAugment)"))
    if not 0 <= stage.random_erasing <= 1:
        out.append(("random_erasing", f"must be a probability in [0, 1], got "
                    f"{stage.random_erasing!r}"))
    if stage.optimizer.layer_decay is not None and not 0 < stage.optimizer.layer_decay <= 1:
        out.append(("optimizer.layer_decay", f"must be in (0, 1] or null, got "
                    f"{stage.optimizer.layer_decay!r}"))
    return out


def adapt_warnings(stage) -> list[str]:
    """Allowed but against FixRes: said once in the log and in ``fgvc validate``."""
    if stage.name != "adapt":
        return []
    out = []
    if stage.augment in ("train", "train_resize_crop"):
        out.append(f"adapt stage on train DA ({stage.augment!r}): FixRes adapts on test DA; "
                   "this is the paper's Table 6 ablation")
    if stage.auto_augment or stage.random_erasing:
        out.append("adapt stage with auto_augment/random_erasing: FixRes adapts on test DA")
    return out


def describe_training_options(stage) -> list[str]:
    """The non-default training options of a stage, in words (empty when all are defaults)."""
    out = []
    if stage.ema is not None:
        ema = stage.ema
        out.append(f"EMA decay {ema.decay:g}{' with warm-up' if ema.warmup else ''}, "
                   f"{'EMA' if ema.use_for_final else 'raw'} weights kept")
    if stage.mixup is not None:
        m = stage.mixup
        out.append(f"mixup alpha {m.mixup_alpha:g} / cutmix alpha {m.cutmix_alpha:g}, prob "
                   f"{m.prob:g}, switch {m.switch_prob:g}, soft-target loss (smoothing "
                   f"{stage.label_smoothing:g})")
    if stage.auto_augment:
        out.append(f"auto_augment {stage.auto_augment}")
    if stage.random_erasing:
        out.append(f"random erasing p={stage.random_erasing:g}")
    if stage.accumulate > 1:
        out.append(f"accumulate {stage.accumulate} batches per step (effective batch "
                   f"{stage.accumulate * stage.batch_size} per process)")
    if stage.optimizer.layer_decay is not None:
        out.append(f"layer decay {stage.optimizer.layer_decay:g}")
    s = stage.sampler
    if s.name == "class_balanced":
        out.append(f"class-balanced sampler (power {s.power:g}, {s.len_factor:g}x split size)")
    elif s.name == "repeated_augmentation":
        out.append(f"repeated-augmentation sampler ({s.repetitions} repetitions, "
                   f"{s.len_factor:g}x split size)")
    if stage.loss.class_weights != "none":
        out.append(f"class weights {stage.loss.class_weights}")
    return out
