"""Run one stage of a recipe: epochs of training, validation every epoch, a checkpoint every
epoch, and resumption from the last one."""

from __future__ import annotations

import logging
import math
import signal
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from fgvc.engine.best import BestEpoch
from fgvc.engine.checkpoint import (
    checkpoint_exists,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from fgvc.engine.compile import maybe_compile
from fgvc.engine.context import RunContext
from fgvc.engine.distributed import all_reduce_sum, barrier, current, gather_objects, sync_buffers
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
    EpochOptions,
    EpochProgress,
    EpochResult,
    NonFiniteLoss,
    evaluate,
    train_one_epoch,
)
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
from fgvc.progress import format_duration, run_eta
from fgvc.recipes.presets import describe_official
from fgvc.recipes.recipe import StageConfig
from fgvc.recipes.training import adapt_warnings

if TYPE_CHECKING:
    from timm.utils import ModelEmaV3

    from fgvc.engine.feature_cache import AdaptCache
    from fgvc.engine.freeze import TrainablePlan

log = logging.getLogger(__name__)


@dataclass
class _StageRun:
    """What the phases of one fine-tuning stage share: the trainable plan, optimiser, EMA and
    best-epoch tracker (``_prepare_stage``), where training resumes (``_resume``), and what the
    epochs train, validate and checkpoint with (``_prepare_epochs``)."""

    ctx: RunContext
    stage: StageConfig
    plan: TrainablePlan
    optimizer: torch.optim.Optimizer
    weights: ResumableState
    ema: ModelEmaV3 | None = None
    best: BestEpoch | None = None
    start_epoch: int = 0
    step: int = 0  # the optimiser steps taken so far
    partial: dict | None = None  # a mid-epoch checkpoint's progress, to resume that epoch from
    options: EpochOptions | None = None
    trained: nn.Module | None = None  # what the optimiser steps go through (DDP, compiled)
    evaluator: nn.Module | None = None
    val_loader: DataLoader | None = None
    saver: MidEpochSaver | None = None
    cache: AdaptCache | None = None  # the adapt stage on activations computed once
    last_val: dict = field(default_factory=dict)  # the latest validation's metrics

    @property
    def use_ema(self) -> bool:
        return self.ema is not None and self.stage.ema.use_for_final

    def extra_state(self) -> dict:
        """EMA weights and the best epoch so far, for every checkpoint of the epoch."""
        extra = {"ema": self.ema.module.state_dict()} if self.ema is not None else {}
        return {**extra, "best": self.best.state_dict()} if self.best is not None else extra


def run_stage(ctx: RunContext, stage: StageConfig) -> dict | None:
    """Train ``stage`` to completion, resuming from its last epoch checkpoint if one exists;
    ``ctx.model`` ends with the weights the recipe names (last or best epoch, raw or EMA),
    which are described in the returned dict and in the final checkpoint. Label-free adapt
    methods (``bn_stats``, ``frechet``) run in engine/adapt_methods.py."""
    if stage.method != "finetune":
        from fgvc.engine.adapt_methods import run_label_free

        return run_label_free(ctx, stage)
    run = _prepare_stage(ctx, stage)
    for epoch in range(run.start_epoch, stage.epochs):
        _run_epoch(run, epoch)
    return _finish_stage(run)


def _prepare_stage(ctx: RunContext, stage: StageConfig) -> _StageRun:
    """The trainable parts and their optimiser, EMA and best-epoch tracker, each resumed from
    the stage's last checkpoint when one exists, then what the epochs run with."""
    model = ctx.model
    for warning in adapt_warnings(stage):
        log.warning("%s: %s", stage.name, warning)
    if stage.preset:
        branch, *notes = describe_official(ctx.recipe.model.arch, ctx.recipe.model.drop_rate)
        log.info("%s: %s", stage.name, branch)
        for note in notes:
            log.warning("%s: %s", stage.name, note)
    plan = plan_trainable(model, stage.trainable, stage.reestimate)
    apply_requires_grad(model, plan)
    run = _StageRun(ctx, stage, plan, build_optimizer(model, stage.optimizer),
                    ResumableState(model, plan.everything))
    state = _resume(run)
    log.info("%s: %d epochs at %d px, %s, %s trainable parameters of %s", stage.name,
             stage.epochs, stage.resolution, "all modules" if plan.everything else plan.groups,
             f"{count_parameters(model, True):,}", f"{count_parameters(model):,}")
    run.ema = build_ema(model, stage.ema)
    metric = ctx.recipe.checkpoint.metric
    run.best = BestEpoch(metric) if ctx.recipe.checkpoint.keep == "best" else None
    if state is not None and run.ema is not None and "ema" in state:
        run.ema.module.load_state_dict(state["ema"])
    if state is not None and run.best is not None and "best" in state:
        run.best.load_state_dict(state["best"])
    _prepare_epochs(run)
    return run


