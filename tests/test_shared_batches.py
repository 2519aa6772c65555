"""Loader workers write their batches into shared-memory buffers they reuse
(``fgvc/engine/shared_batches.py``): the batches are those a 0-worker loader gives, a batch the
caller keeps is never overwritten, and a worker really cycles through its buffers."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import TINY_OPTIONS

from fgvc.datasets import load_dataset
from fgvc.engine import shared_batches
from fgvc.engine.data import PREFETCH_FACTOR, make_loader
from fgvc.engine.shared_batches import ReusedBufferCollate, SharedBatch
from fgvc.transforms import DataConfig, loader_transform


def _loader(index, *, workers: int, persistent: bool = False, epoch: int = 0):
    return make_loader(index, "train", transform=loader_transform("train", 24, DataConfig()),
                       batch_size=2, num_workers=workers, on_bad_image="fail", shuffle=True,
                       seed=5, epoch=epoch, persistent=persistent)


@pytest.mark.parametrize("workers", [1, 2])
def test_kept_batches_equal_a_0_worker_loaders(tiny_data_root, workers):
    """Every batch is kept, uncopied, until the end of two epochs (the second after an epoch
    left half-way): if a worker's buffer were written again while the caller still held a
    batch from it, the kept batches would differ."""
    index = load_dataset("synthetic", tiny_data_root, TINY_OPTIONS)
    kept = _loader(index, workers=workers, persistent=True)
    for _, _images in zip(range(2), kept, strict=False):
        pass  # epoch 0 left after two batches; its other tasks are dropped, never read
    held = {}
    for epoch in (1, 2):
        kept.epochs.set_epoch(epoch)
        held[epoch] = list(kept)
    for epoch, batches in held.items():
        fresh = list(_loader(index, workers=0, epoch=epoch))
        assert len(batches) == len(fresh) > 2 * PREFETCH_FACTOR * workers
        for (images, labels, indices, bad), (f_images, f_labels, f_indices, f_bad) in zip(
                batches, fresh, strict=True):
            assert torch.equal(images, f_images) and torch.equal(indices, f_indices)
            assert torch.equal(labels, f_labels) and bad == f_bad == 0


def test_a_worker_cycles_through_its_buffers(tiny_data_root):
    """One worker's batches arrive in ``PREFETCH_FACTOR`` shared-memory files, each used again
    and again, instead of a new file per batch."""
    index = load_dataset("synthetic", tiny_data_root, TINY_OPTIONS)
    iterator = iter(_loader(index, workers=1))
    files = []
    for _batch in iterator:
        fd, _size = iterator._received[-1].data[0].untyped_storage()._share_fd_cpu_()
        files.append(os.fstat(fd).st_ino)
    assert len(files) > 2 * PREFETCH_FACTOR
    assert len(set(files)) == PREFETCH_FACTOR
    assert files[:PREFETCH_FACTOR] * (len(files) // PREFETCH_FACTOR) == \
        files[:len(files) // PREFETCH_FACTOR * PREFETCH_FACTOR]


def test_collate_stacks_each_resolution_into_its_own_buffers(monkeypatch):
    """Multi-resolution evaluation collates {resolution: image} items; in a worker each
    resolution gets its buffers, of the batch's own size even when a larger batch came
    first."""
    monkeypatch.setattr(shared_batches, "get_worker_info", lambda: object())
    collate = ReusedBufferCollate(slots=2)
    items = [({32: torch.full((3, 32, 32), i, dtype=torch.uint8),
               48: torch.full((3, 48, 48), i, dtype=torch.uint8)}, i % 2, i) for i in range(5)]
    first = collate(items)
    second = collate(items[:3])
    third = collate(items[:2])  # buffer of the first batch again, now smaller
    assert isinstance(first, SharedBatch)
    images, labels, indices, bad = third.copied()
    assert images[32].shape == (2, 3, 32, 32) and images[48].shape == (2, 3, 48, 48)
    assert images[48][:, 0, 0, 0].tolist() == [0, 1] and indices.tolist() == [0, 1]
    assert labels.tolist() == [0, 1] and bad == 0
    assert third.data[0][32].untyped_storage().data_ptr() == \
        first.data[0][32].untyped_storage().data_ptr()
    assert second.data[0][32].untyped_storage().data_ptr() != \
        first.data[0][32].untyped_storage().data_ptr()
    assert images[32].untyped_storage().data_ptr() != \
        third.data[0][32].untyped_storage().data_ptr()  # copied out


def test_pinning_is_the_copy_out_of_the_buffers(monkeypatch):
    """With ``pin_memory`` (CUDA) the pin thread's copy replaces the main process's: torch's
    ``pin_memory`` turns a ``SharedBatch`` into a plain batch of pinned copies. Pinning needs
    a GPU, so ``Tensor.pin_memory`` is a copy here."""
    from torch.utils.data._utils.pin_memory import pin_memory

    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, device=None: self.clone())
    buffer = torch.arange(12, dtype=torch.uint8).view(2, 6)
    batch = SharedBatch((buffer, torch.tensor([1, 2]), torch.tensor([0, 1]), 0))
    pinned = pin_memory(batch)
    assert type(pinned) is tuple
    assert torch.equal(pinned[0], buffer) and pinned[0].data_ptr() != buffer.data_ptr()
    assert pinned[1].tolist() == [1, 2] and pinned[3] == 0


def test_copies_reuse_memory_only_once_nothing_refers_to_it():
    """The main process's copies of the batches go into memory it keeps (no page faults on
    every batch); a copy's memory is used again only when no tensor, view, detached alias or
    storage handle of it is left, and a pool at capacity drops its oldest memory without
    touching a copy still in use."""
    from fgvc.engine.shared_batches import ReusedCopies

    copies = ReusedCopies(capacity=2)
    first = copies.copy(torch.full((4, 8), 1.0))
    address = first.data_ptr()
    del first
    second = copies.copy(torch.full((2, 8), 2.0))  # smaller: fits the freed memory
    assert second.data_ptr() == address and second.tolist() == [[2.0] * 8] * 2
    for alias in (lambda t: t[1], lambda t: t.detach(), lambda t: t.untyped_storage()):
        held = alias(second)
        third = copies.copy(torch.full((2, 8), 3.0))
        assert third.data_ptr() != address and second.tolist() == [[2.0] * 8] * 2
        del held, third
    kept = [copies.copy(torch.full((2, 8), float(v))) for v in (5, 6, 7)]  # over capacity
    assert [t[0, 0].item() for t in kept] == [5.0, 6.0, 7.0]
    assert second.tolist() == [[2.0] * 8] * 2 and second.dtype == torch.float32


def test_a_whole_recipe_gives_the_same_results_with_loader_workers(tiny_data_root, tmp_path):
    """Both stages, multi-resolution evaluation and predictions through 2 workers' reused
    buffers: the same weights, figures, predictions and submission as loading in the main
    process (augmentation is seeded per batch, so the workers do not change the draws)."""
    import json

    import yaml
    from conftest import tiny_recipe

    from fgvc.cli import main

    outputs = {}
    for workers in (0, 2):
        root = tmp_path / f"w{workers}"
        recipe = tiny_recipe(tiny_data_root, root)
        recipe["dataset"]["num_workers"] = workers
        recipe["submission"]["path"] = str(tmp_path / f"w{workers}.csv")
        path = root / "recipe.yaml"
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump(recipe))
        assert main(["run", str(path)]) == 0
        run_dir = root / "runs" / "tiny"
        outputs[workers] = {
            "weights": torch.load(run_dir / "checkpoints" / "adapt.pt",
                                  weights_only=True)["model"],
            "evaluation": json.loads((run_dir / "evaluation.json").read_text()),
            "submission": (tmp_path / f"w{workers}.csv").read_text()}
    plain, workers = outputs[0], outputs[2]
    assert plain["weights"].keys() == workers["weights"].keys()
    for key, value in plain["weights"].items():
        assert torch.equal(value, workers["weights"][key]), key
    assert _without_times(plain["evaluation"]) == _without_times(workers["evaluation"])
    assert set(plain["evaluation"]["after_adaptation"]) == {"32", "48"}
    assert plain["submission"] == workers["submission"] and plain["submission"].count("\n") > 3


def _without_times(value):
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items()
                if "second" not in k and "time" not in k}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value
