"""Predictions: class probabilities keyed by image id, with the class order and their origin.

Saved as a directory of uncompressed ``.npy`` files, so that a 500 k x 10,000 matrix is written
at disk speed and read with ``np.load(mmap_mode="r")`` without loading it (a compressed ``.npz``
took 16.8 s to write 50 k x 1,010 and had to be inflated whole to read one row):

- ``probs.npy``: float16, one row per image, one column per class (dense predictions); or
- ``top_indices.npy`` (int32) and ``top_scores.npy`` (float16): the best ``k`` columns of each
  row, best first (``predict.keep_top_k``);
- ``ids.npy``, ``class_ids.npy``: the image ids and the dataset's own category ids (column
  order), as fixed-width strings;
- ``meta.json``: what produced them (model, weights, resolutions, crops) and the layout version.

The directory is written under a temporary name, every file fsynced, then renamed into place.
Files written by earlier versions (one compressed ``.npz``) are still read.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fgvc.errors import FgvcError
from fgvc.runfolder import RunFolder

LAYOUT_VERSION = 1
PROBS, TOP_INDICES, TOP_SCORES = "probs.npy", "top_indices.npy", "top_scores.npy"
IDS, CLASS_IDS, META = "ids.npy", "class_ids.npy", "meta.json"
LEGACY_SUFFIX = ".npz"
CHUNK_ELEMENTS = 1 << 20  # values per streamed block: 4 MB in float32, whatever the class count


class PredictionsError(FgvcError, ValueError):
    """A predictions file that is missing, malformed, or lacks what is asked of it."""


def chunk_rows(num_classes: int) -> int:
    """Rows per streamed block, so a block holds about ``CHUNK_ELEMENTS`` values."""
    return max(1, CHUNK_ELEMENTS // max(1, num_classes))


def top_k_block(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-first column indices and values of the ``k`` largest entries of every row.

    A partial sort (``np.argpartition``, linear in the class count) then a sort of the ``k``
    survivors; ties are broken towards the lower column index, exactly as a stable full sort
    would, including ties across the k-th place (rows with such ties, rare, are fully sorted).
    """
    num_classes = block.shape[1]
    k = min(k, num_classes)
    if k == num_classes:
        order = np.argsort(-block, axis=1, kind="stable")
        return order.astype(np.int32), np.take_along_axis(block, order, 1)
    part = np.argpartition(-block, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(block, part, 1)
    order = np.lexsort((part, -values), axis=-1)
    indices = np.take_along_axis(part, order, 1)
    kth = np.take_along_axis(values, order[:, -1:], 1)
    spill = np.flatnonzero((block >= kth).sum(axis=1) > k)
    if spill.size:
        indices[spill] = np.argsort(-block[spill], axis=1, kind="stable")[:, :k]
    indices = indices.astype(np.int32)
    return indices, np.take_along_axis(block, indices, 1)


@dataclass
class Predictions:
    """``probs`` (dense, N x C, possibly memory-mapped) or the top-k arrays (``top_indices``,
    ``top_scores``: N x k, best first) - one of the two."""

    ids: list[str]
    class_ids: list[str]
    probs: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    top_indices: np.ndarray | None = None
    top_scores: np.ndarray | None = None
    source: Path | None = None  # the file or directory it was read from, for messages
    # Class names in column order, where the producer knew them (``fgvc.predict``); not
    # saved: the files keep the category ids, which submissions need.
    class_names: list[str] | None = None

    def __post_init__(self) -> None:
        if (self.probs is None) == (self.top_indices is None):
            raise PredictionsError(f"{self._name()}: holds {'both' if self.probs is not None else 'neither'} "
                                   "dense probabilities and top-k indices (expected one of them)")
        n, c = len(self.ids), len(self.class_ids)
        if self.probs is not None and self.probs.shape != (n, c):
            raise PredictionsError(f"{self._name()}: probabilities of shape {self.probs.shape} "
                                   f"do not match {n} ids x {c} classes")
        if self.top_indices is not None:
            shape = self.top_indices.shape
            if (len(shape) != 2 or shape[0] != n or shape[1] > c or self.top_scores is None
                    or self.top_scores.shape != shape):
                raise PredictionsError(f"{self._name()}: top-k arrays of shape {shape} do not "
                                       f"match {n} ids x {c} classes")
        if self.class_names is not None and len(self.class_names) != c:
            raise PredictionsError(f"{self._name()}: {len(self.class_names)} class names do not "
                                   f"match {c} classes")

    @property
    def kept_top_k(self) -> int | None:
        """``k`` when only the top-k of each image is stored, else ``None``."""
        return None if self.top_indices is None else int(self.top_indices.shape[1])

    def _name(self) -> str:
        return str(self.source) if self.source is not None else "predictions"

    def require_dense(self, purpose: str) -> np.ndarray:
        """The dense matrix; a clear error for top-k predictions."""
        if self.probs is None:
            raise PredictionsError(f"{self._name()} keeps only the top-{self.kept_top_k} classes "
                                   f"of each image (predict.keep_top_k); {purpose} needs every "
                                   "class's probability: predict again without keep_top_k")
        return self.probs

    def top_k_arrays(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best-first class columns (int32) and their probabilities (float16), N x k."""
        k = min(k, len(self.class_ids))
        if self.top_indices is not None:
            if k > self.top_indices.shape[1]:
                raise PredictionsError(f"{self._name()} keeps only the top-{self.kept_top_k} "
                                       f"classes of each image (predict.keep_top_k); {k} were "
                                       "asked for")
            return np.asarray(self.top_indices[:, :k]), np.asarray(self.top_scores[:, :k])
        indices = np.empty((len(self.ids), k), dtype=np.int32)
        scores = np.empty((len(self.ids), k), dtype=np.float16)
        step = chunk_rows(len(self.class_ids))
        for start in range(0, len(self.ids), step):
            block = np.asarray(self.probs[start:start + step], dtype=np.float32)
            idx, val = top_k_block(block, k)
            indices[start:start + step], scores[start:start + step] = idx, val
        return indices, scores

    def top_k(self, k: int, scores: bool = False, names: bool = False
              ) -> list[list[str]] | list[list[tuple[str, float]]]:
        """Best-first category ids of every image (``k`` beyond the class count gives every
        class). ``names``: class names instead of ids, for people (submissions need the ids);
        ``scores``: ``(label, probability)`` pairs instead of labels alone (probabilities to
        float16 precision, as they are stored)."""
        indices, values = self.top_k_arrays(k)
        labels = np.asarray(self.labels(names))[indices].tolist()
        if not scores:
            return labels
        return [list(zip(row, map(float, row_scores), strict=True))
                for row, row_scores in zip(labels, values.astype(np.float32), strict=True)]

    def labels(self, names: bool = False) -> list[str]:
        """The columns' category ids, or their class names (``names``)."""
        if not names:
            return list(self.class_ids)
        if self.class_names is None:
            raise PredictionsError(f"{self._name()} carries no class names (saved predictions "
                                   "keep category ids only; fgvc.predict gives names)")
        return list(self.class_names)

    def keep_top_k(self, k: int) -> Predictions:
        """The same predictions storing only each image's ``k`` best classes."""
        indices, scores = self.top_k_arrays(k)
        return Predictions(list(self.ids), list(self.class_ids), None,
                           {**self.meta, "keep_top_k": int(indices.shape[1])}, indices, scores,
                           class_names=self.class_names)

    def save(self, path: Path) -> Path:
        """Write the directory layout atomically; returns ``path``."""
        check_output_path(path)
        arrays = ({PROBS: self.probs.astype(np.float16, copy=False)} if self.probs is not None
                  else {TOP_INDICES: self.top_indices.astype(np.int32, copy=False),
                        TOP_SCORES: self.top_scores.astype(np.float16, copy=False)})
        with atomic_directory(path) as tmp:
            for name, array in arrays.items():
                _write_npy(tmp / name, array)
            write_labels(tmp, self.ids, self.class_ids, self.meta)
        return path

    @classmethod
    def load(cls, path: Path, mmap: bool = True) -> Predictions:
        """Read a predictions directory (memory-mapped unless ``mmap`` is false) or a legacy
        ``.npz``."""
        path = Path(path)
        if path.is_file() and path.suffix == LEGACY_SUFFIX:
            return _load_legacy(path)
        if not (path / META).is_file():
            raise PredictionsError(f"{path}: not a predictions directory (no {META}; expected "
                                   f"{PROBS} or {TOP_INDICES}, {IDS}, {CLASS_IDS}, {META})")
        mode = "r" if mmap else None
        meta = json.loads((path / META).read_text())
        ids = np.load(path / IDS, allow_pickle=False).tolist()
        class_ids = np.load(path / CLASS_IDS, allow_pickle=False).tolist()
        if (path / PROBS).is_file():
            return cls(ids, class_ids, np.load(path / PROBS, mmap_mode=mode, allow_pickle=False),
                       meta, source=path)
        return cls(ids, class_ids, None, meta,
                   np.load(path / TOP_INDICES, mmap_mode=mode, allow_pickle=False),
                   np.load(path / TOP_SCORES, mmap_mode=mode, allow_pickle=False), source=path)

    def dense_blocks(self, rows: np.ndarray | None = None, step: int | None = None
                     ) -> Iterator[np.ndarray]:
        """The dense matrix in float32 blocks of ``step`` rows, in the order of ``rows`` (default:
        stored order). Read from the file with plain reads where possible, so the blocks already
        consumed do not stay resident as mapped pages."""
        probs = self.require_dense("this")
        step = step or chunk_rows(len(self.class_ids))
        n = len(self.ids)
        in_order = rows is None or np.array_equal(rows, np.arange(n))
        reader = (NpyRowReader(self.source / PROBS) if in_order and self.source is not None
                  and (self.source / PROBS).is_file() else None)
        try:
            for start in range(0, n, step):
                stop = min(n, start + step)
                if reader is not None:
                    block = reader.read(start, stop)
                elif in_order:
                    block = probs[start:stop]
                else:
                    block = probs[rows[start:stop]]
                yield np.array(block, dtype=np.float32)  # a copy: callers work in place
        finally:
            if reader is not None:
                reader.close()


def check_output_path(path: Path) -> None:
    if Path(path).suffix == LEGACY_SUFFIX:
        raise PredictionsError(f"{path}: predictions are written as a directory of .npy files "
                               "(memory-mappable); give an output path without the .npz suffix "
                               "(.npz files of earlier runs are still read)")


def find_predictions(run_dir: Path) -> Path | None:
    """A run's predictions: the directory ``predictions/``, or an earlier run's ``.npz``."""
    folder = RunFolder(run_dir)
    for candidate in (folder.predictions_dir, folder.legacy_predictions_path):
        if candidate.exists():
            return candidate
    return None


def write_labels(folder: Path, ids: list[str], class_ids: list[str], meta: dict[str, Any]) -> None:
    """The sidecar files every layout shares: ids, class ids and meta."""
    _write_npy(folder / IDS, np.asarray(ids, dtype=str))
    _write_npy(folder / CLASS_IDS, np.asarray(class_ids, dtype=str))
    _write_bytes(folder / META, json.dumps({**meta, "layout": LAYOUT_VERSION}).encode())


class atomic_directory:  # noqa: N801 - used as a context manager, like open()
    """Build a directory under a temporary name next to ``path``; on success fsync it and rename
    it into place, replacing an earlier one (the earlier one is moved aside first, then removed:
    a reader never sees a half-written directory). On failure the temporary one is removed.

    Written here rather than with a shared helper because what is replaced is a directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        _fsync_dir(self.tmp)
        old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
        if self.path.is_dir():
            self.path.rename(old)
        elif self.path.exists():
            self.path.unlink()
        self.tmp.rename(self.path)
        _fsync_dir(self.path.parent)
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


class NpyRowWriter:
    """Append the rows of a 2-D ``.npy`` file block by block (the matrix is never whole in
    memory); ``close`` checks every row arrived and fsyncs."""

    def __init__(self, path: Path, shape: tuple[int, int], dtype: np.dtype) -> None:
        self.shape, self.dtype, self.rows = shape, np.dtype(dtype), 0
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": shape}
        np.lib.format.write_array_header_1_0(self.file, header)

    def write(self, block: np.ndarray) -> None:
        self.file.write(memoryview(np.ascontiguousarray(block, dtype=self.dtype)))
        self.rows += len(block)

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.rows != self.shape[0]:
            raise RuntimeError(f"{self.file.name}: {self.rows} rows written, {self.shape[0]} "
                               "expected")


class NpyRowReader:
    """Rows of a 2-D ``.npy`` file by plain reads at offsets (no mapping left resident)."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "rb")  # noqa: SIM115 - closed in close()
        version = np.lib.format.read_magic(self.file)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, self.dtype = read_header(self.file)
        if fortran or len(shape) != 2:
            raise PredictionsError(f"{path}: expected a C-ordered 2-D array, got shape {shape}")
        self.columns, self.offset = shape[1], self.file.tell()

    def read(self, start: int, stop: int) -> np.ndarray:
        row_bytes = self.columns * self.dtype.itemsize
        self.file.seek(self.offset + start * row_bytes)
        count = (stop - start) * self.columns
        return np.fromfile(self.file, dtype=self.dtype, count=count).reshape(-1, self.columns)

    def close(self) -> None:
        self.file.close()


def _load_legacy(path: Path) -> Predictions:
    """A compressed ``.npz`` written before the directory layout: loaded whole."""
    with np.load(path, allow_pickle=False) as data:
        return Predictions(ids=[str(i) for i in data["ids"]],
                           class_ids=[str(c) for c in data["class_ids"]],
                           probs=data["probs"], meta=json.loads(str(data["meta"])), source=path)
