"""The plain data an adapter hands to the rest of fgvc: samples, classes and splits."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

UNLABELLED = -1


class DatasetError(RuntimeError):
    """A dataset on disk is missing, incomplete or malformed; the message says what and where."""


@dataclass(frozen=True)
class Sample:
    """One image: its path relative to the dataset root, its label index and the dataset's id."""

    path: str
    label: int
    image_id: str


class StringColumn:
    """Many strings in one UTF-8 buffer with offsets: two objects instead of one per string.

    Hand-written because no maintained library fits: a numpy ``U`` array pads every string to
    the longest (4 bytes a character), Arrow's string arrays would be a new heavy dependency.
    """

    __slots__ = ("buffer", "offsets")

    def __init__(self, buffer: bytes, offsets: np.ndarray) -> None:
        self.buffer, self.offsets = buffer, offsets

    @classmethod
    def build(cls, values: list[str]) -> StringColumn:
        joined = "".join(values)
        if joined.isascii():
            buffer, lengths = joined.encode("ascii"), map(len, values)
        else:
            encoded = [v.encode("utf-8") for v in values]
            buffer, lengths = b"".join(encoded), map(len, encoded)
        offsets = np.zeros(len(values) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(lengths, dtype=np.int64, count=len(values)), out=offsets[1:])
        return cls(buffer, offsets.astype(np.uint32) if len(buffer) < 2**32 else offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.buffer[self.offsets[i]:self.offsets[i + 1]].decode("utf-8")

    def take(self, rows: np.ndarray) -> StringColumn:
        return StringColumn.build([self[i] for i in rows.tolist()])


class SampleStore:
    """The columns behind one or more ``SampleTable``: paths, image ids, labels (int32)."""

    __slots__ = ("paths", "image_ids", "labels")

    def __init__(self, paths: StringColumn, image_ids: StringColumn, labels: np.ndarray) -> None:
        if not len(paths) == len(image_ids) == len(labels):
            raise ValueError("sample columns of different lengths")
        self.paths, self.image_ids, self.labels = paths, image_ids, labels

    @classmethod
    def build(cls, paths: list[str], image_ids: list[str], labels: Sequence[int] | np.ndarray
              ) -> SampleStore:
        return cls(StringColumn.build(paths), StringColumn.build(image_ids),
                   np.asarray(labels, dtype=np.int32))


class SampleTable(Sequence[Sample]):
    """A split's samples as rows of a ``SampleStore``: compact columns, not one object each.

    Behaves as a read-only sequence of ``Sample`` (made on access), so adapters and callers keep
    using ``samples[i].path``; ``labels`` gives every label as an array at once. Holding a few
    large objects instead of millions of small ones is what lets DataLoader workers share it
    copy-on-write: reading a sample touches no reference count of the shared pages.
    ``rows`` is a ``range`` (a contiguous block, no memory) or an int array of row numbers.
    """

    __slots__ = ("store", "rows")

    def __init__(self, store: SampleStore, rows: range | np.ndarray | None = None) -> None:
        self.store = store
        self.rows = range(len(store.labels)) if rows is None else rows

    @classmethod
    def from_samples(cls, samples: Iterable[Sample]) -> SampleTable:
        samples = list(samples)
        return cls(SampleStore.build([s.path for s in samples], [s.image_id for s in samples],
                                     [s.label for s in samples]))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return SampleTable(self.store, self.rows[i])
        row = int(self.rows[i])
        store = self.store
        return Sample(store.paths[row], int(store.labels[row]), store.image_ids[row])

    def __iter__(self) -> Iterator[Sample]:
        store = self.store
        paths, ids, labels = store.paths, store.image_ids, store.labels.tolist()
        for row in (self.rows if isinstance(self.rows, range) else self.rows.tolist()):
            yield Sample(paths[row], labels[row], ids[row])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SampleTable({len(self)} samples)"

    @property
    def labels(self) -> np.ndarray:
        """Every sample's label, int32 (a view where the rows are contiguous)."""
        if isinstance(self.rows, range):
            return self.store.labels[self.rows.start:self.rows.stop:self.rows.step]
        return self.store.labels[self.rows]

    def row_array(self) -> np.ndarray:
        rows = self.rows
        if isinstance(rows, range):
            return np.arange(rows.start, rows.stop, rows.step, dtype=np.int64)
        return rows

    def take(self, positions: Sequence[int] | np.ndarray) -> SampleTable:
        """The samples at ``positions`` (indices into this table), sharing the store."""
        return SampleTable(self.store, self.row_array()[np.asarray(positions, dtype=np.int64)])

    def __add__(self, other: Sequence[Sample]) -> SampleTable:
        if not isinstance(other, SampleTable):
            other = SampleTable.from_samples(other)
        if other.store is self.store:
            a, b = self.rows, other.rows
            if (isinstance(a, range) and isinstance(b, range) and a.step == b.step == 1
                    and a.stop == b.start):
                return SampleTable(self.store, range(a.start, b.stop))
            return SampleTable(self.store, np.concatenate([self.row_array(), other.row_array()]))
        return SampleTable.from_samples([*self, *other])


@dataclass
class DatasetIndex:
    """Everything an adapter read: classes in label order and the samples of every split.

    ``category_ids[i]`` is the dataset's own id of label ``i``; submissions use it. ``boxes``
    maps image id -> (x, y, width, height) where the dataset ships boxes. ``splits`` may be
    given as lists of ``Sample``; they are stored as ``SampleTable``s.
    """

    name: str
    root: Path
    classes: list[str]
    category_ids: list[str]
    splits: dict[str, SampleTable]
    boxes: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)  # listed but absent, per split

    def __post_init__(self) -> None:
        self.splits = {k: v if isinstance(v, SampleTable) else SampleTable.from_samples(v)
                       for k, v in self.splits.items()}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> SampleTable:
        if name not in self.splits:
            raise DatasetError(
                f"dataset {self.name!r} at {self.root} has no split {name!r} "
                f"(it has: {', '.join(self.splits)})"
            )
        return self.splits[name]

    def is_labelled(self, split: str) -> bool:
        samples = self.split(split)
        return bool(len(samples)) and bool((samples.labels != UNLABELLED).all())


