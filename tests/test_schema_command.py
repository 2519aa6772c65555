"""``fgvc schema``: the recipe's JSON Schema, generated from the dataclasses that validate recipes,
so editors complete and check the same fields ``fgvc validate`` accepts; the shipped recipes
point their editors at the copy in ``recipes/``, which must be current."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
import typing
from pathlib import Path

import jsonschema
import pytest
import yaml

from fgvc.cli import main
from fgvc.recipes.fields import SCHEMA_FILE, json_schema, recipe_classes, schema_text
from fgvc.recipes.recipe import parse_recipe
from fgvc.recipes.schema import SchemaError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "recipes").rglob("*.yaml"))
MODELINE = "# yaml-language-server: $schema="


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_schema_prints_the_json_schema(capsys):
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json_schema()
    assert printed["$schema"].startswith("http://json-schema.org/draft-07")


def _sections_in(hint) -> list[type]:
    """The dataclasses a type hint holds, at any depth (optional, list items, unions)."""
    if dataclasses.is_dataclass(hint):
        return [hint]
    return [cls for arg in typing.get_args(hint) for cls in _sections_in(arg)]


def test_every_section_of_the_schema_has_exactly_the_dataclass_fields():
    defs = json_schema()["definitions"]
    seen: set[str] = set()
    todo = list(recipe_classes())
    while todo:
        cls = todo.pop()
        if cls.__name__ in seen:
            continue
        seen.add(cls.__name__)
        fields = dataclasses.fields(cls)
        assert list(defs[cls.__name__]["properties"]) == [f.name for f in fields], cls.__name__
        assert defs[cls.__name__]["additionalProperties"] is False
        required = [f.name for f in fields if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        assert defs[cls.__name__]["required"] == required, cls.__name__
        todo += [c for hint in typing.get_type_hints(cls).values() for c in _sections_in(hint)]
    assert seen == set(defs), f"definitions not reached from the recipe: {set(defs) - seen}"


def test_the_shipped_schema_file_is_current():
    shipped = REPO / "recipes" / SCHEMA_FILE
    assert shipped.read_text(encoding="utf-8") == schema_text(), (
        f"{shipped} is out of date: regenerate it with "
        f"`fgvc schema --out recipes/{SCHEMA_FILE} --force`")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(REPO / "recipes").as_posix())
def test_every_shipped_recipe_names_the_schema_and_validates_against_it(path, validator):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(MODELINE), f"{path}: first line must be {MODELINE}<file>"
    target = (path.parent / first.removeprefix(MODELINE)).resolve()
    assert target == (REPO / "recipes" / SCHEMA_FILE).resolve(), f"{path}: points at {target}"
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(
        yaml.safe_load(path.read_text(encoding="utf-8")))]
    assert not errors, f"{path}:\n" + "\n".join(errors)


def _quickstart() -> dict:
    return yaml.safe_load((REPO / "recipes/quickstart.yaml").read_text(encoding="utf-8"))


MUTATIONS = {
    "unknown top-level key": lambda d: d.update(evalute={"split": "val"}),
    "unknown dataset key": lambda d: d["dataset"].update(nmae="cub200"),
    "unknown stage key": lambda d: d["stages"][0].update(epochz=3),
    "bad choice": lambda d: d["stages"][0]["optimizer"].update(name="lamb"),
    "bad precision": lambda d: d.update(precision="fp16"),
    "resolution over the bound": lambda d: d["stages"][0].update(resolution=100_000),
    "text for a number": lambda d: d["stages"][1].update(epochs="two"),
    "missing required field": lambda d: d["model"].pop("arch"),
    "unknown dataset": lambda d: d["dataset"].update(name="cub201"),
    "bad adapter option type": lambda d: d["dataset"].update(options={"num_classes": "abc"}),
}


@pytest.mark.parametrize("name", MUTATIONS)
def test_the_json_schema_and_fgvc_refuse_the_same_mistakes(name, validator):
    data = copy.deepcopy(_quickstart())
    parse_recipe(copy.deepcopy(data))  # the base is valid for both
    assert not list(validator.iter_errors(data))
    MUTATIONS[name](data)
    assert list(validator.iter_errors(data)), f"the JSON Schema accepts: {name}"
    with pytest.raises(SchemaError):
        parse_recipe(copy.deepcopy(data))


def test_out_writes_the_file_and_refuses_to_overwrite_it(tmp_path, capsys):
    out = tmp_path / SCHEMA_FILE
    assert main(["schema", "--out", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8")) == json_schema()
    assert f"$schema={SCHEMA_FILE}" in capsys.readouterr().out
    assert main(["schema", "--out", str(out)]) == 2
    assert "already exists (--force overwrites it)" in capsys.readouterr().err
    assert main(["schema", "--out", str(out), "--force"]) == 0


def test_a_copied_recipe_points_at_the_schema_beside_it(tmp_path, capsys):
    out = tmp_path / "mine.yaml"
    assert main(["recipes", "show", "table3/cub200", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8").splitlines()[0] == f"{MODELINE}{SCHEMA_FILE}"


def test_schema_imports_no_torch():
    code = ("import sys, io, contextlib\nfrom fgvc.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['schema'])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
