"""Columns of many values in a few objects: what lets millions of samples be held compactly
and shared copy-on-write by DataLoader workers (reading a value touches no reference count
of the shared pages)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


class StringColumn:
    """Many strings in one buffer with offsets: two objects instead of one per string.

    The buffer is the strings joined by newlines: the text itself when it is ASCII (one byte a
    character, sliced without decoding), else its UTF-8 encoding. String ``i`` runs from
    ``offsets[i]`` to ``offsets[i + 1] - 1`` (offsets count the separators, so a string may
    itself hold a newline). The newlines let whole-column searches over the buffer see where a
    string starts (``"\\n/"``) without a join of their own. Hand-written because a numpy ``U``
    array pads every string to the longest at 4 bytes a character, and Arrow's string arrays
    (pyarrow is a dependency, for the parquet adapter), as compact, measured slower where it
    counts: a loader reads one path per sample, and reading one value builds an Arrow scalar
    first (1.03 us a read against 0.71 us, 200,000 random reads of 1 M iNaturalist-shaped paths,
    2026-12-06, 2-core EPYC); and the whole-column path check (``_plain_relative`` in
    datasets/base.py) is one regular-expression scan of this newline-separated buffer, which
    Arrow's separator-less data buffer cannot offer. Arrow builds faster (0.04 s against 0.09 s
    a million), a cost paid once per load.
    """

    __slots__ = ("buffer", "offsets")

    def __init__(self, buffer: str | bytes, offsets: np.ndarray) -> None:
        self.buffer, self.offsets = buffer, offsets

    @classmethod
    def build(cls, values: Sequence[str]) -> StringColumn:
        """Raises ``TypeError`` when a value is not a ``str``."""
        buffer: str | bytes = "\n".join(values)
        if buffer.isascii():
            lengths = map(len, values)
        else:
            encoded = [v.encode("utf-8") for v in values]
            buffer, lengths = b"\n".join(encoded), map(len, encoded)
        return cls(buffer, _offsets(np.fromiter(lengths, dtype=np.int64, count=len(values)),
                                    len(buffer)))

    @classmethod
    def concat(cls, parts: Sequence[StringColumn]) -> StringColumn:
        """One column of the parts' strings in order (the part itself when there is one)."""
        parts = [p for p in parts if len(p)] or list(parts[:1])
        if not parts:
            return cls.build([])
        if len(parts) == 1:
            return parts[0]
        if all(type(p.buffer) is str for p in parts):
            buffer: str | bytes = "\n".join(p.buffer for p in parts)  # type: ignore[misc]
        else:
            buffer = b"\n".join(p.buffer if type(p.buffer) is bytes
                                 else p.buffer.encode("ascii") for p in parts)  # type: ignore[union-attr]
        lengths = np.concatenate([np.diff(p.offsets.astype(np.int64)) - 1 for p in parts])
        return cls(buffer, _offsets(lengths, len(buffer)))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        value = self.buffer[self.offsets[i]:self.offsets[i + 1] - 1]
        return value if type(value) is str else value.decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))


def _offsets(lengths: np.ndarray, size: int) -> np.ndarray:
    """Where each of the strings of ``lengths``, newline-separated in a buffer of ``size``,
    starts, and one past the end: uint32 when the buffer allows (half the memory)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.uint32 if size < 2**32 - 1 else np.int64)
    lengths = lengths.astype(offsets.dtype)
    lengths += 1
    np.cumsum(lengths, out=offsets[1:])
    return offsets


class DecimalColumn:
    """Integer ids (as COCO files give them) kept as one int64 array, read back as text."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> str:
        return str(self.values[i])


def id_column(values: Sequence | np.ndarray) -> StringColumn | DecimalColumn:
    """Image ids as compactly as they come: all integers -> int64, else UTF-8 text. An int64
    array (a reader's, already checked) is taken as it is."""
    if isinstance(values, np.ndarray):
        return DecimalColumn(values)
    ints = int64_ids(values)
    if ints is not None:
        return DecimalColumn(ints)
    return StringColumn.build([v if type(v) is str else str(v) for v in values])


def int64_ids(values: Sequence) -> np.ndarray | None:
    """``values`` as int64 when every one is a Python int within range (not bool, not a float:
    exactly what JSON gives for an integer), else ``None``."""
    if set(map(type, values)) == {int}:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            pass
    return None


def all_distinct(values: np.ndarray) -> bool:
    """Whether an int64 array holds no value twice: ids as files list them are mostly
    ascending already, which one comparison decides; otherwise by sorting a copy."""
    if len(values) < 2 or bool((values[1:] > values[:-1]).all()):
        return True
    return not repeats(np.sort(values))


def repeats(ordered: np.ndarray) -> bool:
    """Whether a sorted array holds some value twice."""
    return bool((ordered[1:] == ordered[:-1]).any())
