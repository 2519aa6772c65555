"""Predicting the images a user has: finding them on disk, and the CSV of their top classes.

``fgvc predict RUN --images photos/ shots/*.png one.jpg`` and ``fgvc.predict(run, "photos/")``
share this module: what a file, folder or glob expands to, the one-line message about files
that could not be decoded, and the ``path,label_1,score_1,...,label_k,score_k`` CSV.
Pure Python (no torch), so the inputs are checked before a model is loaded.
"""

from __future__ import annotations

import csv
import glob
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from fgvc.datasets.decode import (
    BAD_IMAGE_ERRORS,
    DEFAULT_OPTIONS,
    DecodeOptions,
    failure_reason,
    open_rgb,
    to_rgb8,
)
from fgvc.errors import FgvcError
from fgvc.io.atomic import atomic_open

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
GLOB_CHARACTERS = frozenset("*?[")
SHOWN_FAILURES = 5  # unreadable files named in the message; the rest are counted
STDOUT = "-"


class ImageFilesError(FgvcError, ValueError):
    """Image inputs that name nothing usable, or an output that would replace a file."""


@dataclass(frozen=True)
class Unreadable:
    """A file that was found but could not be decoded, and why."""

    path: str
    reason: str


def is_image_name(name: str) -> bool:
    """Whether a file name has one of the image extensions (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def looks_like_glob(text: str) -> bool:
    return any(c in GLOB_CHARACTERS for c in text)


def _walk(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, in sorted path order; hidden files and folders
    (``.DS_Store``, macOS's ``._photo.jpg``, ``.git``) are not images a user meant."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / f for f in files if not f.startswith(".") and is_image_name(f))
    return sorted(found)


def _expand(spec: str) -> list[Path]:
    """One ``--images`` argument: an existing file (taken as is, whatever its extension), a
    folder (walked), or a glob (its matching files, and the images under matching folders)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = _walk(path)
        if not found:
            raise ImageFilesError(f"{spec}: no image files in this folder or below (looked for "
                                  f"{', '.join(IMAGE_EXTENSIONS)}, any case)")
        return found
    if path.exists():
        raise ImageFilesError(f"{spec}: not a file or folder")
    if not looks_like_glob(spec):
        raise ImageFilesError(f"{spec}: no such file or folder (expected an image file, a "
                              "folder of images or a glob such as 'photos/*.jpg')")
    found = []
    for match in sorted(glob.glob(os.path.expanduser(spec), recursive=True)):
        match_path = Path(match)
        if match_path.is_dir():
            found.extend(_walk(match_path))
        elif match_path.is_file() and is_image_name(match_path.name):
            found.append(match_path)
    if not found:
        raise ImageFilesError(f"{spec}: the pattern matches no image file (looked for "
                              f"{', '.join(IMAGE_EXTENSIONS)}, any case)")
    return found


def find_images(specs: str | Path | Iterable[str | Path]) -> list[Path]:
    """Every image named by ``specs`` (files, folders, globs), in the order given, each folder
    and glob sorted, each file once. An argument that names no image is an error: a typo
    must not pass as an empty folder."""
    return expand_inputs([specs] if isinstance(specs, (str, Path)) else specs)


class ImageItems:
    """Files (decoded with the project's ``open_rgb``: bit depth, EXIF orientation, pixel
    limit) and PIL images, each through ``transform``; a file that cannot be decoded gives
    ``(None, index, reason)`` instead of stopping the run. Map-style, for a DataLoader."""

    def __init__(self, items: Sequence[Path | Any], transform: Callable,
                 decode: DecodeOptions = DEFAULT_OPTIONS) -> None:
        self.items, self.transform, self.decode = list(items), transform, decode

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple:
        item = self.items[index]
        if not isinstance(item, Path):  # a PIL image the caller already holds
            return self.transform(to_rgb8(item)), index, None
        try:
            image = open_rgb(item.parent, item.name, self.decode)
        except BAD_IMAGE_ERRORS as err:  # any decoder failure arrives as one (decode.per_file)
            return None, index, failure_reason(err)
        return self.transform(image), index, None


