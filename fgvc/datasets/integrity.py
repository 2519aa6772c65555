"""Metadata integrity: what a dataset's lists say must be consistent before fgvc trusts them.

Every adapter reports a broken entry through ``problem``, which raises a ``DatasetError``
naming the file, the entry, what is wrong and how to fix it. ``check_splits`` runs the checks
every layout shares on the samples of every split (before derived splits such as ``trainval``
are added): paths that leave the dataset root, an image listed twice in a split, one id naming
two images, an image in two splits.

``dataset.integrity: warn`` (recipe) or ``--integrity warn`` (``fgvc datasets``) downgrades
the documented subset ``DOWNGRADABLE`` to warnings:

- ``repeated_entry``: the same image listed twice in a split with the same label: the repeats
  are dropped;
- ``two_splits``: an image listed in two splits: it stays in both, as listed.

Everything else (labels out of range, unknown image or category references, conflicting
annotations, one id for two images, paths leaving the root) stays an error: reading on would
train on wrong labels, write wrong submissions or read files outside the dataset.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import PurePosixPath, PureWindowsPath
from typing import Literal

from fgvc.datasets.raw import DatasetError, RawSample

log = logging.getLogger(__name__)

Policy = Literal["strict", "warn"]
POLICIES: tuple[str, ...] = ("strict", "warn")
DOWNGRADABLE = frozenset({"repeated_entry", "two_splits"})
KINDS = frozenset({"label_range", "unknown_reference", "conflict", "duplicate_id", "path_escape"}
                  | DOWNGRADABLE)
# Splits that overlap by design: iNaturalist 2021's train_mini is a subset of train.
NESTED_SPLITS = (frozenset({"train", "train_mini"}),)

_policy: ContextVar[str] = ContextVar("fgvc_integrity_policy", default="strict")


@contextlib.contextmanager
def policy(value: str) -> Iterator[None]:
    """Apply ``value`` (``strict`` or ``warn``) to the checks of the adapters run inside."""
    if value not in POLICIES:
        raise DatasetError(f"dataset.integrity: expected one of {', '.join(POLICIES)}, got {value!r}")
    token = _policy.set(value)
    try:
        yield
    finally:
        _policy.reset(token)


def problem(kind: str, file: object, entry: str, what: str, fix: str) -> None:
    """Raise (or, for a downgradable kind under ``warn``, log) one integrity problem."""
    assert kind in KINDS, kind
    message = f"{file}: {entry}: {what}; fix: {fix}"
    if kind in DOWNGRADABLE and _policy.get() == "warn":
        log.warning("%s (dataset.integrity: warn)", message)
        return
    suffix = " (or set dataset.integrity: warn to accept it)" if kind in DOWNGRADABLE else ""
    raise DatasetError(message + suffix)


def check_label_range(file: object, entry: str, value: int, low: int, high: int, what: str) -> None:
    """A numeric class label must lie in the range the dataset declares."""
    if not low <= value <= high:
        problem("label_range", file, entry, f"{what} {value} is outside the declared range "
                f"{low}..{high}", "correct the label or remove the entry")


def safe_path(rel: str, file: object, entry: str) -> None:
    """A path read from metadata must stay inside the dataset root."""
    if ".." not in rel and not rel.startswith(("/", "\\")) and rel[1:2] != ":":
        return  # the common case, decided without building a path object
    location = rel.split("#", 1)[0]  # a Parquet row reference names its file first
    pure = PurePosixPath(location.replace("\\", "/"))
    if pure.is_absolute() or PureWindowsPath(location).drive or ".." in pure.parts:
        problem("path_escape", file, entry, f"path {rel!r} leaves the dataset root",
                "paths in the metadata must be relative to the root and contain no '..'")


def check_splits(splits: dict[str, list[RawSample]], file: object) -> dict[str, list[RawSample]]:
    """The checks every layout shares; returns the splits with dropped repeats (``warn`` only)."""
    out: dict[str, list[RawSample]] = {}
    first_split: dict[str, str] = {}
    for split, samples in splits.items():
        by_id: dict[str, RawSample] = {}
        by_path: dict[str, RawSample] = {}
        kept = []
        for sample in samples:
            entry = f"{split} image {sample.image_id!r}"
            safe_path(sample.path, file, entry)
            seen = by_path.get(sample.path)
            if seen is not None:
                if seen.category_id != sample.category_id:
                    problem("conflict", file, entry, f"{sample.path} is listed twice in {split} "
                            f"with categories {seen.category_id!r} and {sample.category_id!r}",
                            "keep the one correct entry")
                problem("repeated_entry", file, entry, f"{sample.path} is listed twice in {split}",
                        "remove the repeated entry")
                continue
            other = by_id.get(sample.image_id)
            if other is not None:
                problem("duplicate_id", file, entry, f"the id names two images in {split} "
                        f"({other.path} and {sample.path})", "give every image its own id")
            by_id[sample.image_id] = by_path[sample.path] = sample
            kept.append(sample)
        for sample in kept:
            before = first_split.setdefault(sample.path, split)
            if before != split and frozenset({before, split}) not in NESTED_SPLITS:
                problem("two_splits", file, f"image {sample.path}", f"listed in both {before} "
                        f"and {split}", "an image belongs to one split: remove it from the other")
        out[split] = kept
    return out
