"""Dataset adapters: each reads one on-disk layout into a ``DatasetIndex``."""

from fgvc.datasets.base import UNLABELLED, DatasetError, DatasetIndex, Sample
from fgvc.datasets.registry import load_dataset

__all__ = ["UNLABELLED", "DatasetError", "DatasetIndex", "Sample", "load_dataset"]
