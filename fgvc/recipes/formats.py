"""The competitions' submission CSV formats a recipe's ``submission.format`` names: each one's
header and how many category ids a row lists. Plain data, so recipe checking reads it without
the writers (fgvc/inference/submission.py, which validates and writes the files).
"""

from __future__ import annotations

from dataclasses import dataclass


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
