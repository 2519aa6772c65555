"""Run one stage of a recipe: epochs of training, validation every epoch, a checkpoint every
epoch, and resumption from the last one."""

from __future__ import annotations

import logging
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from fgvc.datasets.base import DatasetIndex
from fgvc.datasets.decode import decode_options
from fgvc.engine.best import BestEpoch
from fgvc.engine.checkpoint import (
    checkpoint_exists,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from fgvc.engine.compile import maybe_compile
from fgvc.engine.data import make_loader
from fgvc.engine.distributed import all_reduce_sum, barrier, current, gather_objects
from fgvc.engine.ema import build_ema
from fgvc.engine.evaluation_cache import PassMemo, weights_digest
from fgvc.engine.feature_cache import adapt_cache
from fgvc.engine.freeze import (
    apply_requires_grad,
    count_parameters,
    plan_trainable,
    prepare_batchnorm,
    set_train_mode,
)
from fgvc.engine.loop import (
    EpochProgress,
    EpochResult,
    NonFiniteLoss,
    evaluate,
    train_one_epoch,
)
from fgvc.engine.losses import Objective, class_weights
from fgvc.engine.mixing import build_mixup
from fgvc.engine.optim import build_optimizer, lr_at
from fgvc.engine.preemption import (
    CheckpointTimer,
    Preempted,
    pending_signal,
    rng_state,
    set_rng_state,
    training,
)
from fgvc.engine.remaining import work_left
from fgvc.engine.resumable import ResumableState
from fgvc.engine.seeding import epoch_seed, seed_everything
from fgvc.inference.tta import CropMode, MultiCrop
from fgvc.progress import format_duration, run_eta
from fgvc.recipes.recipe import Recipe, StageConfig
from fgvc.recipes.training import adapt_warnings
from fgvc.runfolder import RunFolder
from fgvc.tracking import Tracker
from fgvc.transforms import DataConfig, DeviceNormalize, loader_transform

if TYPE_CHECKING:
    from fgvc.engine.kept_activations import KeptActivations

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
    # Activations entering the adapted part, kept from the evaluation before adaptation.
    kept: KeptActivations | None = None
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
                                     random_erasing=stage.random_erasing)
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


