"""What every stage of a run shares: the recipe, the run folder, the dataset, the model, its
data settings and the device, with the loaders and the loss built from them.

Its own module, below the stage, the loops and the caches that all take it (engine/stage.py,
engine/loop.py, engine/feature_cache.py, engine/kept_activations.py, engine/remaining.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from fgvc.datasets.base import DatasetIndex
from fgvc.datasets.decode import decode_options
from fgvc.engine.data import make_loader
from fgvc.engine.distributed import current
from fgvc.engine.evaluation_cache import PassMemo
from fgvc.engine.losses import Objective, class_weights
from fgvc.engine.mixing import build_mixup
from fgvc.inference.tta import CropMode, MultiCrop
from fgvc.recipes.recipe import Recipe, StageConfig
from fgvc.runfolder import RunFolder
from fgvc.tracking import Tracker
from fgvc.transforms import (
    DataConfig,
    DeviceNormalize,
    albumentations_step,
    albumentations_warnings,
    loader_transform,
)

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What every stage of a run shares."""

    recipe: Recipe
    run_dir: Path
    index: DatasetIndex
    model: nn.Module
    data_cfg: DataConfig
    device: torch.device
    passes: PassMemo = field(default_factory=PassMemo)  # evaluation passes made so far
    tracker: Tracker = field(default_factory=Tracker)
    # Activations entering the adapted part, kept from the evaluation before adaptation: an
    # engine/kept_activations.KeptActivations, which reads this context (so not named here).
    kept: Any = None
    # Seconds per image and resolution of the latest validation of the whole network: the run
    # ETA prices the forward passes left (evaluations, predictions) with it.
    forward_rate: tuple[float, int] | None = None
    # The training loader serving every epoch of the stage running now (its workers persist).
    _stage_loader: tuple[StageConfig, DataLoader] | None = field(default=None, init=False,
                                                                 repr=False)

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir)

    @property
    def checkpoint_dir(self) -> Path:
        return self.folder.checkpoint_dir

    def final_checkpoint(self, stage: StageConfig) -> Path:
        return self.folder.checkpoint(stage.name)

    @property
    def final_weights(self) -> Path | None:
        """The last stage's finished checkpoint, once it exists."""
        path = self.final_checkpoint(self.recipe.stages[-1])
        return path if path.exists() else None

    def last_checkpoint(self, stage: StageConfig) -> Path:
        return self.folder.checkpoint(stage.name, "last")

    def best_checkpoint(self, stage: StageConfig) -> Path:
        return self.folder.checkpoint(stage.name, "best")

    def _metric_rows(self) -> list[dict]:
        return self.folder.metric_rows()

    def _write_metrics(self, rows: list[dict]) -> None:
        self.folder.write_metrics(rows)

    def log_metrics(self, row: dict) -> None:
        if not current().is_main:
            return
        self._write_metrics(self._metric_rows() + [row])
        self.tracker.epoch(row)

    def trim_metrics(self, stage: str, after_epoch: int) -> None:
        """Drop rows a crash left beyond the checkpoint being resumed, so none is doubled."""
        if not current().is_main:
            return
        rows = self._metric_rows()
        kept = [r for r in rows if r.get("stage") != stage or r.get("epoch", 0) <= after_epoch]
        if len(kept) != len(rows):
            self._write_metrics(kept)

    def train_loader(self, stage: StageConfig, epoch: int, skip_batches: int = 0, **overrides):
        """The stage's training data; the shuffle is a function of (seed, epoch), so a resumed
        run sees exactly the order it would have seen (without the ``skip_batches`` done).
        ``overrides``: make_loader arguments. Without them one loader serves all the stage's
        epochs, its workers kept between them (no new processes, nor their start-up, every
        epoch: on a small fine-grained dataset that start-up is a large share of an epoch)."""
        if not overrides and self._stage_loader is not None and self._stage_loader[0] is stage:
            loader = self._stage_loader[1]
            loader.epochs.set_epoch(epoch, skip_batches * stage.batch_size)
            return loader
        ds = self.recipe.dataset
        transform = loader_transform(stage.augment, stage.resolution, self.data_cfg,
                                     tuple(stage.crop_scale), auto_augment=stage.auto_augment,
                                     random_erasing=stage.random_erasing,
                                     albumentations=stage_albumentations(stage))
        loader = make_loader(self.index, stage.data_split or ds.train_split, transform=transform,
                             **{"batch_size": stage.batch_size, "num_workers": ds.num_workers,
                                "on_bad_image": ds.on_bad_image, "shuffle": True,
                                "drop_last": True, "seed": self.recipe.seed, "epoch": epoch,
                                "decode": decode_options(ds),
                                "skip": skip_batches * stage.batch_size,
                                "sampler_cfg": stage.sampler, "persistent": not overrides,
                                "device_transform": DeviceNormalize(self.data_cfg), **overrides})
        if not overrides:
            self._stage_loader = (stage, loader)
        return loader

    def release_train_loader(self) -> None:
        """End the kept training loader's workers (the stage is over)."""
        self._stage_loader = None

    def objective(self, stage: StageConfig) -> Objective:
        """The stage's loss: label smoothing, class weights and mixup/cutmix."""
        n = self.index.num_classes
        labels = [s.label for s in self.index.split(self.recipe.dataset.train_split)]
        return Objective(stage.label_smoothing, class_weights(labels, n, stage.loss.class_weights),
                         build_mixup(stage.mixup, n, stage.label_smoothing))

    def eval_loader(self, split: str, resolution: int | list[int], batch_size: int,
                    crops: CropMode = "center", **overrides):
        """A split through test DA at ``resolution``, with ``crops`` per image; a list of
        resolutions gives ``{resolution: batch}`` batches from one decode per image."""
        ds = self.recipe.dataset
        return make_loader(self.index, split, transform=MultiCrop(resolution, self.data_cfg, crops),
                           **{"batch_size": batch_size, "num_workers": ds.num_workers,
                              "on_bad_image": ds.on_bad_image, "decode": decode_options(ds),
                              "device_transform": DeviceNormalize(self.data_cfg), **overrides})


def stage_albumentations(stage: StageConfig):
    """The stage's albumentations step (``transforms.AlbumentationsStep``), its FixRes
    warnings logged, or ``None`` without the block."""
    block = stage.albumentations
    if block is None:
        return None
    step = albumentations_step(block.pipeline, block.position, stage.resolution,
                               where=f"stage {stage.name}: albumentations")
    for warning in albumentations_warnings(step):
        log.warning("stage %s: %s", stage.name, warning)
    return step