@dataclass(frozen=True)
class RawSample:
    """A sample as the dataset names it: its own category id (``None`` when unlabelled)."""

    path: str
    category_id: str | None
    image_id: str


def category_sort_key(category_id: str) -> tuple:
    """Numeric ids sort numerically (``"2"`` before ``"10"``), others as text."""
    return (0, int(category_id), "") if category_id.lstrip("-").isdigit() else (1, 0, category_id)


@dataclass
class RawColumns:
    """A split as three columns: what fast readers hand over instead of a ``RawSample`` each."""

    paths: list[str]
    category_ids: list[str | None]
    image_ids: list[str]

    @classmethod
    def from_samples(cls, raw: Iterable[RawSample]) -> RawColumns:
        raw = list(raw)
        return cls([r.path for r in raw], [r.category_id for r in raw], [r.image_id for r in raw])


def build_index(name: str, root: Path, categories: dict[str, str],
                splits: dict[str, list[RawSample] | RawColumns],
                boxes: dict[str, tuple[float, float, float, float]] | None = None,
                source: str = "") -> DatasetIndex:
    """Map the dataset's own category ids onto contiguous 0-based labels.

    The mapping is stable and documented: label ``i`` is the ``i``-th category id in ascending
    order (numeric when the ids are numbers). ``categories`` maps id -> class name; a sample
    whose category is not listed is an error naming it. Where the dataset has both ``train`` and
    ``val``, a ``trainval`` split (their union) is added, as papers often train on it.
    Every split goes into one ``SampleStore`` (train then val first, so trainval is a range).
    """
    order = sorted(categories, key=category_sort_key)
    label_of: dict[str | None, int] = {cid: i for i, cid in enumerate(order)}
    label_of[None] = UNLABELLED
    unknown = UNLABELLED - 1
    stored = sorted(splits, key=lambda s: (s != "train", s != "val"))  # stable otherwise
    columns = {s: c if isinstance(c, RawColumns) else RawColumns.from_samples(c)
               for s, c in splits.items()}
    labels: list[int] = []
    ranges: dict[str, range] = {}
    for split in stored:
        split_labels = [label_of.get(c, unknown) for c in columns[split].category_ids]
        if unknown in split_labels:
            at = split_labels.index(unknown)
            raise DatasetError(f"{name}{' ' + source if source else ''}: image "
                               f"{columns[split].image_ids[at]!r} has category "
                               f"{columns[split].category_ids[at]!r}, which is not among the "
                               "dataset's categories")
        ranges[split] = range(len(labels), len(labels) + len(split_labels))
        labels += split_labels
    store = SampleStore.build([p for s in stored for p in columns[s].paths],
                              [i for s in stored for i in columns[s].image_ids], labels)
    out = {split: SampleTable(store, ranges[split]) for split in splits}
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

    table = index.split(source)
    ids, rows = table.store.image_ids, table.row_array().tolist()
    by_label: dict[int, list[int]] = {}
    for position, label in enumerate(table.labels.tolist()):
        by_label.setdefault(label, []).append(position)
    rng = random.Random(seed)
    kept, held = [], []
    for label in sorted(by_label):
        positions = sorted(by_label[label], key=lambda p: ids[rows[p]])
        rng.shuffle(positions)
        n = max(1, round(fraction * len(positions))) if len(positions) > 1 else 0
        held += positions[:n]
        kept += positions[n:]
    splits = dict(index.splits)
    splits[source] = table.take(kept)
    splits[HOLDOUT_SPLIT] = table.take(held)
    return DatasetIndex(index.name, index.root, index.classes, index.category_ids, splits,
                        index.boxes, index.missing)
