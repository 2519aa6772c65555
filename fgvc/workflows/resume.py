"""Resuming means the same experiment: the recipe a run is resumed with must be the one it was
started with (its ``recipe.yaml``), field for field, unless the changed fields are named with
``--allow-changes``; allowed changes are logged and recorded in ``recipe_changes.jsonl``."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from fgvc.errors import FgvcError
from fgvc.io.atomic import atomic_write
from fgvc.recipes.recipe import Recipe
from fgvc.runfolder import RunFolder

log = logging.getLogger(__name__)


class RecipeChangedError(FgvcError, ValueError):
    """``--resume`` with a recipe that differs from the run's own."""


def load_run_recipe(run_dir: Path) -> Recipe:
    """The recipe a run was started with; a missing or corrupt file is named."""
    return RunFolder(run_dir).read_recipe()


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"stages.train.epochs": 4, ...}``: paths as ``--set`` takes them (stages by name)."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out if data else {prefix[:-1]: {}}
    if isinstance(data, list) and data and all(isinstance(v, dict) and "name" in v for v in data):
        out = {f"{prefix}names": [v["name"] for v in data]}
        for value in data:
            out.update(flatten(value, f"{prefix}{value['name']}."))
        return out
    return {prefix[:-1]: data}


def differences(stored: Recipe, current: Recipe) -> dict[str, tuple[Any, Any]]:
    """Every field whose value differs: path -> (run's value, this recipe's value)."""
    before, after = flatten(stored.to_dict()), flatten(current.to_dict())
    missing = object()
    out = {}
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key, missing), after.get(key, missing)
        if old != new:
            out[key] = (None if old is missing else old, None if new is missing else new)
    return out


def _normalise(field: str, recipe: Recipe) -> str:
    """``stages.0.epochs`` -> ``stages.train.epochs``, as the differences are named."""
    parts = field.split(".")
    if len(parts) > 1 and parts[0] == "stages" and parts[1].lstrip("-").isdigit():
        index = int(parts[1])
        if -len(recipe.stages) <= index < len(recipe.stages):
            parts[1] = recipe.stages[index].name
    return ".".join(parts)


def check_resume(run_dir: Path, recipe: Recipe, allow: list[str]) -> dict[str, tuple[Any, Any]]:
    """Refuse to resume ``run_dir`` with ``recipe`` if they differ outside ``allow``; returns the
    allowed differences."""
    stored = load_run_recipe(run_dir)
    found = differences(stored, recipe)
    allowed = [_normalise(a, recipe) for a in allow]

    def is_allowed(key: str) -> bool:
        return any(key == a or key.startswith(a + ".") for a in allowed)

    refused = {k: v for k, v in found.items() if not is_allowed(k)}
    if refused:
        lines = [f"  - {k}: the run has {_show(old)}, this recipe {_show(new)}"
                 for k, (old, new) in refused.items()]
        raise RecipeChangedError(
            f"--resume: the recipe differs from the one {run_dir} was started with "
            f"({RunFolder(run_dir).recipe_path}):\n" + "\n".join(lines) +
            f"\n  resume with the stored recipe (`fgvc resume {run_dir}`), or name the changes: "
            f"--allow-changes {' '.join(refused)}")
    return found


def _show(value: Any) -> str:
    return "nothing" if value is None else json.dumps(value)


def record_changes(run_dir: Path, changes: dict[str, tuple[Any, Any]]) -> None:
    """Log the allowed changes and append them to the run's ``recipe_changes.jsonl``."""
    if not changes:
        return
    for key, (old, new) in changes.items():
        log.warning("resuming with a changed recipe: %s %s -> %s (--allow-changes)", key,
                    _show(old), _show(new))
    path = RunFolder(run_dir).changes_path
    before = path.read_text(encoding="utf-8") if path.is_file() else ""
    row = {"time": time.strftime("%Y-%m-%d %H:%M:%S"),
           "changes": {k: {"run": old, "now": new} for k, (old, new) in changes.items()}}
    atomic_write(path, before + json.dumps(row) + "\n")
