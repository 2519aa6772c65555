"""The plain data an adapter hands to the rest of fgvc: samples, classes and splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

UNLABELLED = -1


class DatasetError(RuntimeError):
    """A dataset on disk is missing, incomplete or malformed; the message says what and where."""


@dataclass(frozen=True)
class Sample:
    """One image: its path relative to the dataset root, its label index and the dataset's id.

    ``path`` is a file, or ``<file>#<column>[<row>]`` for an image stored as encoded bytes in
    row ``row`` of a Parquet/Arrow file (``fgvc.datasets.parquet``); ``decode.open_rgb`` reads both.
    """

    path: str
    label: int
    image_id: str


@dataclass
class DatasetIndex:
    """Everything an adapter read: classes in label order and the samples of every split.

    ``category_ids[i]`` is the dataset's own id of label ``i``; submissions use it. ``boxes``
    maps image id -> (x, y, width, height) where the dataset ships boxes.
    """

    name: str
    root: Path
    classes: list[str]
    category_ids: list[str]
    splits: dict[str, list[Sample]]
    boxes: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)  # listed but absent, per split

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


@dataclass(frozen=True)
class RawSample:
    """A sample as the dataset names it: its own category id (``None`` when unlabelled)."""

    path: str
    category_id: str | None
    image_id: str


def category_sort_key(category_id: str) -> tuple:
    """Numeric ids sort numerically (``"2"`` before ``"10"``), others as text."""
    return (0, int(category_id), "") if category_id.lstrip("-").isdigit() else (1, 0, category_id)


def build_index(name: str, root: Path, categories: dict[str, str],
                splits: dict[str, list[RawSample]],
                boxes: dict[str, tuple[float, float, float, float]] | None = None,
                source: str = "") -> DatasetIndex:
    """Map the dataset's own category ids onto contiguous 0-based labels.

    The mapping is stable and documented: label ``i`` is the ``i``-th category id in ascending
    order (numeric when the ids are numbers). ``categories`` maps id -> class name; a sample
    whose category is not listed is an error naming it. Where the dataset has both ``train`` and
    ``val``, a ``trainval`` split (their union) is added, as papers often train on it.
    The splits pass ``integrity.check_splits`` first; ``source`` names the metadata in errors.
    """
    from fgvc.datasets.integrity import check_splits, problem

    splits = check_splits(splits, source or f"{name} metadata under {root}")
    order = sorted(categories, key=category_sort_key)
    label_of = {cid: i for i, cid in enumerate(order)}
    out: dict[str, list[Sample]] = {}
    for split, raw in splits.items():
        samples = []
        for item in raw:
            if item.category_id is None:
                samples.append(Sample(item.path, UNLABELLED, item.image_id))
                continue
            if item.category_id not in label_of:
                problem("unknown_reference", source or name, f"{split} image {item.image_id!r}",
                        f"category {item.category_id!r} is not among the dataset's "
                        f"{len(order)} categories", "correct the category or declare it")
            samples.append(Sample(item.path, label_of[item.category_id], item.image_id))
        out[split] = samples
    if "train" in out and "val" in out and "trainval" not in out:
        out["trainval"] = out["train"] + out["val"]
    return DatasetIndex(name=name, root=root, classes=[categories[c] for c in order],
                        category_ids=order, splits=out, boxes=dict(boxes or {}))


HOLDOUT_SPLIT = "holdout"


def with_holdout(index: DatasetIndex, source: str, fraction: float, seed: int) -> DatasetIndex:
    """Move ``fraction`` of each class of split ``source`` into a new split ``holdout``.

    Deterministic for a seed, at least one image per class held out where the class has two or
    more; the test split is never touched.
    """
    import random

    by_label: dict[int, list[Sample]] = {}
    for sample in index.split(source):
        by_label.setdefault(sample.label, []).append(sample)
    rng = random.Random(seed)
    kept, held = [], []
    for label in sorted(by_label):
        samples = sorted(by_label[label], key=lambda s: s.image_id)
        rng.shuffle(samples)
        n = max(1, round(fraction * len(samples))) if len(samples) > 1 else 0
        held += samples[:n]
        kept += samples[n:]
    splits = dict(index.splits)
    splits[source] = kept
    splits[HOLDOUT_SPLIT] = held
    return DatasetIndex(index.name, index.root, index.classes, index.category_ids, splits,
                        index.boxes, index.missing)
