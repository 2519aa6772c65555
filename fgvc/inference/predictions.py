"""Predictions: class probabilities keyed by image id, with the class order and their origin.

Saved as one ``.npz`` (no pickles): ``ids``, ``class_ids`` (the dataset's own category ids, in
column order), ``probs`` (float16) and ``meta`` (JSON: model, weights, resolutions, crops).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Predictions:
    ids: list[str]
    class_ids: list[str]
    probs: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.probs.shape != (len(self.ids), len(self.class_ids)):
            raise ValueError(f"probabilities of shape {self.probs.shape} do not match "
                             f"{len(self.ids)} ids x {len(self.class_ids)} classes")

    def top_k(self, k: int) -> list[list[str]]:
        """Best-first category ids of every image."""
        k = min(k, len(self.class_ids))
        order = np.argsort(-self.probs.astype(np.float32), axis=1, kind="stable")[:, :k]
        classes = np.asarray(self.class_ids)
        return [list(classes[row]) for row in order]

    def save(self, path: Path) -> None:
        """Atomically and durably (temporary file, fsync, rename): never a torn file."""
        from fgvc.engine.atomic import atomic_save

        atomic_save(path, lambda f: np.savez_compressed(
            f, ids=np.asarray(self.ids, dtype=str), class_ids=np.asarray(self.class_ids, dtype=str),
            probs=self.probs.astype(np.float16), meta=np.asarray(json.dumps(self.meta))))

    @classmethod
    def load(cls, path: Path) -> Predictions:
        with np.load(path, allow_pickle=False) as data:
            return cls(ids=[str(i) for i in data["ids"]],
                       class_ids=[str(c) for c in data["class_ids"]],
                       probs=data["probs"], meta=json.loads(str(data["meta"])))