def run_stage(ctx: RunContext, stage: StageConfig) -> dict | None:
    """Train ``stage`` to completion, resuming from its last epoch checkpoint if one exists;
    ``ctx.model`` ends with the weights the recipe names (last or best epoch, raw or EMA),
    which are described in the returned dict and in the final checkpoint. Label-free adapt
    methods (``bn_stats``, ``frechet``) run in engine/adapt_methods.py."""
    if stage.method != "finetune":
        from fgvc.engine.adapt_methods import run_label_free

        return run_label_free(ctx, stage)
    model, recipe = ctx.model, ctx.recipe
    for warning in adapt_warnings(stage):
        log.warning("%s: %s", stage.name, warning)
    plan = plan_trainable(model, stage.trainable, stage.reestimate)
    apply_requires_grad(model, plan)
    optimizer = build_optimizer(model, stage.optimizer)
    weights = ResumableState(model, plan.everything)
    last = ctx.last_checkpoint(stage)
    start_epoch, step, partial, state = 0, 0, None, None
    if checkpoint_exists(last):
        state = load_checkpoint(last)
        weights.load(state, last)
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = state["epoch"], state["step"]
        partial = state.get("progress")
        prepare_batchnorm(model, plan, stage.bn_momentum, reset=False)
        ctx.trim_metrics(stage.name, start_epoch)
        where = (f"{partial['epoch_progress']['batches']} batch(es) into epoch {start_epoch + 1}" if partial
                 else f"after epoch {start_epoch}")
        log.info("%s: resuming %s from %s", stage.name, where, last)
    elif not plan.everything:
        prepare_batchnorm(model, plan, stage.bn_momentum, reset=stage.bn_momentum is None)
    log.info("%s: %d epochs at %d px, %s, %s trainable parameters of %s", stage.name,
             stage.epochs, stage.resolution, "all modules" if plan.everything else plan.groups,
             f"{count_parameters(model, True):,}", f"{count_parameters(model):,}")

    ema = build_ema(model, stage.ema)
    best = BestEpoch(recipe.checkpoint.metric) if recipe.checkpoint.keep == "best" else None
    if state is not None and ema is not None and "ema" in state:
        ema.module.load_state_dict(state["ema"])
    if state is not None and best is not None and "best" in state:
        best.load_state_dict(state["best"])
    use_ema = ema is not None and stage.ema.use_for_final
    objective = ctx.objective(stage)

    def extra_state() -> dict:
        """EMA weights and the best epoch so far, for every checkpoint of the epoch."""
        extra = {"ema": ema.module.state_dict()} if ema is not None else {}
        return {**extra, "best": best.state_dict()} if best is not None else extra

    val_loader = ctx.eval_loader(recipe.dataset.val_split, stage.resolution,
                                 recipe.evaluate.batch_size, persistent=True)
    steps_per_epoch = math.ceil(len(ctx.train_loader(stage, 0)) / stage.accumulate)
    base_lr = stage.optimizer.lr

    def lr_fn(s: int) -> float:
        return lr_at(s, steps_per_epoch, stage.epochs, base_lr, stage.schedule)

    channels_last = recipe.model.channels_last
    env = current()
    wrapped = wrap_for_training(model, ctx.device)
    evaluator = maybe_compile(model, recipe.model.compile)
    trained = evaluator if wrapped is model else maybe_compile(wrapped, recipe.model.compile)
    saver = MidEpochSaver(ctx, stage, weights, optimizer)
    saver.extra = extra_state
    cache = (adapt_cache(ctx, stage, plan)
             if start_epoch < stage.epochs and partial is None else None)
    if cache is not None:  # the same epochs on activations computed once (feature_cache.py)
        trained, val_loader = cache.tail, cache.val_loader()
    track = (lambda s, loss, lr: ctx.tracker.step(stage.name, s, loss, lr)) if ctx.tracker else None
    epoch_times: list[float] = []
    for epoch in range(start_epoch, stage.epochs):
        epoch_start = time.perf_counter()
        # Augmentation draws: a function of (seed, epoch, process), so a resumed run repeats them;
        # in a partly done epoch, the generators continue from their checkpointed states.
        seed_everything(epoch_seed(recipe.seed, epoch, env.rank))
        resume = None
        if partial is not None and epoch == start_epoch:
            resume = EpochProgress(**partial["epoch_progress"])
            set_rng_state(partial["rng"][env.rank if len(partial["rng"]) > env.rank else 0])
        set_train_mode(model, plan)
        desc = f"{stage.name} {epoch + 1}/{stage.epochs}"
        try:
            with training():
                result = train_one_epoch(
                    trained, cache.train_loader(epoch) if cache else
                    ctx.train_loader(stage, epoch, resume.batches if resume else 0),
                    optimizer, lr_fn=lr_fn, step=resume.step if resume else step,
                    device=ctx.device, grad_clip=stage.grad_clip, channels_last=channels_last,
                    desc=desc, objective=objective, accumulate=stage.accumulate,
                    on_step=None if ema is None else lambda s: ema.update(model, step=s),
                    track=track, resume=resume,
                    after_step=lambda p, e=epoch: saver.after_step(e, p))
        except NonFiniteLoss as err:
            raise NonFiniteLoss(f"stage {stage.name}, epoch {epoch + 1}/{stage.epochs}: {err}") \
                from None
        step = result.next_step
        # Validation every `validate_every` epochs and after the last one (None in between).
        validate = (epoch + 1) % stage.validate_every == 0 or epoch + 1 == stage.epochs
        with training():  # a signal now stops the run after this epoch's checkpoint
            # The last epoch's pass keeps per-image hits: the run's evaluation may reuse it.
            val_start = time.perf_counter()
            val = evaluate(cache.tail if cache else evaluator, val_loader, ctx.device,
                           channels_last=channels_last, desc=f"val @{stage.resolution}",
                           with_hits=epoch + 1 == stage.epochs) if validate else {}
            if val and cache is None:
                ctx.forward_rate = ((time.perf_counter() - val_start) / max(val["images"], 1),
                                    stage.resolution)
        epoch_times.append(time.perf_counter() - epoch_start)
        row = {
            "stage": stage.name, "epoch": epoch + 1, "resolution": stage.resolution,
            "lr": result.last_lr, "train_loss": result.loss, "train_top1": result.top1,
            "val_loss": val.get("loss"), "val_top1": val.get("top1"), "val_top5": val.get("top5"),
            "bad_images": result.bad_images + val.get("bad_images", 0), "seconds": result.seconds,
            "images_per_second": result.images_per_second,
            "epoch_seconds": epoch_times[-1],
        }
        if ema is not None and validate:
            val_ema = evaluate(ema.module, val_loader, ctx.device, channels_last=channels_last,
                               desc=f"val EMA @{stage.resolution}")
            row.update({f"val_ema_{k}": val_ema[k] for k in ("loss", "top1", "top5")})
            log.info("%s epoch %d/%d: EMA weights val top-1 %.1f%% top-5 %.1f%%", stage.name,
                     epoch + 1, stage.epochs, val_ema["top1"], val_ema["top5"])
        if best is not None and validate:
            metric = recipe.checkpoint.metric.replace("val_", "val_ema_") if use_ema else \
                recipe.checkpoint.metric
            if best.offer(epoch + 1, row[metric]) and env.is_main:
                save_checkpoint(ctx.best_checkpoint(stage), {
                    "model": (ema.module if use_ema else model).state_dict(),
                    "epoch": epoch + 1, metric: row[metric]})
            row["best_epoch"] = best.epoch
        ctx.log_metrics(row)
        left = _run_eta(ctx, stage, epoch + 1, result, cache is not None)
        log.info("%s epoch %d/%d: loss %.3f, train top-1 %.1f%%, %s, "
                 "%.0f img/s%s, epoch %s, run ETA %s", stage.name, epoch + 1,
                 stage.epochs, result.loss, result.top1,
                 f"val top-1 {val['top1']:.1f}% top-5 {val['top5']:.1f}%" if val
                 else "no validation this epoch", row["images_per_second"],
                 f", {row['bad_images']} unreadable image(s) skipped" if row["bad_images"] else "",
                 format_duration(epoch_times[-1]), format_duration(left))
        if env.is_main:
            save_checkpoint(last, {**weights.state(),
                                   "optimizer": optimizer.state_dict(),
                                   "epoch": epoch + 1, "step": step, "stage": stage.name,
                                   **extra_state()},
                            keep_previous=True)
        saver.timer.reset()
        saver.stop_if_signalled(f"the end of {stage.name} epoch {epoch + 1}")
    ctx.release_train_loader()
    if cache is not None:
        cache.close()
    if start_epoch < stage.epochs:  # the last validation: reused by an identical later pass
        ctx.passes.put(PassMemo.key(weights_digest(model), recipe.dataset.val_split,
                                    stage.resolution, "center", "probs"), val)
    selected = _select_final_weights(ctx, stage, ema.module if use_ema else model, best)
    if env.is_main:
        save_checkpoint(ctx.final_checkpoint(stage), {
            "model": model.state_dict(), "stage": stage.name, "resolution": stage.resolution,
            "arch": recipe.model.arch, "category_ids": list(ctx.index.category_ids),
            "selected": selected})
        remove_checkpoint(last)
    barrier()  # every process has loaded the best epoch's file
    if env.is_main:
        ctx.best_checkpoint(stage).unlink(missing_ok=True)
    return selected


