"""The documentation's reference pages are generated from the code (docs/gen_reference.py, a
MkDocs hook): they list every recipe field, every command and option, every dataset adapter and
card, and every catalogued architecture, compared here with the schema, the parser, the
registry and the catalogue themselves."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import re
import typing
from pathlib import Path

import pytest
import yaml

from fgvc.cli import build_parser
from fgvc.recipes.fields import recipe_classes, recipe_fields

REPO = Path(__file__).resolve().parents[1]


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_reference", REPO / "docs/gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


# --- recipe fields ----------------------------------------------------------------------------

def _declared_paths(cls: type, prefix: str = "") -> list[str]:
    """Every field path of a recipe class, read straight from the dataclasses."""
    out = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        path = f"{prefix}{f.name}"
        out.append(path)
        inner = _section(hint)
        if inner is not None:
            listed = typing.get_origin(hint) is list or any(
                typing.get_origin(a) is list for a in typing.get_args(hint))
            out += _declared_paths(inner, f"{path}[]." if listed else f"{path}.")
    return out


def _section(hint) -> type | None:
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        found = _section(arg)
        if found is not None:
            return found
    return None


@pytest.fixture(scope="module")
def recipe_page() -> str:
    return gen.recipe_page()


def test_the_recipe_page_lists_every_field_of_the_schema(recipe_page):
    run, ensemble = recipe_classes()
    run_part, ensemble_part = recipe_page.split("## Ensemble recipes", 1)
    for part, cls in ((run_part, run), (ensemble_part, ensemble)):
        rows = re.findall(r"^\| `([^`]+)` \|", part, re.M)
        assert sorted(rows) == sorted(_declared_paths(cls)), cls.__name__
        assert len(rows) == len(set(rows)), f"{cls.__name__}: a field is listed twice"


def test_every_recipe_field_says_what_it_does_its_type_and_its_default(recipe_page):
    missing = [f"{kind}: {info.path}" for kind, infos in recipe_fields().items()
               for info in infos if not info.description]
    assert not missing, ("recipe fields without a description (add one to DESCRIPTIONS in "
                         "fgvc/recipes/fields.py or a comment on the field):\n" + "\n".join(missing))
    row = next(line for line in recipe_page.splitlines() if line.startswith("| `stages[].optimizer.lr`"))
    cells = [c.strip() for c in row.strip("|").split(" | ")]
    assert cells[1] == "number" and cells[2] == "`0.1`"
    assert "must be > 0" in cells[3] and "at most 1,000" in cells[3]
    choices = next(line for line in recipe_page.splitlines() if line.startswith("| `precision`"))
    assert "`auto`, `fp32`, `bf16`" in choices
    trainable = next(line for line in recipe_page.splitlines() if line.startswith("| `stages[].trainable`"))
    assert "train: all; adapt: [classifier, last_bn]" in trainable


# --- command line -----------------------------------------------------------------------------

def _parser_options() -> dict[str, list[str]]:
    """Every command path and its options and positionals, walked from the parser."""
    found: dict[str, list[str]] = {}

    def walk(node: argparse.ArgumentParser, path: str) -> None:
        names = []
        for action in node._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction):
                names += action.option_strings or [action.dest]
        found[path] = names

    walk(build_parser(), "fgvc")
    return found


def test_the_cli_page_lists_every_command_and_option():
    page = gen.cli_page()
    sections = dict(re.findall(r"^## `(fgvc[^`]*)`\n(.*?)(?=^## |\Z)", page, re.M | re.S))
    expected = _parser_options()
    assert set(sections) == set(expected)
    for command, names in expected.items():
        for name in names:
            assert f"`{name}`" in sections[command], f"{command}: {name} is not on the page"
    assert "fgvc schema" in sections and "`--out`" in sections["fgvc schema"]


def test_a_new_option_appears_on_the_cli_page(monkeypatch):
    """Generated, not copied: an option added to the parser is on the page at the next build."""
    import fgvc.cli

    real = fgvc.cli.build_parser

    def with_extra():
        parser = real()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices["run"].add_argument("--brand-new", help="an option added today")
        return parser

    monkeypatch.setattr(fgvc.cli, "build_parser", with_extra)
    assert "| `--brand-new` |" in gen.cli_page()


# --- datasets and models ----------------------------------------------------------------------

def test_the_datasets_page_lists_every_adapter_its_options_and_every_card():
    from fgvc.datasets import registry
    from fgvc.datasets.cards import CARDS

    page = gen.datasets_page()
    for name in registry.names():
        row = next((ln for ln in page.splitlines() if ln.startswith(f"| [`{name}`]")), None)
        assert row is not None, f"adapter {name} is not on the page"
        for option in registry.get(name).options:
            assert f"`{option}`" in row, f"{name}: option {option} is not on the page"
    for name, card in CARDS.items():
        assert f"### {card.title} {{#{name}}}" in page
        for root in card.variants.values():
            assert gen._cell(root) in page


def test_the_models_page_lists_the_catalogue(monkeypatch):
    from fgvc.models.catalog import ENTRIES

    monkeypatch.setattr(gen, "adaptation_groups_section", lambda: [])
    page = gen.models_page()
    for entry in ENTRIES:
        assert f"| `{entry.name}` | {entry.family} |" in page


def test_the_models_page_resolves_each_familys_groups(monkeypatch):
    """The groups are resolved on networks built on the meta device (one per family)."""
    monkeypatch.setattr(gen, "family_representatives",
                        lambda: {"ResNet": "resnet50", "ViT": "vit_base_patch16_224"})
    lines = gen.adaptation_groups_section()
    resnet = next(ln for ln in lines if ln.startswith("| ResNet |"))
    vit = next(ln for ln in lines if ln.startswith("| ViT |"))
    assert "`layer4.2.bn3`" in resnet and "classifier, last_bn |" in resnet and "| - |" in resnet
    assert "`pos_embed`" in vit and "classifier, last_norm, pos_embed" in vit


def test_every_family_in_the_catalogue_has_a_representative():
    from fgvc.models.catalog import ENTRIES

    families = {e.family for e in ENTRIES}
    assert set(gen.family_representatives()) == families


# --- the site ---------------------------------------------------------------------------------

def _nav_targets(items) -> list[str]:
    out = []
    for item in items:
        target = next(iter(item.values())) if isinstance(item, dict) else item
        out += _nav_targets(target) if isinstance(target, list) else [target]
    return out


def test_the_navigation_holds_every_page_and_only_pages_that_exist():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    targets = _nav_targets(config["nav"])
    written = {p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md")}
    generated = set(gen.PAGES)
    assert not written & generated, "a generated page also exists as a file under docs/"
    assert set(targets) == written | generated, (
        f"not in the nav: {sorted((written | generated) - set(targets))}; "
        f"in the nav but missing: {sorted(set(targets) - written - generated)}")
    assert "architecture.md" in targets and "export.md" in targets
    assert config["hooks"] == ["docs/gen_reference.py"]


def test_the_hook_adds_the_generated_pages(monkeypatch):
    pytest.importorskip("mkdocs")
    from mkdocs.config import load_config
    from mkdocs.structure.files import Files

    for name in list(gen.PAGES):
        monkeypatch.setitem(gen.PAGES, name, lambda name=name: f"# {name}\n")
    config = load_config(str(REPO / "mkdocs.yml"))
    # MkDocs names the hook that generated a file while it runs the hook's event.
    monkeypatch.setattr(config.plugins, "_current_plugin", "gen_reference", raising=False)
    files = gen.on_files(Files([]), config)
    assert sorted(f.src_uri for f in files) == sorted(gen.PAGES)
    assert all(f.content_string.startswith("# reference/") for f in files)
