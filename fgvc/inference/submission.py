"""Submission CSVs: one writer parameterised per competition, every file validated, none
clobbered; and `fgvc submit` through the kaggle package, imported only when submitting."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy stays out of `fgvc --help` and `fgvc submit`
    from fgvc.inference.predictions import Predictions


class SubmissionError(RuntimeError):
    """A submission would be invalid, would overwrite a file, or could not be sent."""


@dataclass(frozen=True)
class SubmissionFormat:
    """A competition's CSV: its header and how many category ids each row lists (best first)."""

    header: tuple[str, str]
    top_k: int
    competition: str | None = None  # the Kaggle slug, for `fgvc submit`


FORMATS: dict[str, SubmissionFormat] = {
    "generic": SubmissionFormat(("id", "predicted"), 1),
    "inaturalist2017": SubmissionFormat(("id", "predicted"), 5, "inaturalist-challenge-at-fgvc-2017"),
    "inaturalist2018": SubmissionFormat(("id", "predicted"), 3, "inaturalist-2018"),
    "inaturalist2019": SubmissionFormat(("id", "predicted"), 1, "inaturalist-2019-fgvc6"),
    "herbarium2019": SubmissionFormat(("Id", "Category"), 1, "herbarium-2019-fgvc6"),
}


def check_writable(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise SubmissionError(f"{path} exists; pass --force to overwrite it")


def write_submission(preds: Predictions, path: Path, fmt: str = "generic",
                     top_k: int | None = None, expected_ids: list[str] | None = None,
                     force: bool = False) -> Path:
    """Write ``preds`` in competition format ``fmt``; validated before it replaces anything.

    ``expected_ids``: the test split's ids (default: the predictions' own), each of which must
    appear exactly once.
    """
    if fmt not in FORMATS:
        raise SubmissionError(f"unknown submission format {fmt!r} (known: {', '.join(FORMATS)})")
    spec = FORMATS[fmt]
    check_writable(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(spec.header)
        for image_id, best in zip(preds.ids, preds.top_k(top_k or spec.top_k), strict=True):
            writer.writerow([image_id, " ".join(best)])
    try:
        validate_csv(tmp, fmt, expected_ids or preds.ids, preds.class_ids, top_k)
    except SubmissionError:
        tmp.unlink()
        raise
    tmp.replace(path)
    return path


def validate_csv(path: Path, fmt: str, expected_ids: list[str], known_classes: list[str],
                 top_k: int | None = None) -> None:
    """Header, every expected id exactly once, no unknown id, only known category ids, and
    exactly as many of them per row as the format (or ``top_k``) asks."""
    spec = FORMATS[fmt]
    want = min(top_k or spec.top_k, len(known_classes))
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0]) != spec.header:
        raise SubmissionError(f"{path}: header {rows[0] if rows else None} != {list(spec.header)}")
    seen: set[str] = set()
    known, expected = set(known_classes), set(expected_ids)
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise SubmissionError(f"{path}:{line}: expected 2 columns, got {row}")
        image_id, predicted = row
        if image_id in seen:
            raise SubmissionError(f"{path}:{line}: id {image_id!r} appears twice")
        if image_id not in expected:
            raise SubmissionError(f"{path}:{line}: unknown id {image_id!r}")
        classes = predicted.split()
        unknown = [c for c in classes if c not in known]
        if unknown or len(classes) != want:
            raise SubmissionError(f"{path}:{line}: expected {want} known category id(s), got "
                                  f"{predicted!r}")
        seen.add(image_id)
    missing = expected - seen
    if missing:
        raise SubmissionError(f"{path}: {len(missing)} test id(s) missing, e.g. {sorted(missing)[:3]}")


def _scrub(text: str) -> str:
    """Never let the Kaggle key reach any output."""
    key = os.environ.get("KAGGLE_KEY")
    return text.replace(key, "***") if key else text


def kaggle_api():
    """The authenticated Kaggle API. ``import kaggle`` authenticates at import time and exits
    the process without credentials, so it is imported here only, with that turned into a
    clear error."""
    try:
        import kaggle
    except ImportError:
        raise SubmissionError("the kaggle package is not installed: pip install kaggle") from None
    except (SystemExit, OSError, ValueError) as err:
        raise SubmissionError(
            "Kaggle credentials not found or invalid: set KAGGLE_USERNAME and KAGGLE_KEY, or put "
            "kaggle.json in ~/.kaggle (or $KAGGLE_CONFIG_DIR)" +
            (f" ({_scrub(str(err))})" if str(err) and not isinstance(err, SystemExit) else "")
        ) from None
    return kaggle.api


def submit(path: Path, competition: str, message: str) -> None:
    """Send ``path`` to a Kaggle competition; its header is checked against the competition's
    format first when fgvc knows that competition."""
    if not path.is_file():
        raise SubmissionError(f"submission file not found: {path}")
    for name, spec in FORMATS.items():
        if spec.competition == competition:
            with path.open(newline="") as f:
                header = tuple(next(csv.reader(f), []))
            if header != spec.header:
                raise SubmissionError(f"{path}: header {list(header)} is not {name}'s "
                                      f"{list(spec.header)}")
    api = kaggle_api()
    try:
        api.competition_submit(file_name=str(path), message=message, competition=competition)
    except Exception as err:  # noqa: BLE001 - network, HTTP and API errors alike
        raise SubmissionError(f"Kaggle refused or could not be reached for {competition!r}: "
                              f"{_scrub(str(err))}") from None
