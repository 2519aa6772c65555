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
    """One image: its path relative to the dataset root, its label index and the dataset's id.

    ``path`` is a file, or ``<file>#<column>[<row>]`` for an image stored as encoded bytes in
    row ``row`` of a Parquet/Arrow file (``fgvc.datasets.parquet``); ``decode.open_rgb`` reads both.
    """

    path: str
    label: int
    image_id: str


class StringColumn:
    """Many strings in one buffer with offsets: two objects instead of one per string.

    The buffer is the joined text itself when it is ASCII (one byte a character, sliced without
    decoding), else its UTF-8 encoding. Hand-written because no maintained library fits: a numpy
    ``U`` array pads every string to the longest at 4 bytes a character, and Arrow's string
    arrays would be a new heavy dependency.
    """

    __slots__ = ("buffer", "offsets")

    def __init__(self, buffer: str | bytes, offsets: np.ndarray) -> None:
        self.buffer, self.offsets = buffer, offsets

    @classmethod
    def build(cls, values: list[str]) -> StringColumn:
        buffer: str | bytes = "".join(values)
        if buffer.isascii():
            lengths = map(len, values)
        else:
            encoded = [v.encode("utf-8") for v in values]
            buffer, lengths = b"".join(encoded), map(len, encoded)
        offsets = np.zeros(len(values) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(lengths, dtype=np.int64, count=len(values)), out=offsets[1:])
        return cls(buffer, offsets.astype(np.uint32) if len(buffer) < 2**32 else offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        value = self.buffer[self.offsets[i]:self.offsets[i + 1]]
        return value if type(value) is str else value.decode("utf-8")


class DecimalColumn:
    """Integer ids (as COCO files give them) kept as one int64 array, read back as text."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> str:
        return str(self.values[i])


def id_column(values: list) -> StringColumn | DecimalColumn:
    """Image ids as compactly as they come: all integers -> int64, else UTF-8 text."""
    if set(map(type, values)) == {int}:  # not bool, not numpy: exactly what JSON gives
        try:
            return DecimalColumn(np.array(values, dtype=np.int64))
        except OverflowError:
            pass
    return StringColumn.build([v if type(v) is str else str(v) for v in values])


class SampleStore:
    """The columns behind one or more ``SampleTable``: paths, image ids, labels (int32)."""

    __slots__ = ("paths", "image_ids", "labels")

    def __init__(self, paths: StringColumn, image_ids: StringColumn | DecimalColumn,
                 labels: np.ndarray) -> None:
        if not len(paths) == len(image_ids) == len(labels):
            raise ValueError("sample columns of different lengths")
        self.paths, self.image_ids, self.labels = paths, image_ids, labels

    @classmethod
    def build(cls, paths: list[str], image_ids: list, labels: Sequence[int] | np.ndarray
              ) -> SampleStore:
        """``image_ids``: text, or integers (stored as such, read back as decimal text)."""
        return cls(StringColumn.build(paths), id_column(image_ids),
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
        paths, ids = self.store.paths, self.store.image_ids
        rows = self.rows if isinstance(self.rows, range) else self.rows.tolist()
        for row, label in zip(rows, self.labels.tolist(), strict=True):
            yield Sample(paths[row], label, ids[row])

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
    """A split as three columns: what fast readers hand over instead of a ``RawSample`` each.

    Image and category ids may be integers as a JSON file gives them: they mean their decimal
    text (``str(id)``), which is what ``Sample.image_id`` and the category ids hold.
    """

    paths: list[str]
    category_ids: list[str | int | None]
    image_ids: list[str | int]
    ids_unique: bool = False  # already checked by the reader: no need to hash them again

    @classmethod
    def from_samples(cls, raw: Iterable[RawSample]) -> RawColumns:
        raw = list(raw)
        return cls([r.path for r in raw], [r.category_id for r in raw], [r.image_id for r in raw])


def paused_gc(fn):
    """Run ``fn`` with the cyclic garbage collector paused. Parsing a metadata file allocates
    millions of containers, none of them in a cycle; every few hundred of them would trigger a
    collection that walks the growing heap. Reference counting still frees everything."""
    import functools
    import gc

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return wrapper


def checked_splits(splits: dict[str, list[RawSample] | RawColumns], file: str
                   ) -> dict[str, list[RawSample] | RawColumns]:
    """``integrity.check_splits``, without a Python object per sample where it can: splits
    given as columns pass whole-column tests (``_clean_columns``: no path with '..', a leading
    slash or a drive; no repeated path or id in a split; no path in two splits that are not
    nested) and are returned as they are;
    if any test fails, or a split is a list, every split goes through ``check_splits`` entry by
    entry, which names the entry and applies ``dataset.integrity``."""
    from fgvc.datasets.integrity import check_splits

    if all(isinstance(c, RawColumns) for c in splits.values()) and _clean_columns(splits):
        return splits
    lists = {s: [RawSample(p, None if c is None else str(c), str(i))
                 for p, c, i in zip(v.paths, v.category_ids, v.image_ids, strict=True)]
             if isinstance(v, RawColumns) else v for s, v in splits.items()}
    return check_splits(lists, file)


def _clean_columns(columns: dict[str, RawColumns]) -> bool:
    """Whether whole-column tests find nothing ``check_splits`` would report. The path tests
    search all of a split's paths joined by newlines, once each: no '..', no ':' (a drive; the
    rare legitimate colon merely sends the split to the entry-by-entry checks), and no path
    starting with a slash (at the start of the text or after a newline; a newline inside a
    path can only add false alarms). Splits overlap only where ``integrity.NESTED_SPLITS``
    allows it (iNaturalist 2021's train_mini within train)."""
    from fgvc.datasets.integrity import NESTED_SPLITS

    earlier: dict[str, set[str]] = {}
    for split, col in columns.items():
        text = "\n".join(col.paths)
        if (".." in text or ":" in text or text.startswith(("/", "\\")) or "\n/" in text
                or ("\\" in text and "\n\\" in text)):  # one-character searches are the fast ones
            return False
        paths = set(col.paths)
        if (len(paths) != len(col.paths)
                or not (col.ids_unique or len(set(col.image_ids)) == len(col.image_ids))
                or any(not paths.isdisjoint(seen) for other, seen in earlier.items()
                       if frozenset({other, split}) not in NESTED_SPLITS)):
            return False
        earlier[split] = paths
    return True


def build_index(name: str, root: Path, categories: dict[str, str],
                splits: dict[str, list[RawSample] | RawColumns],
                boxes: dict[str, tuple[float, float, float, float]] | None = None,
                source: str = "") -> DatasetIndex:
    """Map the dataset's own category ids onto contiguous 0-based labels.

    The mapping is stable and documented: label ``i`` is the ``i``-th category id in ascending
    order (numeric when the ids are numbers). ``categories`` maps id -> class name; a sample
    whose category is not listed is an error naming it. Where the dataset has both ``train`` and
    ``val``, a ``trainval`` split (their union) is added, as papers often train on it.
    The splits pass ``integrity.check_splits`` first; ``source`` names the metadata in errors.
    Every split goes into one ``SampleStore`` (train then val first, so trainval is a range).
    """
    from fgvc.datasets.integrity import problem

    splits = checked_splits(splits, source or f"{name} metadata under {root}")
    order = sorted(categories, key=category_sort_key)
    label_of: dict[str | int | None, int] = {cid: i for i, cid in enumerate(order)}
    label_of[None] = UNLABELLED
    unknown = UNLABELLED - 1
    stored = sorted(splits, key=lambda s: (s != "train", s != "val"))  # stable otherwise
    columns = {s: c if isinstance(c, RawColumns) else RawColumns.from_samples(c)
               for s, c in splits.items()}
    distinct = {split: set(col.category_ids) for split, col in columns.items()}
    for c in set().union(*distinct.values()) - label_of.keys():
        if str(c) in label_of:  # an integer id from JSON: its text
            label_of[c] = label_of[str(c)]
    labels: list[np.ndarray] = []
    ranges: dict[str, range] = {}
    start = 0
    for split in stored:
        col = columns[split]
        split_labels = _label_column(col.category_ids, distinct[split], label_of, unknown)
        bad = np.flatnonzero(split_labels == unknown)
        if bad.size:
            problem("unknown_reference", source or name, f"{split} image "
                    f"{str(col.image_ids[bad[0]])!r}", f"category "
                    f"{str(col.category_ids[bad[0]])!r} is not among the dataset's {len(order)} "
                    "categories", "correct the category or declare it")
        ranges[split] = range(start, start + len(split_labels))
        start += len(split_labels)
        labels.append(split_labels)
    parts = [columns[s] for s in stored]
    store = SampleStore.build(_chain([c.paths for c in parts]), _chain([c.image_ids for c in parts]),
                              np.concatenate(labels) if labels else np.zeros(0, np.int32))
    out = {split: SampleTable(store, ranges[split]) for split in splits}
    if "train" in out and "val" in out and "trainval" not in out:
        out["trainval"] = out["train"] + out["val"]
    return DatasetIndex(name=name, root=root, classes=[categories[c] for c in order],
                        category_ids=order, splits=out, boxes=dict(boxes or {}))


def _label_column(category_ids: list, distinct: set, label_of: dict, unknown: int
                  ) -> np.ndarray:
    """``label_of[c]`` (``unknown`` where absent) for every ``c``, as int32. When every id is a
    Python int (a COCO file's), by one binary search over the known ids (numpy, whole column)
    instead of a dict lookup per sample."""
    if distinct and all(type(c) is int for c in distinct):
        ids = np.array(category_ids)
        if ids.dtype.kind == "i":  # not an integer beyond int64
            known = sorted(c for c in distinct if c in label_of)
            keys = np.array(known, dtype=np.int64)
            values = np.array([label_of[c] for c in known] + [unknown], dtype=np.int32)
            position = np.searchsorted(keys, ids)
            found = keys[np.minimum(position, len(keys) - 1)] == ids if len(keys) else False
            return np.where(found, values[position], unknown).astype(np.int32)
    return np.array([label_of.get(c, unknown) for c in category_ids], dtype=np.int32)


def _chain(lists: list[list]) -> list:
    return lists[0] if len(lists) == 1 else [v for part in lists for v in part]


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
