"""The inner loops: one training epoch, streaming evaluation, and prediction."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fgvc.datasets.raw import DatasetError
from fgvc.engine.device import autocast
from fgvc.engine.distributed import all_reduce_sum, gather_objects
from fgvc.engine.losses import Objective
from fgvc.engine.optim import set_lr
from fgvc.engine.transfer import to_device
from fgvc.errors import FgvcError
from fgvc.inference.tta import Average, combine_crops
from fgvc.progress import progress

if TYPE_CHECKING:
    from fgvc.engine.kept_activations import KeptActivations

LOG_EVERY = 50  # training steps between host reads of the running loss and accuracy


@dataclass
class EpochResult:
    loss: float
    top1: float
    images: int
    bad_images: int
    seconds: float
    last_lr: float
    next_step: int
    # The pace after the first batch (progress.Progress), summed over processes: the first
    # batch carries the epoch's start-up, which ``images / seconds`` would spread over it.
    images_per_second: float = 0.0


@dataclass
class EpochProgress:
    """How far an epoch got: stored in a mid-epoch checkpoint, so a resumed epoch skips the
    batches done and reports the same sums as an uninterrupted one."""

    batches: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    bad: int = 0
    seconds: float = 0.0
    step: int = 0
    lr: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochOptions:
    """How ``train_one_epoch`` trains: the same for every epoch of a stage, so a stage builds
    it once; where an epoch starts (``step``, ``resume``) is passed with each call."""

    lr_fn: Callable[[int], float]  # optimiser step -> learning rate
    device: torch.device
    objective: Objective = field(default_factory=Objective)  # cross-entropy by default
    grad_clip: float | None = None
    # N: the gradients of N consecutive batches, each loss divided by the number of batches in
    # its group, make one optimiser step, so N batches of B equal one batch of N x B (without
    # BatchNorm); ``step`` and the schedule count optimiser steps.
    accumulate: int = 1
    channels_last: bool = True
    log_every: int = LOG_EVERY  # optimiser steps between host reads of the device sums
    # After each optimiser step, in this order: ``on_step(step)`` (the EMA update), at each host
    # read ``track(step, mean loss since the previous read, lr)`` (experiment tracking), then
    # ``after_step(progress)`` (mid-epoch checkpoints, pre-emption), ``progress()`` giving the
    # ``EpochProgress`` so far when it is needed.
    on_step: Callable[[int], None] | None = None
    track: Callable[[int, float, float], None] | None = None
    after_step: Callable[[Callable[[], EpochProgress]], None] | None = None


class NonFiniteLoss(FgvcError, RuntimeError):
    """The loss became NaN or infinite; the message names where and at which learning rate."""


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    options: EpochOptions, *, step: int = 0, resume: EpochProgress | None = None,
                    desc: str = "train") -> EpochResult:
    """One pass over ``loader`` from optimiser step ``step``; the caller sets the train/eval
    modes beforehand. ``resume``: the progress of a partly done epoch (``loader`` then yields
    only the batches left).

    No host synchronisation per step: the loss sum, the correct count and the first non-finite
    loss (its step and value) accumulate on the device and are read once every ``log_every``
    steps, at the end, and whenever ``progress()`` is called, so on CUDA the CPU queues work
    ahead of the GPU. A non-finite loss therefore stops the epoch at the next read (before any
    checkpoint is written), naming the step where it happened.
    """
    done = resume or EpochProgress(step=step)
    seen, bad, batches = done.seen, done.bad, done.batches
    lr = options.lr_fn(step)
    start = time.perf_counter() - done.seconds
    total_batches, pending = batches + len(loader), False
    bar = progress(loader, desc=desc, unit="batch")
    sums = _EpochSums(done, step, options, bar)
    prepare = getattr(loader, "device_transform", None)
    optimizer.zero_grad(set_to_none=True)
    for images, labels, _, n_bad in bar:
        bad += n_bad
        i, batches = batches, batches + 1
        first = i - i % options.accumulate
        group = min(options.accumulate, total_batches - first)
        closes_group = i == first + group - 1
        if len(labels):
            loss, logits, labels = _forward_backward(model, images, labels, options, prepare,
                                                     group, closes_group)
            pending = True
            seen += len(labels)
            bar.count_images(len(labels))
            sums.add(loss, logits, labels, step)
        if not (closes_group and pending):
            continue
        lr = options.lr_fn(step)
        _optimizer_step(model, optimizer, lr, options.grad_clip)
        step, pending = step + 1, False
        if options.on_step is not None:
            options.on_step(step)
        if step - sums.checked >= options.log_every:
            sums.report(step, seen, lr)
        if options.after_step is not None:
            options.after_step(lambda b=batches, s=seen, n=bad, t=step, r=lr: EpochProgress(
                b, *sums.read(s), s, n, time.perf_counter() - start, t, r))
    total_loss, correct = sums.report(step, seen, lr)
    seconds = time.perf_counter() - start
    total_loss, correct, seen, bad, pace = all_reduce_sum(
        [total_loss, correct, seen, bad, bar.images_per_second()])
    return EpochResult(
        loss=total_loss / max(seen, 1), top1=100.0 * correct / max(seen, 1), images=int(seen),
        bad_images=int(bad), seconds=seconds, last_lr=lr, next_step=step,
        images_per_second=pace)


def _forward_backward(model: nn.Module, images, labels: torch.Tensor, options: EpochOptions,
                      prepare: Callable | None, group: int, closes_group: bool):
    """``(loss, logits, labels)`` of one batch, its gradients added to the group's (each loss
    divided by the ``group``'s number of batches, so the group averages like one batch)."""
    images = to_device(images, options.device, options.channels_last, prepare)
    images, targets, labels = options.objective.prepare(
        images, labels.to(options.device, non_blocking=True))
    with _gradient_sync(model, closes_group):
        with autocast(options.device):
            logits = model(images)
        loss = options.objective.loss(logits, targets)
        (loss / group).backward()
    return loss, logits, labels


