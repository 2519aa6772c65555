"""The inner loops: one training epoch, streaming evaluation, and prediction."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fgvc.engine.device import autocast
from fgvc.engine.distributed import all_reduce_sum, gather_objects
from fgvc.engine.optim import set_lr
from fgvc.inference.tta import Average, combine_crops
from fgvc.progress import progress


@dataclass
class EpochResult:
    loss: float
    top1: float
    images: int
    bad_images: int
    seconds: float
    last_lr: float
    next_step: int


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


def _to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    if channels_last and device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, *,
                    lr_fn: Callable[[int], float], step: int, device: torch.device,
                    label_smoothing: float = 0.0, grad_clip: float | None = None,
                    channels_last: bool = True, desc: str = "train",
                    resume: EpochProgress | None = None,
                    after_step: Callable[[EpochProgress], None] | None = None) -> EpochResult:
    """One pass over ``loader``; the caller sets the train/eval modes beforehand.

    ``resume``: the progress of a partly done epoch (``loader`` then yields only the batches
    left); ``after_step(progress)`` runs after every optimizer step (mid-epoch checkpoints,
    pre-emption).
    """
    done = resume or EpochProgress(step=step)
    total_loss, correct, seen, bad, batches = done.loss_sum, done.correct, done.seen, done.bad, done.batches
    lr = lr_fn(step)
    start = time.perf_counter() - done.seconds
    bar = progress(loader, desc=desc, unit="batch")
    for images, labels, _, n_bad in bar:
        bad += n_bad
        batches += 1
        if len(labels) == 0:
            continue
        lr = lr_fn(step)
        set_lr(optimizer, lr)
        images = _to_device(images, device, channels_last)
        labels = labels.to(device, non_blocking=True)
        with autocast(device):
            logits = model(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"loss is {loss.item()} at step {step} (learning rate "
                                f"{lr:.4g}); stopped, the last checkpoint is kept: lower the "
                                "learning rate, add warm-up or set grad_clip")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        step += 1
        total_loss += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", lr=f"{lr:.2e}")
        if after_step is not None:
            after_step(EpochProgress(batches, total_loss, correct, seen, bad,
                                     time.perf_counter() - start, step, lr))
    total_loss, correct, seen, bad = all_reduce_sum([total_loss, correct, seen, bad])
    return EpochResult(
        loss=total_loss / max(seen, 1), top1=100.0 * correct / max(seen, 1), images=int(seen),
        bad_images=int(bad), seconds=time.perf_counter() - start, last_lr=lr, next_step=step)


@torch.no_grad()
def forward_batches(model: nn.Module, loader: DataLoader, device: torch.device, *,
                    average: Average = "probs", channels_last: bool = True, desc: str = "eval",
                    bad_counter: list[int] | None = None) -> Iterator[tuple]:
    """Yield ``(probabilities, labels, indices)`` in eval mode.

    A batch of (B, n_crops, 3, K, K) runs as one batch of B * n_crops images and the crops of
    each image are combined (``average``); bad images are counted, not yielded.
    """
    model.eval()
    for images, labels, indices, n_bad in progress(loader, desc=desc, unit="batch"):
        if bad_counter is not None:
            bad_counter[0] += n_bad
        if len(labels) == 0:
            continue
        if images.ndim == 4:
            images = images.unsqueeze(1)
        batch, crops = images.shape[:2]
        with autocast(device):
            logits = model(_to_device(images.flatten(0, 1), device, channels_last))
        yield combine_crops(logits.float().view(batch, crops, -1).cpu(), average), labels, indices


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, *,
             average: Average = "probs", channels_last: bool = True,
             desc: str = "eval", with_hits: bool = False) -> dict:
    """Top-1/top-5 accuracy (%) and mean loss on a labelled split, streamed batch by batch.

    ``with_hits``: also ``hits`` (per-image top-1 correctness, bool, in dataset order, over
    every process) and ``indices``, for confidence intervals and paired tests."""
    correct1 = correct5 = seen = 0
    loss_sum = 0.0
    bad = [0]
    hit_chunks: list[tuple[np.ndarray, np.ndarray]] = []
    for probs, labels, indices in forward_batches(model, loader, device, average=average,
                                            channels_last=channels_last, desc=desc,
                                            bad_counter=bad):
        k = min(5, probs.shape[1])
        hits = probs.topk(k, dim=1).indices == labels[:, None]
        if with_hits:
            hit_chunks.append((indices.numpy(), hits[:, 0].numpy()))
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        loss_sum += F.nll_loss(probs.clamp_min(1e-12).log(), labels, reduction="sum").item()
        seen += len(labels)
    correct1, correct5, loss_sum, seen, n_bad = all_reduce_sum(
        [correct1, correct5, loss_sum, seen, bad[0]])
    if seen == 0:
        raise RuntimeError(f"{desc}: no readable image to evaluate ({int(n_bad)} unreadable)")
    result = {"top1": 100.0 * correct1 / seen, "top5": 100.0 * correct5 / seen,
              "loss": loss_sum / seen, "images": int(seen), "bad_images": int(n_bad),
              "correct": int(correct1)}
    if with_hits:
        shards = [c for part in gather_objects(hit_chunks) for c in part]
        indices = np.concatenate([i for i, _ in shards])
        order = np.argsort(indices, kind="stable")
        result["indices"] = indices[order]
        result["hits"] = np.concatenate([h for _, h in shards])[order]
    return result


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
