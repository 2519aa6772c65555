"""The inner loops: one training epoch, streaming evaluation, and prediction."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fgvc.engine.device import autocast, channels_last_on
from fgvc.engine.distributed import all_reduce_sum, gather_objects
from fgvc.engine.losses import Objective
from fgvc.engine.optim import set_lr
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


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the message names where and at which learning rate."""


def _to_device(images: torch.Tensor | tuple, device: torch.device, channels_last: bool,
               prepare: Callable | None = None):
    """A batch (or a tuple of cached activations, see feature_cache.py) on the device;
    ``prepare`` (the loader's ``device_transform``) turns uint8 images into model input there."""
    if isinstance(images, tuple):
        return tuple(_to_device(t, device, channels_last and t.ndim == 4) for t in images)
    images = images.to(device, non_blocking=True)
    if prepare is not None:
        images = prepare(images)
    if channels_last_on(device, channels_last):
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, *,
                    lr_fn: Callable[[int], float], step: int, device: torch.device,
                    label_smoothing: float = 0.0, grad_clip: float | None = None,
                    channels_last: bool = True, desc: str = "train",
                    resume: EpochProgress | None = None,
                    after_step: Callable[[Callable[[], EpochProgress]], None] | None = None,
                    objective: Objective | None = None, accumulate: int = 1,
                    on_step: Callable[[int], None] | None = None,
                    track: Callable[[int, float, float], None] | None = None,
                    log_every: int = LOG_EVERY) -> EpochResult:
    """One pass over ``loader``; the caller sets the train/eval modes beforehand.

    ``resume``: the progress of a partly done epoch (``loader`` then yields only the batches
    left); ``after_step(progress)`` runs after every optimizer step (mid-epoch checkpoints,
    pre-emption), ``progress()`` giving the ``EpochProgress`` so far when it is needed;
    ``on_step(step)`` runs just before it (the EMA update); ``track(step, loss, lr)`` at each
    host read of the sums (experiment tracking: the mean loss since the previous read).
    ``accumulate`` N: the gradients of N consecutive batches, each loss divided by the number
    of batches in its group, make one optimiser step, so N batches of B equal one batch of N x B
    (without BatchNorm); ``step`` and the schedule count optimiser steps. ``objective``
    defaults to cross-entropy with ``label_smoothing``.

    No host synchronisation per step: the loss sum, the correct count and the first non-finite
    loss (its step and value) accumulate on the device and are read once every ``log_every``
    steps, at the end, and whenever ``progress()`` is called, so on CUDA the CPU queues work
    ahead of the GPU. A non-finite loss therefore stops the epoch at the next read (before any
    checkpoint is written), naming the step where it happened.
    """
    objective = objective or Objective(label_smoothing)
    done = resume or EpochProgress(step=step)
    seen, bad, batches, checked = done.seen, done.bad, done.batches, step
    last_seen, last_loss = done.seen, done.loss_sum  # at the last host read, for ``track``
    # On the device: loss sum, correct count, first non-finite step (-1: none), its loss.
    sums = torch.tensor([done.loss_sum, done.correct, -1.0, 0.0], dtype=torch.float64,
                        device=device)
    lr = lr_fn(step)
    start = time.perf_counter() - done.seconds
    total_batches, pending = batches + len(loader), False
    bar = progress(loader, desc=desc, unit="batch")
    prepare = getattr(loader, "device_transform", None)
    optimizer.zero_grad(set_to_none=True)
    for images, labels, _, n_bad in bar:
        bad += n_bad
        i, batches = batches, batches + 1
        first = i - i % accumulate
        group = min(accumulate, total_batches - first)
        closes_group = i == first + group - 1
        if len(labels):
            images = _to_device(images, device, channels_last, prepare)
            images, targets, labels = objective.prepare(images, labels.to(device, non_blocking=True))
            with _gradient_sync(model, closes_group):
                with autocast(device):
                    logits = model(images)
                loss = objective.loss(logits, targets)
                (loss / group).backward()
            pending = True
            seen += len(labels)
            bar.count_images(len(labels))
            with torch.no_grad():
                value = loss.detach().double()
                bad_now = (sums[2] < 0) & ~torch.isfinite(value)
                sums[:2] += torch.stack([value * len(labels),
                                         (logits.argmax(1) == labels).sum().double()])
                sums[2:] = torch.where(bad_now, torch.stack([torch.full_like(value, step), value]),
                                       sums[2:])
        if not (closes_group and pending):
            continue
        lr = lr_fn(step)
        set_lr(optimizer, lr)
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step, pending = step + 1, False
        if on_step is not None:
            on_step(step)
        if step - checked >= log_every:
            total, _ = _read_sums(sums, seen, bar, lr_fn, lr)
            if track is not None and seen > last_seen:
                track(step, (total - last_loss) / (seen - last_seen), lr)
            last_seen, last_loss, checked = seen, total, step
        if after_step is not None:
            after_step(lambda b=batches, s=seen, n=bad, t=step, r=lr: EpochProgress(
                b, *_read_sums(sums, s, bar, lr_fn), s, n, time.perf_counter() - start, t, r))
    total_loss, correct = _read_sums(sums, seen, bar, lr_fn, lr)
    if track is not None and seen > last_seen:
        track(step, (total_loss - last_loss) / (seen - last_seen), lr)
    seconds = time.perf_counter() - start
    total_loss, correct, seen, bad, pace = all_reduce_sum(
        [total_loss, correct, seen, bad, bar.images_per_second()])
    return EpochResult(
        loss=total_loss / max(seen, 1), top1=100.0 * correct / max(seen, 1), images=int(seen),
        bad_images=int(bad), seconds=seconds, last_lr=lr, next_step=step,
        images_per_second=pace)


def _gradient_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """DistributedDataParallel averages gradients only on the batch that closes a group."""
    no_sync = getattr(model, "no_sync", None)
    return contextlib.nullcontext() if sync or no_sync is None else no_sync()


def _read_sums(sums: torch.Tensor, seen: int, bar, lr_fn: Callable[[int], float],
               lr: float | None = None) -> tuple[float, int]:
    """The one host read of the device sums: raise on a non-finite loss (naming its step and
    learning rate), update the progress bar, return (loss sum, correct count)."""
    total_loss, correct, bad_step, bad_loss = sums.tolist()
    if bad_step >= 0:
        step = int(bad_step)
        raise NonFiniteLoss(f"loss is {bad_loss} at step {step} (learning rate "
                            f"{lr_fn(step):.4g}); stopped, the last checkpoint is kept: lower "
                            "the learning rate, add warm-up or set grad_clip")
    if seen:
        bar.set_postfix(loss=f"{total_loss / seen:.3f}",
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
        logits = model(_to_device(images, device, channels_last, prepare))
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
            raise RuntimeError(f"{desc}: no readable image to evaluate ({int(n_bad)} unreadable)")
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
        raise RuntimeError(f"{desc}: no readable image to predict ({total_bad} unreadable)")
    indices = np.concatenate([i for i, _ in parts])
    probs = np.concatenate([p for _, p in parts])
    order = np.argsort(indices, kind="stable")
    return indices[order], probs[order], total_bad