def _run_eta(ctx: RunContext, stage: StageConfig, epochs_done: int, result: EpochResult,
             on_cache: bool) -> float:
    """Seconds left in the whole run (engine/remaining.py lists the passes), priced at this
    epoch's training pace and the latest whole-network validation's (before any: a third of
    the training pace, forward against forward and backward)."""
    train = result.seconds / max(result.images, 1)
    forward = train / 3
    if ctx.forward_rate is not None:
        seconds, resolution = ctx.forward_rate
        forward = seconds * (stage.resolution / resolution) ** 2
    return run_eta(work_left(ctx, stage, epochs_done, result.images, on_cache), train, forward,
                   stage.resolution)


def _select_final_weights(ctx: RunContext, stage: StageConfig, source: nn.Module,
                          best: BestEpoch | None) -> dict:
    """Load the weights the recipe names into ``ctx.model``: the best epoch's (its file, kept
    while training) or the last epoch's, raw or EMA (``source``). With ``keep: best`` the last
    epoch's weights stay beside them as ``<stage>_last_epoch.pt``."""
    selected = {"epoch": stage.epochs, "weights": "ema" if source is not ctx.model else "raw",
                "keep": ctx.recipe.checkpoint.keep}
    if best is not None and best.epoch is not None:
        barrier()  # the main process wrote the best epoch's file
        if current().is_main:
            save_checkpoint(ctx.folder.checkpoint(stage.name, "last_epoch"),
                            {"model": source.state_dict(), "epoch": stage.epochs})
        selected.update(epoch=best.epoch, metric=best.metric, value=best.value)
        ctx.model.load_state_dict(load_checkpoint(ctx.best_checkpoint(stage))["model"])
    elif source is not ctx.model:
        ctx.model.load_state_dict(source.state_dict())
    if selected["epoch"] != stage.epochs or selected["weights"] == "ema":
        log.info("%s: final weights are epoch %d's (%s)", stage.name, selected["epoch"],
                 selected["weights"])
    return selected


