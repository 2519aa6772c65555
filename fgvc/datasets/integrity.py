"""Metadata integrity: what a dataset's lists say must be consistent before fgvc trusts them.

Every adapter reports a broken entry through ``problem``, which raises a ``DatasetError``
naming the file, the entry, what is wrong and how to fix it. ``check_splits`` runs the checks
every layout shares on the samples of every split (before derived splits such as ``trainval``
are added): paths that leave the dataset root, an image listed twice in a split, one id naming
two images, an image in two splits. ``check_links`` and ``check_inside_root`` refuse, in the same
way, a sample whose file leads out of the root through a symbolic link, unless
``dataset.follow_symlinks_outside`` (a copy assembled from links into a shared store).

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
import os
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

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


FOLLOW_SYMLINKS_HINT = ("copy the images into the root, or set dataset.follow_symlinks_outside: "
                        "true (`fgvc datasets ... --follow-symlinks-outside`) to read them there")
LINKS_PROBED = 4096  # images per split whose links are checked at load; every image when read

_real_roots: dict[str, str] = {}
_folders_outside: dict[tuple[str, str], str | None] = {}  # per process: one lookup per folder


def resolved_outside(root: Path | str, rel: str) -> str | None:
    """Where ``root/rel`` really is when a symbolic link (the file, or a folder on its way)
    takes it out of the root, else ``None``. A file that does not exist is not outside (its
    absence is reported elsewhere). Each folder is resolved once per load and process
    (``check_links`` starts afresh); a file costs one ``lstat`` (microseconds, against the
    milliseconds of decoding it), and a ``realpath`` only when it is itself a link."""
    location = rel.split("#", 1)[0]  # a Parquet row reference names its file first
    folder = location.rpartition("/")[0]
    key = (str(root), folder)
    if key not in _folders_outside:
        _folders_outside[key] = _outside(str(root), folder)
    if _folders_outside[key] is not None:
        return os.path.join(_folders_outside[key], location.rpartition("/")[2])
    path = os.path.join(root, location)
    return _outside(str(root), location) if os.path.islink(path) else None


def _outside(root: str, rel: str) -> str | None:
    if root not in _real_roots:
        _real_roots[root] = os.path.realpath(root)
    real_root = _real_roots[root]
    target = os.path.realpath(os.path.join(root, rel))
    inside = target == real_root or target.startswith(real_root.rstrip(os.sep) + os.sep)
    return None if inside else target


def check_inside_root(root: Path | str, rel: str, file: object, entry: str) -> None:
    """A sample's file must stay inside the dataset root once its links are followed, as its
    path must without them (``safe_path``): unless ``dataset.follow_symlinks_outside``, a
    link that leads elsewhere would read files the dataset does not hold."""
    target = resolved_outside(root, rel)
    if target is not None:
        problem("path_escape", file, entry, f"{rel} leads through a symbolic link to {target}, "
                f"outside the dataset root {os.path.realpath(root)}", FOLLOW_SYMLINKS_HINT)


def check_links(root: Path, splits: Mapping[str, Sequence[Any]], file: object) -> None:
    """``check_inside_root`` at load on ``LINKS_PROBED`` samples of each split, spread through
    it (every sample of a smaller split): a linked folder or a tree of links is refused before
    anything trains, at a few milliseconds per split, where listing every file would add
    seconds at iNaturalist scale; the loaders check every image as it is read
    (``fgvc/datasets/images.py``), and ``fgvc datasets verify`` every image at once."""
    _real_roots.clear()  # a folder linked or copied since the last load is seen as it is now
    _folders_outside.clear()
    for split, samples in splits.items():
        step = max(1, len(samples) // LINKS_PROBED)
        for i in range(0, len(samples), step):
            sample = samples[i]
            check_inside_root(root, sample.path, file, f"{split} image {sample.image_id!r}")


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