def _optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, lr: float,
                    grad_clip: float | None) -> None:
    set_lr(optimizer, lr)
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _gradient_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """DistributedDataParallel averages gradients only on the batch that closes a group."""
    no_sync = getattr(model, "no_sync", None)
    return contextlib.nullcontext() if sync or no_sync is None else no_sync()


class _EpochSums:
    """An epoch's loss sum, correct count and first non-finite loss, kept on the device so a
    step needs no host synchronisation; read on the host only when ``report`` or ``read`` is
    called."""

    def __init__(self, done: EpochProgress, step: int, options: EpochOptions, bar) -> None:
        # Loss sum, correct count, first non-finite step (-1: none), its loss.
        self.values = torch.tensor([done.loss_sum, done.correct, -1.0, 0.0], dtype=torch.float64,
                                   device=options.device)
        self.options, self.bar = options, bar
        # At the last report: images seen, loss sum (``track`` gets the mean since), step.
        self.last_seen, self.last_loss, self.checked = done.seen, done.loss_sum, step

    @torch.no_grad()
    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
            step: int) -> None:
        sums = self.values
        value = loss.detach().double()
        bad_now = (sums[2] < 0) & ~torch.isfinite(value)
        sums[:2] += torch.stack([value * len(labels), (logits.argmax(1) == labels).sum().double()])
        sums[2:] = torch.where(bad_now, torch.stack([torch.full_like(value, step), value]),
                               sums[2:])

    def report(self, step: int, seen: int, lr: float) -> tuple[float, int]:
        """``read``, then the mean loss since the previous report to ``options.track``."""
        total, correct = self.read(seen, lr)
        track = self.options.track
        if track is not None and seen > self.last_seen:
            track(step, (total - self.last_loss) / (seen - self.last_seen), lr)
        self.last_seen, self.last_loss, self.checked = seen, total, step
        return total, correct

    def read(self, seen: int, lr: float | None = None) -> tuple[float, int]:
        """The one host read of the device sums: raise on a non-finite loss (naming its step and
        learning rate), update the progress bar, return (loss sum, correct count)."""
        total_loss, correct, bad_step, bad_loss = self.values.tolist()
        if bad_step >= 0:
            step = int(bad_step)
            raise NonFiniteLoss(f"loss is {bad_loss} at step {step} (learning rate "
                                f"{self.options.lr_fn(step):.4g}); stopped, the last checkpoint "
                                "is kept: lower the learning rate, add warm-up or set grad_clip")
        if seen:
            self.bar.set_postfix(loss=f"{total_loss / seen:.3f}",
                                 **({"lr": f"{lr:.2e}"} if lr is not None else {}))
        return total_loss, int(correct)


