"""The plain data an adapter hands to the rest of fgvc: samples, classes and splits."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fgvc.datasets.columns import (
    DecimalColumn,
    StringColumn,
    id_column,
    int64_ids,
    repeats,
)
from fgvc.datasets.raw import DatasetError, RawSample

UNLABELLED = -1


@dataclass(frozen=True)
class Sample:
    """One image: its path relative to the dataset root, its label index and the dataset's id.

    ``path`` is a file, or ``<file>#<column>[<row>]`` for an image stored as encoded bytes in
    row ``row`` of a Parquet/Arrow file (``fgvc.datasets.parquet``); ``decode.open_rgb`` reads both.
    """

    path: str
    label: int
    image_id: str


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


def category_sort_key(category_id: str) -> tuple:
    """Numeric ids sort numerically (``"2"`` before ``"10"``), others as text."""
    return (0, int(category_id), "") if category_id.lstrip("-").isdigit() else (1, 0, category_id)


@dataclass
class RawColumns:
    """A split as three columns: what fast readers hand over instead of a ``RawSample`` each.

    Image and category ids may be integers as a JSON file gives them: they mean their decimal
    text (``str(id)``), which is what ``Sample.image_id`` and the category ids hold; a reader
    may hand integer ids over as an int64 array. After ``checked_splits`` the paths are a
    ``StringColumn``.
    """

    paths: list[str] | StringColumn
    category_ids: list[str | int | None] | np.ndarray
    image_ids: list[str | int] | np.ndarray
    ids_unique: bool = False  # already checked by the reader: no need to hash them again

    @classmethod
    def from_samples(cls, raw: Iterable[RawSample]) -> RawColumns:
        raw = list(raw)
        return cls([r.path for r in raw], [r.category_id for r in raw], [r.image_id for r in raw])


def paused_gc(fn):
    """Run ``fn`` with the cyclic garbage collector paused. Parsing a metadata file, and
    indexing its samples, allocate millions of containers, none of them in a cycle; every few
    hundred of them would trigger a collection that walks the growing heap (or the lists of
    millions of entries alive while indexing). Reference counting still frees everything."""
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
    nested) and are returned with their paths already in a ``StringColumn``;
    if any test fails, or a split is a list, every split goes through ``check_splits`` entry by
    entry, which names the entry and applies ``dataset.integrity``."""
    from fgvc.datasets.integrity import check_splits

    if all(isinstance(c, RawColumns) for c in splits.values()):
        stored = _clean_columns(splits)  # type: ignore[arg-type]
        if stored is not None:
            return {s: RawColumns(stored[s], c.category_ids, c.image_ids, c.ids_unique)
                    for s, c in splits.items() if isinstance(c, RawColumns)}
    lists = {s: [RawSample(p, None if c is None else str(c), str(i))
                 for p, c, i in zip(v.paths, v.category_ids, v.image_ids, strict=True)]
             if isinstance(v, RawColumns) else v for s, v in splits.items()}
    return check_splits(lists, file)


def _clean_columns(columns: dict[str, RawColumns]) -> dict[str, StringColumn] | None:
    """Each split's paths as a ``StringColumn``, or ``None`` where a whole-column test finds
    something ``check_splits`` might report (it then judges entry by entry). The path tests
    search the column's newline-joined buffer once each: no '..', no ':' (a drive; the rare
    legitimate colon merely sends the split to the entry-by-entry checks), and no path starting
    with a slash. Repeats are looked for among the paths' hashes (sorted int64: less time and
    memory than a set of millions of paths), and confirmed on the paths themselves. Splits
    overlap only where ``integrity.NESTED_SPLITS`` allows it (train_mini within train)."""
    from fgvc.datasets.integrity import NESTED_SPLITS

    built: dict[str, StringColumn] = {}
    hashes: dict[str, np.ndarray] = {}
    for split, col in columns.items():
        try:
            built[split] = StringColumn.build(col.paths)
        except TypeError:
            return None
        if not _plain_relative(built[split].buffer):
            return None
        hashes[split] = np.sort(np.fromiter(map(hash, col.paths), np.int64, len(col.paths)))
        if (repeats(hashes[split]) and len(set(col.paths)) != len(col.paths)) or not (
                col.ids_unique or len(set(col.image_ids)) == len(col.image_ids)):
            return None
        for other in list(hashes)[:-1]:
            if (frozenset({other, split}) not in NESTED_SPLITS
                    and np.intersect1d(hashes[other], hashes[split], assume_unique=True).size
                    and not set(columns[other].paths).isdisjoint(col.paths)):
                return None
    return built


