"""The model zoo: a factory, weight loading and the adaptation groups of each architecture.

Imported on first use (module ``__getattr__``), so ``fgvc.models.catalog`` (``fgvc models
list``) reads its table without importing torch or timm.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "GroupError": "fgvc.models.groups",
    "WeightsError": "fgvc.models.weights",
    "create_model": "fgvc.models.factory",
    "data_config": "fgvc.models.factory",
    "is_known_arch": "fgvc.models.names",
    "load_weights": "fgvc.models.weights",
    "resolve_groups": "fgvc.models.groups",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'fgvc.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