def _resume(run: _StageRun) -> dict | None:
    """Load the stage's last checkpoint (after a crash or a pre-emption) into the weights and
    optimiser and return it; without one, prepare BatchNorm for a fresh start."""
    ctx, stage, model, plan = run.ctx, run.stage, run.ctx.model, run.plan
    last = ctx.last_checkpoint(stage)
    if not checkpoint_exists(last):
        if not plan.everything:
            prepare_batchnorm(model, plan, stage.bn_momentum, reset=stage.bn_momentum is None)
        return None
    state = load_checkpoint(last)
    run.weights.load(state, last)
    run.optimizer.load_state_dict(state["optimizer"])
    run.start_epoch, run.step = state["epoch"], state["step"]
    run.partial = state.get("progress")
    prepare_batchnorm(model, plan, stage.bn_momentum, reset=False)
    ctx.trim_metrics(stage.name, run.start_epoch)
    where = (f"{run.partial['epoch_progress']['batches']} batch(es) into epoch "
             f"{run.start_epoch + 1}" if run.partial else f"after epoch {run.start_epoch}")
    log.info("%s: resuming %s from %s", stage.name, where, last)
    return state


def _prepare_epochs(run: _StageRun) -> None:
    """The loaders, the schedule and the models the epochs train and validate: wrapped for
    torchrun and compiled, or the adapted tail on cached activations (feature_cache.py)."""
    ctx, stage, model, recipe = run.ctx, run.stage, run.ctx.model, run.ctx.recipe
    objective = ctx.objective(stage)
    run.val_loader = ctx.eval_loader(recipe.dataset.val_split, stage.resolution,
                                     recipe.evaluate.batch_size, persistent=True)
    steps_per_epoch = math.ceil(len(ctx.train_loader(stage, 0)) / stage.accumulate)
    base_lr = stage.optimizer.lr

    def lr_fn(s: int) -> float:
        return lr_at(s, steps_per_epoch, stage.epochs, base_lr, stage.schedule)

    wrapped = wrap_for_training(model, ctx.device)
    run.evaluator = maybe_compile(model, recipe.model.compile)
    run.trained = (run.evaluator if wrapped is model
                   else maybe_compile(wrapped, recipe.model.compile))
    run.saver = MidEpochSaver(ctx, stage, run.weights, run.optimizer)
    run.saver.extra = run.extra_state
    if run.start_epoch < stage.epochs and run.partial is None:
        run.cache = adapt_cache(ctx, stage, run.plan)
    if run.cache is not None:
        run.trained, run.val_loader = run.cache.tail, run.cache.val_loader()
    ema = run.ema
    run.options = EpochOptions(
        lr_fn, ctx.device, objective=objective, grad_clip=stage.grad_clip,
        accumulate=stage.accumulate, channels_last=recipe.model.channels_last,
        on_step=None if ema is None else lambda s: ema.update(model, step=s),
        track=(lambda s, loss, lr: ctx.tracker.step(stage.name, s, loss, lr))
        if ctx.tracker else None)


def _run_epoch(run: _StageRun, epoch: int) -> None:
    """Train, validate (raw and EMA weights), keep the best epoch, log the metrics row and line,
    and checkpoint; a pending pre-emption signal stops the run after that checkpoint."""
    ctx, stage = run.ctx, run.stage
    epoch_start = time.perf_counter()
    result = _train_epoch(run, epoch)
    validate = (epoch + 1) % stage.validate_every == 0 or epoch + 1 == stage.epochs
    val = run.last_val = _validate(run, epoch) if validate else {}
    row = {
        "stage": stage.name, "epoch": epoch + 1, "resolution": stage.resolution,
        "lr": result.last_lr, "train_loss": result.loss, "train_top1": result.top1,
        "val_loss": val.get("loss"), "val_top1": val.get("top1"), "val_top5": val.get("top5"),
        "bad_images": result.bad_images + val.get("bad_images", 0), "seconds": result.seconds,
        "images_per_second": result.images_per_second,
        "epoch_seconds": time.perf_counter() - epoch_start,
    }
    if validate:
        _validate_ema_and_keep_best(run, epoch, row)
    ctx.log_metrics(row)
    left = _run_eta(ctx, stage, epoch + 1, result, run.cache is not None)
    log.info("%s epoch %d/%d: loss %.3f, train top-1 %.1f%%, %s, "
             "%.0f img/s%s, epoch %s, run ETA %s", stage.name, epoch + 1,
             stage.epochs, result.loss, result.top1,
             f"val top-1 {val['top1']:.1f}% top-5 {val['top5']:.1f}%" if val
             else "no validation this epoch", row["images_per_second"],
             f", {row['bad_images']} unreadable image(s) skipped" if row["bad_images"] else "",
             format_duration(row["epoch_seconds"]), format_duration(left))
    if current().is_main:
        save_checkpoint(ctx.last_checkpoint(stage), {
            **run.weights.state(), "optimizer": run.optimizer.state_dict(), "epoch": epoch + 1,
            "step": run.step, "stage": stage.name, **run.extra_state()}, keep_previous=True)
    run.saver.timer.reset()
    run.saver.stop_if_signalled(f"the end of {stage.name} epoch {epoch + 1}")


