"""What every dataset module shares from the bottom: ``RawSample``, an entry as a reader finds
it, and ``DatasetError``, what any dataset problem raises. Below both ``base`` (the index built
from raw samples) and ``integrity`` (the checks the index applies to them), which import them
from here; ``fgvc.datasets.base`` re-exports both.
"""

from __future__ import annotations

from dataclasses import dataclass

from fgvc.errors import FgvcError


class DatasetError(FgvcError, RuntimeError):
    """A dataset on disk is missing, incomplete or malformed; the message says what and where."""


class WrongRootError(DatasetError):
    """The root given is not the dataset's, and the message names the folder to give."""


@dataclass(frozen=True)
class RawSample:
    """A sample as the dataset names it: its own category id (``None`` when unlabelled)."""

    path: str
    category_id: str | None
    image_id: str
