"""Batches passed from loader workers to the main process through shared memory that each
worker reuses, instead of a new shared-memory file per batch.

A ``DataLoader`` worker collates every batch into a new shared-memory file: it creates, sizes
and maps it, and faults in every page while writing; the main process maps it again and unmaps
it when the batch is freed. For 64 images of 224 px (9.6 MB of uint8) that costs the worker
about 9 ms, where stacking into memory already mapped costs 0.3 ms: as much as decoding and
augmenting four or five of the batch's images. torch has no option to reuse them, so it is
done here.

Each worker keeps ``slots`` buffers (the loader's ``prefetch_factor``) and writes its k-th batch
into buffer k mod ``slots``; the main process copies each batch out of its buffer when it
arrives, before the loader gives a worker its next task (``SharedBatchIter._process_data``),
into memory it reuses once the copy is no longer referenced (``ReusedCopies``).
That order makes the reuse safe: loading in order, the loader hands tasks to the workers in
turn and gives out task ``n + prefetch_factor * num_workers`` only when it returns batch ``n``,
so a worker's task k + ``slots`` is given out after its task k was copied. Tasks a persistent
loader drops at the start of a new epoch (an epoch left half-way) are never copied, and no one
reads them. The main process keeps the buffers it has received mapped, so receiving one again
maps nothing.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import default_collate, get_worker_info

from fgvc import torch_compat
from fgvc.datasets.images import collate_skipping_bad


class SharedBatch:
    """A ``collate_skipping_bad`` batch whose images live in a worker's reused buffers: the
    main process copies them (``copied``) before the buffers can be written again."""

    __slots__ = ("data",)

    def __init__(self, data: tuple):
        self.data = data

    def copied(self, copy: Callable[[torch.Tensor], torch.Tensor] = torch.Tensor.clone
               ) -> tuple:
        images, *rest = self.data
        return (_map_tensors(images, copy), *rest)

    def pin_memory(self, device=None):
        """The pin-memory thread's copy is the copy out of the buffers."""
        return torch_compat.pin_memory(self.data, device)


class ReusedBufferCollate:
    """``collate_skipping_bad`` that, in a worker process, stacks the images into the worker's
    reused shared-memory buffers and marks the batch as a ``SharedBatch``; in the main process
    (``num_workers=0``) it is ``collate_skipping_bad`` itself."""

    def __init__(self, slots: int):
        self.slots = slots
        self._batches = 0  # per process: each worker counts its own batches
        self._buffers: dict[tuple, torch.Tensor] = {}

    def __call__(self, batch: list):
        if get_worker_info() is None:
            return collate_skipping_bad(batch)
        self._batches += 1
        return SharedBatch(collate_skipping_bad(batch, stack=self._stack))

    def _stack(self, images: list):
        first = images[0]
        if not isinstance(first, (torch.Tensor, dict)):  # not an image fgvc makes: torch's way
            return default_collate(images)
        if isinstance(first, dict):  # {resolution: image}: one buffer per key
            return {key: self._stack_into(key, [image[key] for image in images])
                    for key in first}
        return self._stack_into(None, images)

    def _stack_into(self, key, tensors: list[torch.Tensor]) -> torch.Tensor:
        first = tensors[0]
        shape = (len(tensors), *first.shape)
        numel = math.prod(shape)
        slot = (key, self._batches % self.slots)
        buffer = self._buffers.get(slot)
        if buffer is None or buffer.dtype != first.dtype or buffer.numel() < numel:
            buffer = torch.empty(numel, dtype=first.dtype).share_memory_()
            self._buffers[slot] = buffer
        return torch.stack(tensors, out=buffer[:numel].view(shape))


# Arrays the main process keeps for its copies: a loop holds one batch, or two (a batch of every
# evaluation resolution: five tensors each), and what it held at most stays allocated.
COPIES_KEPT = 12


def supported() -> bool:
    """Whether this torch has the private loader hook ``SharedBatchIter`` overrides
    (``fgvc/torch_compat.py``); where not, the loaders collate as torch does (one warning)."""
    return torch_compat.shared_batches_supported()


class SharedBatchIter(torch_compat.loader_iter_base()):
    """Copies each ``SharedBatch`` out of its buffers as it is received, before the loader
    hands out the next task, into memory it reuses (``ReusedCopies``), and keeps the last
    buffers received mapped. Its base is torch's private ``_MultiProcessingDataLoaderIter``
    (``torch_compat``); built only where ``supported()``."""

    def __init__(self, loader):
        if not getattr(loader, "in_order", True):  # older torch always loads in order
            raise ValueError("reused batch buffers need a loader that loads in order")
        super().__init__(loader)
        slots = loader.prefetch_factor * loader.num_workers
        self._received = collections.deque(maxlen=slots)
        self._copies = ReusedCopies(capacity=COPIES_KEPT)

    def _process_data(self, data, *args):  # (data, worker_idx) in recent torch, (data) before
        if isinstance(data, SharedBatch):
            self._received.append(data)
            data = data.copied(self._copies.copy)
        return super()._process_data(data, *args)


class ReusedCopies:
    """Copies of tensors into memory that is kept and used again once no tensor refers to an
    earlier copy in it any more. A new tensor of a batch's size is new memory to the operating
    system, faulted in page by page while the copy writes it: 5 ms for 9.6 MB, fifteen times
    the copy itself. Each copy is a tensor over a numpy array the pool keeps, and a weak
    reference to the tensor's storage says when every view, detached alias and storage handle
    of it is gone; only then is the array reused. At ``capacity`` the oldest array is dropped
    from the pool (a copy still in use keeps its memory until it is freed)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._arrays: list[np.ndarray] = []
        self._users: list[StorageWeakRef | None] = []

    def copy(self, tensor: torch.Tensor) -> torch.Tensor:
        nbytes = tensor.numel() * tensor.element_size()
        if nbytes == 0:
            return tensor.clone()
        free = [i for i, (array, user) in enumerate(zip(self._arrays, self._users, strict=True))
                if array.nbytes >= nbytes and (user is None or user.expired())]
        if free:  # the smallest that fits: a larger one may be needed by the next tensor
            i = min(free, key=lambda i: self._arrays[i].nbytes)
        else:
            if len(self._arrays) >= self.capacity:
                del self._arrays[0], self._users[0]
            self._arrays.append(np.empty(nbytes, np.uint8))
            self._users.append(None)
            i = len(self._arrays) - 1
        out = torch.from_numpy(self._arrays[i][:nbytes]).view(tensor.dtype).view(tensor.shape)
        out.copy_(tensor)
        self._users[i] = StorageWeakRef(out.untyped_storage())
        return out


def _map_tensors(images, fn):
    """``fn`` on a batch of images or on each of a {resolution: batch} dict's."""
    if isinstance(images, dict):
        return {key: fn(value) for key, value in images.items()}
    return fn(images)
