"""fgvc: fine-grained visual classification with the FixRes two-stage recipe.

The Python API (``fgvc.run``, ``fgvc.load_run``, ``fgvc.predict``; see fgvc/api.py) is imported
on first use, so ``import fgvc`` and the command line stay light (no torch until needed).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Run", "__version__", "export", "load_run", "predict", "run"]
_API = ("Run", "export", "load_run", "predict", "run")


def __getattr__(name: str) -> Any:
    if name in _API:
        from fgvc import api

        return getattr(api, name)
    raise AttributeError(f"module 'fgvc' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API (imported lazily, so absent from the module's globals) and the rest."""
    return sorted({*globals(), *__all__})
