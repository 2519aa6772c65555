"""Dataset adapters by name: ``dataset: {name: ...}`` in a recipe looks the reader up here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fgvc.datasets.base import DatasetError, DatasetIndex

Loader = Callable[[Path, dict[str, Any]], DatasetIndex]


@dataclass(frozen=True)
class Adapter:
    """A reader of one layout; ``num_classes`` gives the class count from its options alone,
    so a plan can be shown without reading the data."""

    name: str
    load: Loader
    summary: str
    num_classes: Callable[[dict[str, Any]], int | None]
    options: dict[str, Any]

    def option_problems(self, options: Any) -> list[str]:
        """Each declared option checked against its type hint, like any recipe field; options
        the adapter does not declare are left to the adapter, which refuses unknown ones."""
        from fgvc.recipes.schema import check_value

        if not isinstance(options, dict):
            return check_value(options, dict[str, Any], "dataset.options")
        problems = check_value(options, dict[str, Any], "dataset.options")
        for key, hint in self.options.items():
            if key in options:
                problems += check_value(options[key], hint, f"dataset.options.{key}")
        return problems


_ADAPTERS: dict[str, Adapter] = {}


def register(name: str, summary: str,
             num_classes: int | Callable[[dict[str, Any]], int | None],
             options: dict[str, Any] | None = None) -> Callable[[Loader], Loader]:
    """Register a reader; ``options`` maps each option it takes to its type hint (none: it
    takes no options)."""
    count = num_classes if callable(num_classes) else (lambda _options: num_classes)

    def wrap(load: Loader) -> Loader:
        _ADAPTERS[name] = Adapter(name, load, summary, count, dict(options or {}))
        return load

    return wrap


def _ensure_loaded() -> None:
    # Importing the adapter modules registers them.
    from fgvc.datasets import coco, folders, inat_folders, matlab, parquet, synthetic, textlists  # noqa: F401


def names() -> list[str]:
    _ensure_loaded()
    return sorted(_ADAPTERS)


def get(name: str) -> Adapter:
    _ensure_loaded()
    if name not in _ADAPTERS:
        raise DatasetError(f"unknown dataset {name!r} (known: {', '.join(sorted(_ADAPTERS))})")
    return _ADAPTERS[name]


def load_dataset(name: str, root: str | Path, options: dict[str, Any] | None = None,
                 integrity: str = "strict") -> DatasetIndex:
    """Read a dataset; ``integrity`` (``strict|warn``) is ``fgvc.datasets.integrity``'s policy.
    Declared options are type-checked first, like any recipe field."""
    from fgvc.datasets.integrity import policy

    adapter = get(name)
    problems = adapter.option_problems(options or {})
    if problems:
        raise DatasetError("; ".join(problems))
    with policy(integrity):
        return adapter.load(Path(root), dict(options or {}))
