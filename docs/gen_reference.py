"""The documentation's reference pages, generated from the code at every build (a MkDocs hook).

Each page is rendered from what fgvc itself uses, so a new recipe field, command option, dataset
adapter or architecture appears in the documentation without anyone editing it:

- ``reference/recipe.md``: every recipe field from the dataclasses that validate recipes
  (``fgvc/recipes/fields.py``: type, default, allowed values, what it does);
- ``reference/cli.md``: every command and option from the parser ``fgvc`` runs
  (``fgvc.cli.build_parser``);
- ``reference/datasets.md``: every registered adapter with its typed options, and every dataset
  card (``fgvc/datasets/registry.py``, ``fgvc/datasets/cards.py``);
- ``reference/models.md``: the catalogue (``fgvc/models/catalog.py``) and, per family, the
  module paths each adaptation group resolves to on a network built on the meta device (the
  only page that needs torch: groups are found by tracing the network).

``python docs/gen_reference.py OUT_DIR`` writes the pages to a folder, to read them without
MkDocs. The tests import this file (tests/test_docs_reference.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

PAGES: dict[str, Callable[[], str]] = {}
GENERATED_NOTE = ("<!-- Generated from the code by docs/gen_reference.py at every build: edit the "
                  "code, not this page. -->\n")


def page(path: str) -> Callable[[Callable[[], str]], Callable[[], str]]:
    def register(render: Callable[[], str]) -> Callable[[], str]:
        PAGES[path] = render
        return render

    return register


def _cell(text: object) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


# --- recipe fields ----------------------------------------------------------------------------

@page("reference/recipe.md")
def recipe_page() -> str:
    from fgvc.recipes.fields import recipe_fields, type_text

    lines = [GENERATED_NOTE, "# Recipe fields", "",
             "Every field a recipe accepts, generated from the schema that validates recipes. "
             "`fgvc validate RECIPE` checks a recipe against it and prints the plan; "
             "`fgvc schema` prints the same schema as JSON Schema for your editor "
             "([Recipes](../guide/recipes.md#editor-completion)). Paths are as `--set` takes "
             "them: `stages[].optimizer.lr` is `--set stages.train.optimizer.lr=0.01` (a stage "
             "by name or index).", ""]
    titles = {"run": "Run recipes", "ensemble": "Ensemble recipes (`kind: ensemble`)"}
    for kind, fields in recipe_fields().items():
        lines += [f"## {titles[kind]}", ""]
        sections: dict[str, list] = {}
        for info in fields:
            sections.setdefault(info.section, []).append(info)
        for section, infos in sections.items():
            title = "Top level" if section == "(top level)" else f"`{section}`"
            lines += ["", f"### {title}" if kind == "run" else f"#### {title}", "",
                      "| field | type | default | allowed | what it does |", "|---|---|---|---|---|"]
            for info in infos:
                default = "required" if info.required else _code(info.default)
                lines.append(f"| `{info.path}` | {_cell(type_text(info.hint))} | {_cell(default)} "
                             f"| {_cell(info.allowed)} | {_cell(info.description)} |")
        lines.append("")
    return "\n".join(lines) + "\n"


# --- command line -----------------------------------------------------------------------------

def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand of ``parser``, in the parser's order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def commands(parser: argparse.ArgumentParser | None = None, prefix: str = "fgvc"
             ) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """Every command as (``fgvc datasets info``, its help, its parser), depth first."""
    if parser is None:
        from fgvc.cli import build_parser

        parser = build_parser()
    for name, help_text, sub in _subcommands(parser):
        path = f"{prefix} {name}"
        yield path, help_text, sub
        yield from commands(sub, path)


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options and positional arguments a command takes itself (not its subcommands)."""
    return [a for a in parser._actions
            if not isinstance(a, (argparse._SubParsersAction, argparse._HelpAction))]


