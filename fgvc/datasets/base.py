"""The plain data an adapter hands to the rest of fgvc: samples, classes and splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

UNLABELLED = -1


class DatasetError(RuntimeError):
    """A dataset on disk is missing, incomplete or malformed; the message says what and where."""


@dataclass(frozen=True)
class Sample:
    """One image: its path relative to the dataset root, its label index and the dataset's id."""

    path: str
    label: int
    image_id: str


@dataclass
class DatasetIndex:
    """Everything an adapter read: classes in label order and the samples of every split.

    ``category_ids[i]`` is the dataset's own id of label ``i``; submissions use it.
    """

    name: str
    root: Path
    classes: list[str]
    category_ids: list[str]
    splits: dict[str, list[Sample]]
    boxes: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> list[Sample]:
        if name not in self.splits:
            raise DatasetError(
                f"dataset {self.name!r} at {self.root} has no split {name!r} "
                f"(it has: {', '.join(self.splits)})"
            )
        return self.splits[name]

    def is_labelled(self, split: str) -> bool:
        samples = self.split(split)
        return bool(samples) and all(s.label != UNLABELLED for s in samples)
