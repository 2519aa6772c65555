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
    """Counts per split, classes, and the files listed but absent on disk."""
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
        "boxes": len(index.boxes),
        "classes": [{"label": i, "category_id": c, "name": n}
                    for i, (c, n) in enumerate(zip(index.category_ids, index.classes, strict=True))],
    }


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
    not_downloaded: int = 0  # listed in the metadata, absent, already skipped by the adapter

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unreadable or self.too_large or self.not_downloaded)


def verify(index: DatasetIndex, options: decode.DecodeOptions = decode.DEFAULT_OPTIONS
           ) -> VerifyReport:
    """Decode every image once, as training would (splits such as trainval overlap others);
    images over the pixel limit are reported apart from other unreadable ones."""
    report = VerifyReport(not_downloaded=sum(index.missing.values()))
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
        try:
            decode.open_rgb(index.root, rel, options)
        except decode.BAD_IMAGE_ERRORS as err:
            too_large = isinstance(err, (decode.BadImage, decode.Image.DecompressionBombError))
            (report.too_large if too_large else report.unreadable).append((rel, str(err)))
    return report


def format_verify(index: DatasetIndex, report: VerifyReport) -> str:
    buf = io.StringIO()
    buf.write(f"{index.name} at {index.root}: {report.checked} image(s) checked, "
              f"{len(report.missing)} missing, {len(report.unreadable)} unreadable, "
              f"{len(report.too_large)} over the pixel limit\n")
    for rel in report.missing:
        buf.write(f"missing: {rel}\n")
    for rel, why in report.unreadable:
        buf.write(f"unreadable: {rel} ({why})\n")
    for rel, why in report.too_large:
        buf.write(f"too large (skipped in training): {rel} ({why})\n")
    for split, count in index.missing.items():
        if count:
            buf.write(f"not downloaded (listed in the metadata, skipped): {count} in {split}\n")
    return buf.getvalue()


def default_root(name: str) -> Path:
    return Path("datasets") / name
