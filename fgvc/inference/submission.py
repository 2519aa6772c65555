"""Submission CSVs: one writer parameterised per competition, every file validated, none
clobbered; and `fgvc submit` through the kaggle package, imported only when submitting."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from fgvc.errors import FgvcError
from fgvc.io.atomic import atomic_open, temp_path
from fgvc.recipes.formats import FORMATS

if TYPE_CHECKING:  # numpy stays out of `fgvc --help` and `fgvc submit`
    from fgvc.inference.predictions import Predictions


class SubmissionError(FgvcError, RuntimeError):
    """A submission would be invalid, would overwrite a file, or could not be sent."""


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

    def validate() -> None:  # the complete file, before it replaces anything
        validate_csv(temp_path(path), fmt, expected_ids or preds.ids, preds.class_ids, top_k)

    try:
        # A temporary file of this process's own; without ``force`` the CSV is linked in only
        # if no other run wrote one since the check above.
        with atomic_open(path, "w", newline="", before_replace=validate,
                         exclusive=not force) as f:
            writer = csv.writer(f)
            writer.writerow(spec.header)
            for image_id, best in zip(preds.ids, preds.top_k(top_k or spec.top_k), strict=True):
                writer.writerow([image_id, " ".join(best)])
    except FileExistsError:
        raise SubmissionError(f"{path} was written by another process meanwhile; pass --force "
                              "to overwrite it") from None
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


def kaggle_api():
    """The authenticated Kaggle API. The credentials are looked for first (each missing or
    broken case is one line, see fgvc/inference/kaggle_auth.py); ``import kaggle``
    authenticates at import time, printing help on failure (kaggle 2.x) or exiting (1.x), so
    its output is captured and it is imported here only."""
    import contextlib
    import io

    from fgvc.inference.kaggle_auth import CredentialsError, find_credentials, scrub

    try:
        creds = find_credentials()
    except CredentialsError as err:
        raise SubmissionError(scrub(str(err))) from None
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            import kaggle
    except ImportError:
        raise SubmissionError("the kaggle package is not installed: pip install kaggle") from None
    except (SystemExit, OSError, ValueError) as err:
        raise SubmissionError(f"Kaggle did not accept the credentials from {creds.source}"
                              f"{f' ({scrub(str(err))})' if str(err) else ''}") from None
    if not getattr(kaggle.api, "_authenticated", True):
        raise SubmissionError(f"Kaggle did not accept the credentials from {creds.source}: the "
                              "token may be expired or revoked, or kaggle.com could not be "
                              "reached to check it")
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
        from fgvc.inference.kaggle_auth import scrub

        raise SubmissionError(f"Kaggle refused or could not be reached for {competition!r}: "
                              f"{scrub(str(err))}") from None