class MidEpochSaver:
    """After every step: a checkpoint at this point of the epoch when ``checkpoint.every_minutes``
    is due or a pre-emption signal arrived, and then, on a signal, the stop. Under torchrun the
    processes agree first (one small all-reduce per step), so all stop at the same step."""

    def __init__(self, ctx: RunContext, stage: StageConfig, weights: ResumableState,
                 optimizer: torch.optim.Optimizer):
        self.ctx, self.stage, self.weights, self.optimizer = ctx, stage, weights, optimizer
        self.timer = CheckpointTimer(ctx.recipe.checkpoint.every_minutes)
        self.extra = dict  # more state for the checkpoint (EMA weights, best epoch so far)

    def _agree(self) -> tuple[int, bool]:
        """(the signal to stop on or 0, whether a timed checkpoint is due), the same on every
        process."""
        signum = pending_signal() or 0
        due = self.timer.due()
        if current().enabled:
            term, usr1, due_sum = all_reduce_sum([float(signum == signal.SIGTERM),
                                                  float(signum == signal.SIGUSR1), float(due)])
            signum = signal.SIGTERM if term else signal.SIGUSR1 if usr1 else 0
            due = due_sum > 0
        return signum, due

    def stop_if_signalled(self, where: str) -> None:
        signum, _ = self._agree()
        if signum:
            raise Preempted(signum, self.ctx.run_dir, where)

    def after_step(self, epoch: int, progress) -> None:
        """``progress()``: the epoch's ``EpochProgress``, read from the device only when a
        checkpoint is due (train_one_epoch keeps its sums there)."""
        signum, due = self._agree()
        if not (signum or due):
            return
        done = progress()
        rngs = gather_objects(rng_state())
        last = self.ctx.last_checkpoint(self.stage)
        if current().is_main:
            save_checkpoint(last, {
                **self.weights.state(), "optimizer": self.optimizer.state_dict(),
                "epoch": epoch, "step": done.step, "stage": self.stage.name,
                "progress": {"epoch_progress": done.to_dict(), "rng": rngs}, **self.extra()},
                keep_previous=True)
            log.info("%s: mid-epoch checkpoint %d batch(es) into epoch %d (step %d) -> %s",
                     self.stage.name, done.batches, epoch + 1, done.step, last)
        self.timer.reset()
        if signum:
            raise Preempted(signum, self.ctx.run_dir,
                            f"{self.stage.name} epoch {epoch + 1}, step {done.step}")


def wrap_for_training(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel under torchrun (gradients averaged across processes, the
    parameters broadcast from the main process); the model itself otherwise."""
    if not current().enabled or not any(p.requires_grad for p in model.parameters()):
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)