def _argument(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    metavar = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
    shown = " ".join(metavar) if isinstance(metavar, tuple) else metavar
    return {"+": f"{shown} ...", "*": f"[{shown} ...]", "?": f"[{shown}]"}.get(action.nargs, shown)


def _default(action: argparse.Action) -> str:
    default = action.default
    if default in (None, False, [], argparse.SUPPRESS) or action.nargs == 0 and default is False:
        return ""
    return " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)


@page("reference/cli.md")
def cli_page() -> str:
    from fgvc.cli import build_parser

    parser = build_parser()
    lines = [GENERATED_NOTE, "# Command line", "",
             "Every command and option, generated from the parser `fgvc` runs. "
             "`fgvc COMMAND --help` prints the same. Every known failure is one line on "
             "standard error with exit status 2.", "", "## `fgvc`", "",
             "| option | argument | default | what it does |", "|---|---|---|---|"]
    lines += _option_rows(parser)
    for path, help_text, sub in commands(parser):
        lines += ["", f"## `{path}`", "", _cell(help_text), "", "```text",
                  sub.format_usage().strip(), "```", ""]
        rows = _option_rows(sub)
        if rows:
            lines += ["| option | argument | default | what it does |", "|---|---|---|---|", *rows]
    return "\n".join(lines) + "\n"


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in options(parser):
        name = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
        help_text = action.help or ""
        if action.choices and action.option_strings:
            help_text += f" (choices: {', '.join(map(str, action.choices))})"
        if getattr(action, "required", False) and action.option_strings:
            help_text = f"**required.** {help_text}"
        rows.append(f"| {name} | {_cell(_code(_argument(action)))} | {_cell(_code(_default(action)))} "
                    f"| {_cell(help_text)} |")
    return rows


# --- datasets ---------------------------------------------------------------------------------

@page("reference/datasets.md")
def datasets_page() -> str:
    from fgvc.datasets import registry
    from fgvc.datasets.cards import CARDS, render_card
    from fgvc.recipes.fields import type_text

    lines = [GENERATED_NOTE, "# Datasets", "",
             "Every dataset adapter (`dataset.name`) with the options it takes "
             "(`dataset.options`), then each dataset's card: where to get it, the layouts read "
             "and the root to give for each, sizes, licence and the paper's figures. "
             "`fgvc datasets list` and `fgvc datasets card NAME` print the same.", "",
             "| `dataset.name` | what it reads | options |", "|---|---|---|"]
    for name in registry.names():
        adapter = registry.get(name)
        opts = ", ".join(f"`{key}` ({type_text(hint)})" for key, hint in adapter.options.items())
        lines.append(f"| [`{name}`](#{name}) | {_cell(adapter.summary)} | {_cell(opts or '-')} |")
    lines += ["", "Labels are 0-based and contiguous: label `i` is the `i`-th of the dataset's own "
              "category ids in ascending order; predictions and submissions use the dataset's "
              "own ids.", "", "## Cards", ""]
    for name in CARDS:
        card = render_card(name).splitlines()
        lines += [f"### {card[0].removeprefix('# ')} {{#{name}}}"]
        lines += [line.replace("## ", "#### ", 1) if line.startswith("## ") else line
                  for line in card[1:]]
    return "\n".join(lines) + "\n"


# --- models -----------------------------------------------------------------------------------

GROUP_TITLES = {"paper": "The paper's networks and their peers", "modern": "Modern backbones",
                "cpu": "CPU-sized networks"}


@page("reference/models.md")
def models_page() -> str:
    from fgvc.models.catalog import ENTRIES

    lines = [GENERATED_NOTE, "# Models", "",
             "`model.arch` takes any timm name, `name.tag` for a pretrained tag, "
             "`hf-hub:org/repo`, `pretrainedmodels:<name>`, or one of fgvc's own networks. The "
             "catalogue below is what `fgvc models list` prints (without importing torch); "
             "`fgvc models show ARCH` resolves the adaptation groups of any name.", ""]
    for group, title in GROUP_TITLES.items():
        lines += [f"## {title}", "", "| arch | family | parameters | resolution | "
                  "normalisation | interpolation | note |", "|---|---|---|---|---|---|---|"]
        for e in (e for e in ENTRIES if e.group == group):
            lines.append(f"| `{e.name}` | {e.family} | {e.params / 1e6:.1f} M | {e.resolution} px "
                         f"| {e.norm} | {e.interpolation} | {_cell(e.note)} |")
        lines.append("")
    lines += adaptation_groups_section()
    return "\n".join(lines) + "\n"


def family_representatives() -> dict[str, str]:
    """The first catalogued network of each family (timm's port where Cadene's is listed too)."""
    from fgvc.models.catalog import ENTRIES

    found: dict[str, str] = {}
    for e in ENTRIES:
        if not e.name.startswith("pretrainedmodels:"):
            found.setdefault(e.family, e.name)
    return found


def adaptation_groups_section() -> list[str]:
    """Per family, the module paths of every adaptation group (built on the meta device: no
    memory, no weights) and the groups `fgvc init` adapts by default."""
    from fgvc.models.show import describe
    from fgvc.workflows.init_recipe import inspect_arch

    lines = ["## Adaptation groups per family", "",
             "What each group of an adapt stage's `trainable` resolves to on one network of "
             "each family, and the groups `fgvc init` chooses (BN networks: the classifier and "
             "the BN before pooling, as the paper; LayerNorm networks: the final norm's affine "
             "parameters instead, plus the position embedding where there is one). "
             "`-` marks a group the family does not have.", "",
             "| family | network | `fgvc init` adapts | classifier | last_bn / last_norm | "
             "last_stage | pos_embed | last_blocks: 1 |", "|---|---|---|---|---|---|---|---|"]
    for family, arch in family_representatives().items():
        groups = describe(arch)["groups"]
        chosen = ", ".join(inspect_arch(arch, 1000).adapt_groups)

        def shown(key: str, groups: dict = groups) -> str:
            value = groups.get(key)
            return ", ".join(f"`{p}`" for p in value) if isinstance(value, list) else "-"

        lines.append(f"| {family} | `{arch}` | {chosen} | {shown('classifier')} | "
                     f"{shown('last_bn')} | {shown('last_stage')} | {shown('pos_embed')} | "
                     f"{shown('last_blocks: 1')} |")
    return lines + [""]


# --- the MkDocs hook --------------------------------------------------------------------------

def on_files(files, config):  # noqa: ANN001, ANN201 - MkDocs' hook signature
    """Add every generated page to the build, as if it were a file under docs/."""
    from mkdocs.structure.files import File

    for path, render in PAGES.items():
        files.append(File.generated(config, path, content=render()))
    return files


def write_pages(out: Path) -> None:
    for path, render in PAGES.items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(), encoding="utf-8")


if __name__ == "__main__":
    write_pages(Path(sys.argv[1] if len(sys.argv) > 1 else "site-reference"))
