"""Dataset adapters by name: ``dataset: {name: ...}`` in a recipe looks the reader up here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fgvc.datasets.base import DatasetError, DatasetIndex
from fgvc.datasets.raw import WrongRootError
from fgvc.suggest import did_you_mean

Loader = Callable[[Path, dict[str, Any]], DatasetIndex]
Markers = Callable[[dict[str, Any]], tuple[str, ...]]


@dataclass(frozen=True)
class Adapter:
    """A reader of one layout; ``num_classes`` gives the class count from its options alone,
    so a plan can be shown without reading the data; ``markers`` (from the options too) are
    the files or folders any of which sits directly under a root of this layout, so that a
    root one level off is recognised (``root_hint``)."""

    name: str
    load: Loader
    summary: str
    num_classes: Callable[[dict[str, Any]], int | None]
    options: dict[str, Any]
    markers: Markers = lambda _options: ()

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
             options: dict[str, Any] | None = None,
             markers: tuple[str, ...] | Markers = ()) -> Callable[[Loader], Loader]:
    """Register a reader; ``options`` maps each option it takes to its type hint (none: it
    takes no options); ``markers``: paths relative to the root that identify it (or a function
    of the options giving them), none for a layout found anywhere below the root."""
    count = num_classes if callable(num_classes) else (lambda _options: num_classes)
    marks = markers if callable(markers) else (lambda _options: tuple(markers))

    def wrap(load: Loader) -> Loader:
        _ADAPTERS[name] = Adapter(name, load, summary, count, dict(options or {}), marks)
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
        raise DatasetError(f"unknown dataset {name!r}{did_you_mean(name, _ADAPTERS)} "
                           f"(known: {', '.join(sorted(_ADAPTERS))})")
    return _ADAPTERS[name]


def load_dataset(name: str, root: str | Path, options: dict[str, Any] | None = None,
                 integrity: str = "strict", follow_symlinks_outside: bool = False
                 ) -> DatasetIndex:
    """Read a dataset; ``integrity`` (``strict|warn``) is ``fgvc.datasets.integrity``'s policy.
    Declared options are type-checked first, like any recipe field. A root one level above or
    below the dataset's is refused with the folder to give instead (``root_hint``); a sample
    that leads out of the root through a symbolic link is refused unless
    ``follow_symlinks_outside`` (``integrity.check_links``)."""
    from fgvc.datasets.integrity import check_links, policy

    adapter = get(name)
    problems = adapter.option_problems(options or {})
    if problems:
        raise DatasetError("; ".join(problems))
    root = Path(root)
    with policy(integrity):
        try:
            index = adapter.load(root, dict(options or {}))
        except WrongRootError:
            raise
        except DatasetError:
            hint = root_hint(adapter, root, dict(options or {}))
            if hint is None:
                raise
            raise WrongRootError(hint) from None
        if not follow_symlinks_outside:
            check_links(index.root, index.splits, f"{name} at {index.root}")
    return index


def root_hint(adapter: Adapter, root: Path, options: dict[str, Any]) -> str | None:
    """The line naming the folder to give when ``root`` holds none of the adapter's markers
    but its parent (a root one level too low) or one of its folders (one level too high)
    does; ``None`` otherwise, and for layouts without markers."""
    markers = adapter.markers(options)
    if not markers or _marker_in(root, markers):
        return None
    here = root.absolute()
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    except OSError:  # unreadable: the parent may still be the answer
        children = []
    for folder, where in [(here.parent, "below"), *((c, "above") for c in children)]:
        marker = _marker_in(folder, markers)
        if marker is not None:
            return (f"{adapter.name}: {root} is one level {where} the dataset's root; pass "
                    f"--root {folder} (dataset.root in a recipe), the folder that holds {marker}")
    return None


def _marker_in(folder: Path, markers: tuple[str, ...]) -> str | None:
    return next((m for m in markers if (folder / m).exists()), None)