def network_inputs(images, n_images: int) -> int:
    """How many images a batch sends through the network: every crop and every resolution
    (view) counted, so an evaluation's img/s is comparable with training's and not a fraction
    of it for a pass of 10 crops or several resolutions at once."""
    if isinstance(images, dict):
        return sum(network_inputs(view, n_images) for view in images.values())
    if isinstance(images, torch.Tensor) and images.ndim == 5:
        return n_images * images.shape[1]
    return n_images


def _forward_probs(model: Callable, images, device: torch.device, average: Average,
                   channels_last: bool, prepare: Callable | None, n_images: int) -> torch.Tensor:
    """(B, n_crops, 3, K, K), (B, 3, K, K) or cached activations -> (B, classes) probabilities
    on the CPU, the crops of each image combined (``average``)."""
    if isinstance(images, tuple):  # cached activations: one crop per image
        crops = 1
    else:
        images = images.unsqueeze(1) if images.ndim == 4 else images
        crops = images.shape[1]
        images = images.flatten(0, 1)
    with autocast(device):
        logits = model(to_device(images, device, channels_last, prepare))
    return combine_crops(logits.float().view(n_images, crops, -1).cpu(), average)


@torch.no_grad()
def forward_batches(model: nn.Module, loader: DataLoader, device: torch.device, *,
                    average: Average = "probs", channels_last: bool = True, desc: str = "eval",
                    bad_counter: list[int] | None = None) -> Iterator[tuple]:
    """Yield ``(probabilities, labels, indices)`` in eval mode.

    A batch of (B, n_crops, 3, K, K) runs as one batch of B * n_crops images and the crops of
    each image are combined (``average``); bad images are counted, not yielded.
    """
    model.eval()
    prepare = getattr(loader, "device_transform", None)
    bar = progress(loader, desc=desc, unit="batch")
    for images, labels, indices, n_bad in bar:
        bar.count_images(network_inputs(images, len(labels)))
        if bad_counter is not None:
            bad_counter[0] += n_bad
        if len(labels) == 0:
            continue
        yield (_forward_probs(model, images, device, average, channels_last, prepare,
                              len(labels)), labels, indices)


