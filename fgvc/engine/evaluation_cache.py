"""Evaluation passes already made in this run, so an identical one is reused, not recomputed.

A pass is identified by what determines its result: the network (a digest of every tensor of
the state dict, buffers included, and of every module's class), the split, the resolution, the
crops and how they are averaged. E.g. the accuracy "before adaptation" at K_train on the
validation split is exactly the train stage's last validation, and "after adaptation" at K_test
the adapt stage's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
import torch.nn as nn


def weights_digest(model: nn.Module) -> str:
    """BLAKE2b of every tensor of ``model.state_dict()`` (names, dtypes, shapes and bytes) and
    of every module's name and class: a module swapped in without weights of its own (an
    activation, a pooling) changes the network, so it must change the digest too."""
    modules = "".join(f"{name}:{type(module).__module__}.{type(module).__qualname__};"
                      for name, module in model.named_modules())
    return tensors_digest([("modules", torch.frombuffer(bytearray(modules.encode()), dtype=torch.uint8)),
                           *model.state_dict().items()])


def tensors_digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """BLAKE2b of named tensors (names, dtypes, shapes and bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in named:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class PassMemo:
    """Metrics of earlier passes, keyed by (weights digest, split, resolution, crops, average)."""

    def __init__(self) -> None:
        self._seen: dict[tuple, dict] = {}

    @staticmethod
    def key(digest: str, split: str, resolution: int, crops: str, average: str) -> tuple:
        return digest, split, int(resolution), crops, average

    def get(self, key: tuple) -> dict | None:
        found = self._seen.get(key)
        return dict(found) if found is not None else None

    def put(self, key: tuple, metrics: dict) -> None:
        self._seen[key] = dict(metrics)
