"""Hostile values in recipes: non-finite numbers, integers beyond per-field bounds, control
characters, untyped adapter options and absurdly deep YAML, each refused with its field path."""

from __future__ import annotations

import pytest

from fgvc.cli import main
from fgvc.recipes.recipe import load_recipe, parse_recipe
from fgvc.recipes.schema import SchemaError

BASE = {"name": "x", "dataset": {"name": "synthetic"}, "model": {"arch": "resnet18"},
        "stages": [{"name": "train", "resolution": 64}]}


def problems_with(path: str, value) -> str:
    import copy

    data = copy.deepcopy(BASE)
    target = data
    parts = path.split(".")
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
    target[parts[-1]] = value
    with pytest.raises(SchemaError) as err:
        parse_recipe(data, "r.yaml")
    return str(err.value)


@pytest.mark.parametrize("path,value,expected", [
    ("stages.0.optimizer.lr", float("nan"), "stages[0].optimizer.lr: must be a finite number, got nan"),
    ("stages.0.optimizer.lr", float("inf"), "stages[0].optimizer.lr: must be a finite number, got inf"),
    ("stages.0.optimizer.weight_decay", float("-inf"), "weight_decay: must be a finite number"),
    ("stages.0.schedule.warmup_epochs", float("nan"), "warmup_epochs: must be a finite number"),
    ("stages.0.resolution", 8193, "stages[0].resolution: must be at most 8,192 pixels, got 8193"),
    ("stages.0.batch_size", 2**63, "stages[0].batch_size: must be at most 65,536 images"),
    ("stages.0.epochs", 2**63, "stages[0].epochs: must be at most 100,000 epochs"),
    ("dataset.num_workers", 2**63, "dataset.num_workers: must be at most 1,024 worker processes"),
    ("seed", 2**63, "seed: must be at most 4,294,967,295"),
    ("seed", -1, "seed: must be at least 0"),
    ("evaluate.resolutions", [64, 10**9], "evaluate.resolutions[1]: must be at most 8,192 pixels"),
    ("stages.0.schedule.every", 2**40, "stages[0].schedule.every: must be at most 100,000 epochs"),
    ("checkpoint.every_minutes", 0, "checkpoint.every_minutes: must be > 0 or null, got 0.0"),
    ("name", "evil\n", "name: must not contain control characters ('\\n'), got 'evil\\n'"),
    ("dataset.root", "data\x00", "dataset.root: must not contain control characters"),
    ("dataset.options", {"num_classes": "abc"},
     "dataset.options.num_classes: expected an integer, got 'abc'"),
    ("dataset.options", {"seed": float("nan")}, "dataset.options.seed: must be a finite number"),
])
def test_hostile_values_are_refused_with_the_field_path(path, value, expected):
    assert expected in problems_with(path, value)


def test_every_minutes_accepts_a_number():
    recipe = parse_recipe({**BASE, "checkpoint": {"every_minutes": 30}})
    assert recipe.checkpoint.every_minutes == 30.0


def test_5000_deep_yaml_says_it_is_too_deep(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(SchemaError, match="nested too deeply"):
        load_recipe(path)
    path.write_text("a: " + "[" * 100 + "]" * 100)
    with pytest.raises(SchemaError, match="YAML nested 101 levels deep; a recipe nests at most 64"):
        load_recipe(path)


def test_typed_adapter_options_on_the_command_line(tmp_path, capsys):
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert main(["validate", str(path), "--set", "dataset.options.num_classes=abc"]) == 2
    err = capsys.readouterr().err
    assert "dataset.options.num_classes: expected an integer, got 'abc'" in err
    assert "Traceback" not in err
    assert main(["datasets", "info", "synthetic", "--root", str(tmp_path / "d"),
                 "--option", "num_classes=abc"]) == 2
    assert "dataset.options.num_classes: expected an integer, got 'abc'" in capsys.readouterr().err