def collate_items(batch: list[tuple]) -> tuple:
    """``(images, labels, indices, n_bad, unreadable)``: the readable items stacked (labels are
    zeros: there are none), the others as ``(index, reason)``."""
    import torch

    good = [b for b in batch if b[0] is not None]
    bad = [(index, reason) for image, index, reason in batch if image is None]
    if not good:
        empty = torch.empty(0)
        return empty, empty.long(), empty.long(), len(bad), bad
    indices = torch.tensor([b[1] for b in good], dtype=torch.long)
    return (torch.stack([b[0] for b in good]), torch.zeros_like(indices), indices, len(bad),
            bad)


def expand_inputs(items: Iterable[Any]) -> list[Any]:
    """API inputs as a list of image files and PIL images: each path (``str`` or ``Path``)
    expanded as ``find_images`` expands it, PIL images kept; anything else is refused."""
    from PIL import Image

    out: list[Any] = []
    seen: set[Path] = set()
    for i, item in enumerate(items):
        if isinstance(item, Image.Image):
            out.append(item)
        elif isinstance(item, (str, Path)):
            for path in _expand(str(item)):
                if path.resolve() not in seen:
                    seen.add(path.resolve())
                    out.append(path)
        else:
            raise ImageFilesError(f"images[{i}]: expected an image file, folder, glob or PIL "
                                  f"image, got {type(item).__name__}")
    if not out:
        raise ImageFilesError("no image given (expected image files, folders, globs or PIL "
                              "images)")
    return out


def describe_unreadable(unreadable: Sequence[Unreadable]) -> str:
    """``x.jpg (cannot identify image file); ...; and 3 more``."""
    shown = "; ".join(f"{u.path} ({u.reason})" for u in unreadable[:SHOWN_FAILURES])
    more = len(unreadable) - SHOWN_FAILURES
    return shown + (f"; and {more} more" if more > 0 else "")


def unreadable_message(unreadable: Sequence[Unreadable], total: int) -> str:
    """``skipped 1 of 7 images that could not be read: x.jpg (cannot identify image file)``."""
    return (f"skipped {len(unreadable)} of {total} images that could not be read: "
            f"{describe_unreadable(unreadable)}")


def check_output(out: str | Path, force: bool) -> None:
    """Refuse, before any work, to replace an existing file without ``force``."""
    if str(out) == STDOUT:
        return
    path = Path(out)
    if path.is_dir():
        raise ImageFilesError(f"--out {out}: is a folder; give a CSV file name, e.g. "
                              f"{path / 'preds.csv'}")
    if path.exists() and not force:
        raise ImageFilesError(f"--out {out}: exists; pass --force to overwrite it")


def csv_header(k: int) -> list[str]:
    """``path,label_1,score_1,...,label_k,score_k``."""
    return ["path"] + [f"{name}_{i}" for i in range(1, k + 1) for name in ("label", "score")]


def _write_rows(f: IO[str], paths: Sequence[str], labels: Sequence[Sequence[str]],
                scores: np.ndarray) -> None:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(csv_header(scores.shape[1] if scores.ndim == 2 else 0))
    for path, row_labels, row_scores in zip(paths, labels, scores, strict=True):
        cells = [path]
        for label, score in zip(row_labels, row_scores, strict=True):
            cells += [label, f"{float(score):.6f}"]
        writer.writerow(cells)


def write_top_k_csv(out: str | Path, paths: Sequence[str], labels: Sequence[Sequence[str]],
                    scores: np.ndarray, force: bool = False) -> None:
    """One row per image, best class first; ``out`` ``-`` is standard output. A file is
    replaced atomically (a reader never sees half of it), and only with ``force``."""
    if str(out) == STDOUT:
        _write_rows(sys.stdout, paths, labels, scores)
        sys.stdout.flush()
        return
    check_output(out, force)
    with atomic_open(Path(out), "w", newline="") as f:
        _write_rows(f, paths, labels, scores)