def _train_epoch(run: _StageRun, epoch: int) -> EpochResult:
    """One epoch of training. Its augmentation draws are a function of (seed, epoch, process),
    so a resumed run repeats them; in a partly done epoch, the generators continue from their
    checkpointed states."""
    ctx, stage = run.ctx, run.stage
    rank = current().rank
    seed_everything(epoch_seed(ctx.recipe.seed, epoch, rank))
    resume = None
    if run.partial is not None and epoch == run.start_epoch:
        resume = EpochProgress(**run.partial["epoch_progress"])
        set_rng_state(run.partial["rng"][rank if len(run.partial["rng"]) > rank else 0])
    set_train_mode(ctx.model, run.plan)
    options = replace(run.options, after_step=lambda p: run.saver.after_step(epoch, p))
    try:
        with training():
            loader = (run.cache.train_loader(epoch) if run.cache else
                      ctx.train_loader(stage, epoch, resume.batches if resume else 0))
            result = train_one_epoch(run.trained, loader, run.optimizer, options,
                                     step=resume.step if resume else run.step, resume=resume,
                                     desc=f"{stage.name} {epoch + 1}/{stage.epochs}")
    except NonFiniteLoss as err:
        raise NonFiniteLoss(f"stage {stage.name}, epoch {epoch + 1}/{stage.epochs}: {err}") \
            from None
    run.step = result.next_step
    return result


def _validate(run: _StageRun, epoch: int) -> dict:
    """The epoch's validation; the last epoch's pass keeps per-image hits (the run's evaluation
    may reuse it), and a whole-network pass prices the run ETA's forward passes."""
    ctx, stage = run.ctx, run.stage
    sync_buffers(ctx.model)  # every shard validates the weights rank 0 saves
    with training():  # a signal now stops the run after this epoch's checkpoint
        val_start = time.perf_counter()
        val = evaluate(run.cache.tail if run.cache else run.evaluator, run.val_loader,
                       ctx.device, channels_last=ctx.recipe.model.channels_last,
                       desc=f"val @{stage.resolution}", with_hits=epoch + 1 == stage.epochs)
        if run.cache is None:
            ctx.forward_rate = ((time.perf_counter() - val_start) / max(val["images"], 1),
                                stage.resolution)
    return val


def _validate_ema_and_keep_best(run: _StageRun, epoch: int, row: dict) -> None:
    """Add the EMA weights' validation to ``row``, and save this epoch's weights if they are the
    best so far (the file ``_select_final_weights`` loads)."""
    ctx, stage, ema, best = run.ctx, run.stage, run.ema, run.best
    if ema is not None:
        val_ema = evaluate(ema.module, run.val_loader, ctx.device,
                           channels_last=ctx.recipe.model.channels_last,
                           desc=f"val EMA @{stage.resolution}")
        row.update({f"val_ema_{k}": val_ema[k] for k in ("loss", "top1", "top5")})
        log.info("%s epoch %d/%d: EMA weights val top-1 %.1f%% top-5 %.1f%%", stage.name,
                 epoch + 1, stage.epochs, val_ema["top1"], val_ema["top5"])
    if best is not None:
        metric = ctx.recipe.checkpoint.metric
        metric = metric.replace("val_", "val_ema_") if run.use_ema else metric
        if best.offer(epoch + 1, row[metric]) and current().is_main:
            save_checkpoint(ctx.best_checkpoint(stage), {
                "model": (ema.module if run.use_ema else ctx.model).state_dict(),
                "epoch": epoch + 1, metric: row[metric]})
        row["best_epoch"] = best.epoch


def _finish_stage(run: _StageRun) -> dict:
    """Release the stage's loaders, choose the final weights, write the stage's final checkpoint
    and remove the epoch ones."""
    ctx, stage, model, recipe = run.ctx, run.stage, run.ctx.model, run.ctx.recipe
    ctx.release_train_loader()
    if run.cache is not None:
        run.cache.close()
    if run.start_epoch < stage.epochs:  # the last validation: reused by an identical later pass
        ctx.passes.put(PassMemo.key(weights_digest(model), recipe.dataset.val_split,
                                    stage.resolution, "center", "probs"), run.last_val)
    selected = _select_final_weights(ctx, stage, run.ema.module if run.use_ema else model,
                                     run.best)
    if current().is_main:
        save_checkpoint(ctx.final_checkpoint(stage), {
            "model": model.state_dict(), "stage": stage.name, "resolution": stage.resolution,
            "arch": recipe.model.arch, "category_ids": list(ctx.index.category_ids),
            "selected": selected})
        remove_checkpoint(ctx.last_checkpoint(stage))
    barrier()  # every process has loaded the best epoch's file
    if current().is_main:
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
