"""Submission CSVs: written from Predictions, validated against the test ids, never clobbered."""

from __future__ import annotations

import csv
from pathlib import Path

from fgvc.predictions import Predictions


class SubmissionError(RuntimeError):
    """A submission would be invalid or would overwrite an existing file."""


def check_writable(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise SubmissionError(f"{path} exists; pass --force to overwrite it")


def write_generic(preds: Predictions, path: Path, top_k: int = 1, force: bool = False) -> Path:
    """``id,predicted`` with up to ``top_k`` category ids, best first, separated by spaces."""
    check_writable(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "predicted"])
        for image_id, best in zip(preds.ids, preds.top_k(top_k), strict=True):
            writer.writerow([image_id, " ".join(best)])
    validate_csv(tmp, ["id", "predicted"], expected_ids=preds.ids, known_classes=preds.class_ids)
    tmp.replace(path)
    return path


def validate_csv(path: Path, header: list[str], expected_ids: list[str],
                 known_classes: list[str]) -> None:
    """Header, every expected id exactly once, no unknown id, only known category ids."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != header:
        raise SubmissionError(f"{path}: header {rows[0] if rows else None} != {header}")
    seen: set[str] = set()
    known = set(known_classes)
    expected = set(expected_ids)
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise SubmissionError(f"{path}:{line}: expected {len(header)} columns, got {row}")
        image_id, predicted = row
        if image_id in seen:
            raise SubmissionError(f"{path}:{line}: id {image_id!r} appears twice")
        if image_id not in expected:
            raise SubmissionError(f"{path}:{line}: unknown id {image_id!r}")
        unknown = [c for c in predicted.split() if c not in known]
        if unknown or not predicted:
            raise SubmissionError(f"{path}:{line}: unknown or empty category ids {unknown}")
        seen.add(image_id)
    missing = expected - seen
    if missing:
        raise SubmissionError(f"{path}: {len(missing)} test id(s) missing, e.g. {sorted(missing)[:3]}")
