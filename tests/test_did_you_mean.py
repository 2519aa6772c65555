"""Misspelt stage names get a suggestion: in `--set stages.<name>.x` and in `recipe.stage`."""

from __future__ import annotations

from pathlib import Path

import pytest

from fgvc.recipes.recipe import load_recipe
from fgvc.recipes.schema import SchemaError

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"


@pytest.mark.parametrize("key,suggestion", [("stages.adpat.resolution=96", "adapt"),
                                            ("stages.trian.epochs=2", "train")])
def test_set_with_a_misspelt_stage_name_suggests_the_stage(key, suggestion):
    with pytest.raises(SchemaError) as err:
        load_recipe(QUICKSTART, [key])
    stage = key.split(".")[1]
    assert (f"stages.{stage}: no item {stage!r} in a list of 2 (did you mean {suggestion!r}?)"
            in str(err.value))


def test_set_by_stage_name_and_index_still_work():
    recipe = load_recipe(QUICKSTART, ["stages.adapt.epochs=3", "stages.0.epochs=4"])
    assert recipe.stage("adapt").epochs == 3
    assert recipe.stage("train").epochs == 4
    with pytest.raises(SchemaError, match=r"stages\.7: no item '7' in a list of 2$"):
        load_recipe(QUICKSTART, ["stages.7.epochs=1"])


def test_recipe_stage_refuses_a_misspelt_name():
    recipe = load_recipe(QUICKSTART)
    with pytest.raises(ValueError, match=r"unknown stage 'adpat' \(did you mean 'adapt'\?\) "
                                         r"\(stages: train, adapt\)"):
        recipe.stage("adpat")