def _plain_relative(buffer: str | bytes) -> bool:
    """Whether no newline-separated path in ``buffer`` holds '..' or ':' or starts with a
    slash or backslash. The two-character patterns are found by ``re``, whose literal-prefix
    scan is faster on such text than ``str.__contains__`` (a few hundred MB at iNaturalist
    2021 scale); ':' by the one-character search."""
    starts, colon, dots, leading = _ESCAPES[type(buffer)]
    return not (buffer.startswith(starts) or colon in buffer  # type: ignore[operator]
                or dots.search(buffer) or leading.search(buffer))


def _escape_tests(kind: type) -> tuple:
    def text(value: str) -> str | bytes:
        return value if kind is str else value.encode("ascii")

    return ((text("/"), text("\\")), text(":"), re.compile(text(r"\.\.")),
            re.compile(text(r"\n[/\\]")))


_ESCAPES = {kind: _escape_tests(kind) for kind in (str, bytes)}


@paused_gc
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
    labels: list[np.ndarray] = []
    ranges: dict[str, range] = {}
    start = 0
    for split in stored:
        col = columns[split]
        split_labels = _label_column(col.category_ids, label_of, unknown)
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
    store = SampleStore(
        StringColumn.concat([c.paths if isinstance(c.paths, StringColumn)
                             else StringColumn.build(c.paths) for c in parts]),
        _id_columns([c.image_ids for c in parts]),
        np.concatenate(labels) if labels else np.zeros(0, np.int32))
    out = {split: SampleTable(store, ranges[split]) for split in splits}
    if "train" in out and "val" in out and "trainval" not in out:
        out["trainval"] = out["train"] + out["val"]
    return DatasetIndex(name=name, root=root, classes=[categories[c] for c in order],
                        category_ids=order, splits=out, boxes=dict(boxes or {}))


def _label_column(category_ids: list | np.ndarray, label_of: dict, unknown: int) -> np.ndarray:
    """``label_of[c]`` (``unknown`` where absent) for every ``c``, as int32; an integer id (as
    JSON gives it) means its decimal text. When every id is a Python int (a COCO file's), by
    whole-array lookups (a table indexed by id, or a binary search where the ids spread too
    far for one) instead of a dict lookup per sample."""
    if isinstance(category_ids, np.ndarray):  # a reader's, already int64
        ids: np.ndarray | None = category_ids
    else:
        ids = int64_ids(category_ids) if category_ids and type(category_ids[0]) is int else None
    if ids is None:
        lookup = dict(label_of)
        for c in set(category_ids) - lookup.keys():
            if str(c) in lookup:
                lookup[c] = lookup[str(c)]
        return np.array([lookup.get(c, unknown) for c in category_ids], dtype=np.int32)
    numbers = {n: label for c, label in label_of.items() if (n := _decimal(c)) is not None}
    keys = np.fromiter(numbers.keys(), np.int64, len(numbers))
    values = np.fromiter(numbers.values(), np.int32, len(numbers))
    low, high = int(ids.min()), int(ids.max())
    if high - low < max(len(ids), 1 << 16):  # a table no larger than the ids themselves
        table = np.full(high - low + 1, unknown, dtype=np.int32)
        inside = (keys >= low) & (keys <= high)
        table[keys[inside] - low] = values[inside]
        return table[ids - low] if low else table[ids]
    order = np.argsort(keys)
    keys, values = keys[order], np.append(values[order], np.int32(unknown))
    position = np.searchsorted(keys, ids)
    found = keys[np.minimum(position, len(keys) - 1)] == ids if len(keys) else False
    return np.where(found, values[position], unknown).astype(np.int32)


def _decimal(category_id: object) -> int | None:
    """The integer whose decimal text ``category_id`` is (``"7"``, not ``"07"``), else None."""
    if type(category_id) is not str:
        return None
    try:
        number = int(category_id)
    except ValueError:
        return None
    return number if str(number) == category_id else None


def _id_columns(parts: list[Sequence | np.ndarray]) -> StringColumn | DecimalColumn:
    """The splits' image ids in one column: int64 where every split's are integers."""
    if parts and all(isinstance(p, np.ndarray) for p in parts):
        return DecimalColumn(parts[0] if len(parts) == 1 else np.concatenate(parts))
    lists = [p.tolist() if isinstance(p, np.ndarray) else p for p in parts]
    return id_column(lists[0] if len(lists) == 1 else [v for part in lists for v in part])


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
