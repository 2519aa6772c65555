"""The recipes that ship with fgvc, so ``fgvc run quickstart`` works from any directory.

The YAML files live in the repository's top-level ``recipes/`` (where users look); the wheel
carries them as package data under ``fgvc/_shipped/recipes/`` (setup.py maps that package onto
the top-level folder). An editable install or a source checkout reads the top-level folder itself.

A recipe argument is a file path or a shipped name (``quickstart``, ``table3/cub200``). A path
that does not exist but names a shipped recipe (``recipes/quickstart.yaml`` outside the
checkout, as in an ensemble's ``members``) resolves to the shipped copy. Light: no torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fgvc.recipes.schema import SchemaError
from fgvc.suggest import did_you_mean

_PACKAGE = Path(__file__).resolve().parents[1]  # the installed fgvc/ folder
PACKAGED_DIR = _PACKAGE / "_shipped" / "recipes"  # in a wheel or a non-editable install
CHECKOUT_DIR = _PACKAGE.parent / "recipes"  # editable install or source checkout
SUFFIXES = (".yaml", ".yml")
DESCRIPTION_CHARS = 100
MODELINE = "# yaml-language-server:"  # a shipped recipe's first line: its JSON Schema for editors


class RecipeNotFoundError(SchemaError):
    """A recipe argument that is neither a file nor a shipped name: one line, with a hint."""

    def __init__(self, message: str):
        self.problems = [message]
        ValueError.__init__(self, message)


@dataclass(frozen=True)
class ShippedRecipe:
    name: str  # "quickstart", "table3/cub200"
    path: Path
    description: str  # the first sentence of the file's leading comment


def shipped_dir() -> Path:
    """Where the shipped recipes are: the packaged copy first, else the checkout's folder."""
    for folder in (PACKAGED_DIR, CHECKOUT_DIR):
        if (folder / "quickstart.yaml").is_file():
            return folder
    raise FileNotFoundError(f"fgvc's shipped recipes are missing (looked in {PACKAGED_DIR} and "
                            f"{CHECKOUT_DIR}): reinstall fgvc")


def describe(path: Path) -> str:
    """The first sentence of the recipe's leading comment block, shortened to one line."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith(MODELINE):  # the editor's schema line says nothing to users
            lines.append(line.lstrip("#").strip())
    text = " ".join(line for line in lines if line)
    cut = text.find(". ")
    if cut > 0:
        text = text[:cut + 1]
    if len(text) > DESCRIPTION_CHARS:
        text = text[:DESCRIPTION_CHARS - 3].rsplit(" ", 1)[0].rstrip(",;(") + "..."
    return text


def shipped_recipes() -> dict[str, ShippedRecipe]:
    """Every shipped recipe by name: top-level ones first, then sub-folders (``table3/...``)."""
    root = shipped_dir()
    paths = sorted((p for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file()),
                   key=lambda p: (len(p.relative_to(root).parts), p.relative_to(root).as_posix()))
    out = {}
    for path in paths:
        name = path.relative_to(root).with_suffix("").as_posix()
        out[name] = ShippedRecipe(name, path, describe(path))
    return out


def _as_name(text: str) -> str:
    """``recipes/table3/cub200.yaml``, ``./quickstart.yml`` or ``quickstart`` -> a shipped name."""
    name = text.replace(os.sep, "/").removeprefix("./")
    name = name.removeprefix("recipes/")
    for suffix in SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def shipped_recipe(name: str) -> ShippedRecipe:
    """The shipped recipe called ``name``; an unknown name says which names exist."""
    found = shipped_recipes()
    recipe = found.get(_as_name(name))
    if recipe is None:
        raise RecipeNotFoundError(f"no shipped recipe {name!r}{did_you_mean(_as_name(name), found)}; "
                                  "`fgvc recipes list` shows them all")
    return recipe


def resolve_recipe(recipe: str | os.PathLike) -> Path:
    """A recipe argument to a readable file: an existing path as given, else a shipped name."""
    path = Path(recipe)
    if path.is_file():
        return path
    text = os.fspath(recipe)
    found = shipped_recipes()
    name = _as_name(text)
    if name in found:
        return found[name].path
    if path.is_dir():
        raise RecipeNotFoundError(f"recipe {text!r} is a folder, not a recipe file")
    looks_like_path = "/" in text.replace(os.sep, "/") or path.suffix in SUFFIXES
    if looks_like_path:
        siblings = ([str(p) for p in path.parent.iterdir() if p.suffix in SUFFIXES]
                    if path.parent.is_dir() else [])
        hint = did_you_mean(text, siblings) or did_you_mean(name, found)
        raise RecipeNotFoundError(f"recipe file not found: {text}{hint}; a shipped recipe can be "
                                  "named instead of a path (`fgvc recipes list`)")
    raise RecipeNotFoundError(f"recipe {text!r} is neither a file nor a shipped recipe"
                              f"{did_you_mean(name, found)}; `fgvc recipes list` shows the shipped ones")
