"""What ``fgvc datasets`` shows: a dataset's cards, what is on disk, an export, a verification."""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from fgvc.datasets import decode
from fgvc.datasets.base import DatasetIndex
from fgvc.datasets.cards import CARDS
from fgvc.datasets.integrity import FOLLOW_SYMLINKS_HINT, resolved_outside
from fgvc.datasets.registry import get, names
from fgvc.progress import progress


def list_rows() -> list[dict]:
    rows = []
    for name in names():
        card = CARDS.get(name)
        rows.append({"name": name, "title": card.title if card else get(name).summary,
                     "classes": card.classes if card else None,
                     "splits": dict(card.splits) if card else {},
                     "variants": list(card.variants) if card else []})
    return rows


class _Listing:
    """Which files exist, from one directory listing per folder instead of a stat per file
    (``info`` on a 10,000-image dataset stays well under a second)."""

    def __init__(self, root: Path):
        self.root, self.folders = str(root), {}

    def exists(self, rel: str) -> bool:
        if "#" in rel:  # a Parquet row: the file holding it
            return decode.exists(Path(self.root), rel)
        folder, _, name = rel.rpartition("/")
        if folder not in self.folders:
            try:
                self.folders[folder] = {e.name for e in os.scandir(os.path.join(self.root, folder))
                                        if not e.is_dir()}
            except OSError:
                self.folders[folder] = set()
        return name in self.folders[folder]


def info(index: DatasetIndex) -> dict:
    """Counts per split, classes, the files listed but absent on disk, and the splits that
    hold no image (an error: ``empty_split_problems``)."""
    missing = {}
    listing = _Listing(index.root)
    for split, samples in index.splits.items():
        absent = sum(not listing.exists(s.path) for s in samples)
        missing[split] = absent + index.missing.get(split, 0)
    return {
        "name": index.name,
        "root": str(index.root),
        "num_classes": index.num_classes,
        "splits": {k: len(v) for k, v in index.splits.items()},
        "labelled": {k: index.is_labelled(k) for k in index.splits},
        "missing_files": missing,
        "empty_splits": empty_split_problems(index),
        "boxes": len(index.boxes),
        "classes": [{"label": i, "category_id": c, "name": n}
                    for i, (c, n) in enumerate(zip(index.category_ids, index.classes, strict=True))],
    }


def empty_split_problems(index: DatasetIndex) -> list[str]:
    """One line per split without a single image: a folder or list that is empty, or whose
    images were never downloaded, is a broken copy, not a split of 0 images."""
    return [line for split in index.splits
            if (line := empty_split_problem(index, split)) is not None]


def empty_split_problem(index: DatasetIndex, split: str) -> str | None:
    """The line for ``split`` when it holds no image, else ``None``."""
    if len(index.split(split)):
        return None
    listed = index.missing.get(split, 0)
    why = (f"all {listed} image(s) listed for it are absent (never downloaded)" if listed
           else "its folder or list names no image")
    return (f"{index.name} at {index.root}: split {split!r} has no images: {why}; fix: "
            "complete the copy, or give the root that holds it (`fgvc datasets card "
            f"{index.name}` shows the layout)")


def export_split(index: DatasetIndex, split: str, out: TextIO) -> int:
    """CSV ``id,path,label,category_id``; unlabelled rows leave label and category_id empty."""
    writer = csv.writer(out)
    writer.writerow(["id", "path", "label", "category_id"])
    samples = index.split(split)
    for s in samples:
        labelled = s.label >= 0
        writer.writerow([s.image_id, s.path, s.label if labelled else "",
                         index.category_ids[s.label] if labelled else ""])
    return len(samples)


@dataclass
class VerifyReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    too_large: list[tuple[str, str]] = field(default_factory=list)  # over max_image_pixels
    outside: list[tuple[str, str]] = field(default_factory=list)  # (path, where its link leads)
    empty_splits: list[str] = field(default_factory=list)  # one line each
    # Listed in the metadata, absent, already skipped by the adapter (Birdsnap's dead URLs): a
    # warning, an error only with ``strict``.
    not_downloaded: int = 0
    strict: bool = False

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unreadable or self.too_large or self.outside
                    or self.empty_splits or (self.strict and self.not_downloaded))


def verify(index: DatasetIndex, options: decode.DecodeOptions = decode.DEFAULT_OPTIONS,
           strict: bool = False) -> VerifyReport:
    """Decode every image once, as training would (splits such as trainval overlap others);
    images over the pixel limit are reported apart from other unreadable ones, files that
    lead out of the root through a link (``options.follow_symlinks_outside`` off) apart too.
    ``strict``: images the metadata lists but that were never downloaded fail the check."""
    report = VerifyReport(not_downloaded=sum(index.missing.values()), strict=strict,
                          empty_splits=empty_split_problems(index))
    seen: set[str] = set()
    paths = [s.path for samples in index.splits.values() for s in samples]
    for rel in progress(paths, desc=f"verify {index.name}", unit="img"):
        if rel in seen:
            continue
        seen.add(rel)
        report.checked += 1
        if not decode.exists(index.root, rel):
            report.missing.append(rel)
            continue
        target = None if options.follow_symlinks_outside else resolved_outside(index.root, rel)
        if target is not None:
            report.outside.append((rel, target))
            continue
        try:
            decode.open_rgb(index.root, rel, options)
        except decode.BAD_IMAGE_ERRORS as err:
            too_large = isinstance(err, (decode.BadImage, decode.Image.DecompressionBombError))
            (report.too_large if too_large else report.unreadable).append(
                (rel, decode.failure_reason(err)))
    return report


def format_verify(index: DatasetIndex, report: VerifyReport) -> str:
    buf = io.StringIO()
    buf.write(f"{index.name} at {index.root}: {report.checked} image(s) checked, "
              f"{len(report.missing)} missing, {len(report.unreadable)} unreadable, "
              f"{len(report.too_large)} over the pixel limit"
              f"{f', {len(report.outside)} outside the root' if report.outside else ''}\n")
    for line in report.empty_splits:
        buf.write(f"empty split: {line}\n")
    for rel in report.missing:
        buf.write(f"missing: {rel}\n")
    for rel, why in report.unreadable:
        buf.write(f"unreadable: {rel} ({why})\n")
    for rel, why in report.too_large:
        buf.write(f"too large (skipped in training): {rel} ({why})\n")
    for rel, target in report.outside:
        buf.write(f"outside the root: {rel} is a link to {target}; fix: {FOLLOW_SYMLINKS_HINT}\n")
    counts = ", ".join(f"{count} in {split}" for split, count in index.missing.items() if count)
    if counts:
        kind = "error (--strict)" if report.strict else "warning"
        buf.write(f"{kind}: {report.not_downloaded} image(s) listed in the metadata but never "
                  f"downloaded, skipped: {counts}\n")
    return buf.getvalue()


def default_root(name: str) -> Path:
    return Path("datasets") / name