class _Tally:
    """Top-1/top-5 hits and loss of one view (resolution) of an evaluation pass; with
    ``with_hits`` also each image's top-1 correctness, for confidence intervals and paired tests."""

    def __init__(self, with_hits: bool = False) -> None:
        self.correct1 = self.correct5 = self.seen = 0
        self.loss_sum = 0.0
        self.hit_chunks: list[tuple[np.ndarray, np.ndarray]] | None = [] if with_hits else None

    def add(self, probs: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> None:
        k = min(5, probs.shape[1])
        hits = probs.topk(k, dim=1).indices == labels[:, None]
        if self.hit_chunks is not None:
            self.hit_chunks.append((indices.numpy(), hits[:, 0].numpy()))
        self.correct1 += hits[:, 0].sum().item()
        self.correct5 += hits.any(dim=1).sum().item()
        self.loss_sum += F.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum").item()
        self.seen += len(labels)

    def result(self, bad: int, desc: str) -> dict:
        correct1, correct5, loss_sum, seen, n_bad = all_reduce_sum(
            [self.correct1, self.correct5, self.loss_sum, self.seen, bad])
        if seen == 0:
            raise DatasetError(f"{desc}: no readable image to evaluate ({int(n_bad)} unreadable)")
        result = {"top1": 100.0 * correct1 / seen, "top5": 100.0 * correct5 / seen,
                  "loss": loss_sum / seen, "images": int(seen), "bad_images": int(n_bad),
                  "correct": int(correct1)}
        if self.hit_chunks is not None:  # in dataset order, over every process
            shards = [c for part in gather_objects(self.hit_chunks) for c in part]
            indices = np.concatenate([i for i, _ in shards])
            order = np.argsort(indices, kind="stable")
            result["indices"] = indices[order]
            result["hits"] = np.concatenate([h for _, h in shards])[order]
        return result


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, *,
             average: Average = "probs", channels_last: bool = True,
             desc: str = "eval", views: list | None = None, with_hits: bool = False,
             keep: KeptActivations | None = None) -> dict:
    """Top-1/top-5 accuracy (%) and mean loss on a labelled split, streamed batch by batch.

    ``views``: the loader yields ``{view: batch}`` (MultiCrop with several resolutions: every
    image decoded once for all of them); the result is then ``{view: metrics}``.
    ``with_hits``: also ``hits`` (per-image top-1 correctness, bool, in dataset order) and
    ``indices``, for confidence intervals and paired tests. ``keep``: the network runs as
    prefix and tail and the prefix's outputs are kept (kept_activations.py), one crop per image.
    """
    model.eval()
    prepare = getattr(loader, "device_transform", None)
    tallies = {view: _Tally(with_hits) for view in (views if views is not None else [None])}
    bad = 0
    bar = progress(loader, desc=desc, unit="batch")
    for images, labels, indices, n_bad in bar:
        bad += n_bad
        bar.count_images(network_inputs(images, len(labels)))
        if len(labels) == 0:
            continue
        batches = images if views is not None else {None: images}
        for view, tally in tallies.items():
            forward = model if keep is None else keep.forward(view, labels, indices)
            tally.add(_forward_probs(forward, batches[view], device, average, channels_last,
                                     prepare, len(labels)), labels, indices)
    results = {view: tally.result(bad, f"{desc} @{view}" if view else desc)
               for view, tally in tallies.items()}
    return results if views is not None else results[None]


def predict_probabilities(model: nn.Module, loader: DataLoader, device: torch.device, *,
                          average: Average = "probs", channels_last: bool = True,
                          desc: str = "predict") -> tuple[np.ndarray, np.ndarray, int]:
    """Probabilities (float32, crops combined) and the dataset indices they belong to."""
    chunks, index_chunks = [], []
    bad = [0]
    for probs, _, indices in forward_batches(model, loader, device, average=average,
                                             channels_last=channels_last, desc=desc,
                                             bad_counter=bad):
        chunks.append(probs.numpy())
        index_chunks.append(indices.numpy())
    local = (np.concatenate(index_chunks) if index_chunks else np.zeros(0, dtype=np.int64),
             np.concatenate(chunks) if chunks else None, bad[0])
    shards = gather_objects(local)  # every process's shard, under torchrun
    parts = [(i, p) for i, p, _ in shards if p is not None]
    total_bad = sum(b for _, _, b in shards)
    if not parts:
        raise DatasetError(f"{desc}: no readable image to predict ({total_bad} unreadable)")
    indices = np.concatenate([i for i, _ in parts])
    probs = np.concatenate([p for _, p in parts])
    order = np.argsort(indices, kind="stable")
    return indices[order], probs[order], total_bad
