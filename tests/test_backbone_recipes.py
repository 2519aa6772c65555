"""The transformer quickstart validates and runs end to end (shrunk); the modern transfer
recipes validate with their pretrained tags; the paper's recipes resize bilinearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fgvc.cli import main
from fgvc.recipes.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
PAPER = sorted(p for p in [*REPO.glob("recipes/*.yaml"), *REPO.glob("recipes/table3/*.yaml")]
               if not p.name.startswith(("quickstart", "cub200_")) and "ensemble" not in p.name)
TRANSFER = {"cub200_eva02": ("eva02_base_patch14_448.mim_in22k_ft_in22k_in1k", "fc_norm"),
            "cub200_convnext": ("convnext_base.fb_in22k_ft_in1k_384", "head.norm"),
            "cub200_swin": ("swin_base_patch4_window12_384.ms_in22k_ft_in1k", "norm")}


def test_quickstart_vit_validates_and_runs_shrunk(tiny_data_root, tmp_path, capsys):
    recipe = str(REPO / "recipes/quickstart_vit.yaml")
    assert main(["validate", recipe]) == 0
    plan = capsys.readouterr().out
    assert "last_norm -> fc_norm; pos_embed -> pos_embed" in plan
    sets = [f"dataset.root={tiny_data_root}", "dataset.num_workers=0",
            "dataset.options={num_classes: 4, train_per_class: 6, val_per_class: 3, "
            "test_per_class: 3, min_side: 40, max_side: 64, seed: 3}",
            "model.img_size=32", "stages.train.resolution=32", "stages.adapt.resolution=48",
            "stages.train.epochs=1", "stages.adapt.epochs=1", "evaluate.resolutions=[32, 48]",
            f"output_root={tmp_path / 'runs'}", f"submission.path={tmp_path / 'vit.csv'}"]
    args = ["run", recipe] + [a for s in sets for a in ("--set", s)]
    assert main(args) == 0
    evaluation = json.loads((tmp_path / "runs/quickstart_vit/evaluation.json").read_text())
    assert set(evaluation) >= {"before_adaptation", "after_adaptation"}
    assert (tmp_path / "vit.csv").is_file()


@pytest.mark.parametrize("name", sorted(TRANSFER))
def test_transfer_recipes_validate_with_their_tags(name, capsys):
    arch, last_norm = TRANSFER[name]
    path = REPO / f"recipes/{name}.yaml"
    assert load_recipe(path).model.arch == arch
    assert main(["validate", str(path), "--no-data"]) == 0  # CUB is not on disk here
    assert f"last_norm -> {last_norm}" in capsys.readouterr().out


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_recipes_resize_bilinearly_and_say_so(path):
    assert load_recipe(path).model.interpolation == "bilinear"
    assert "Bilinear resizing, as the authors did" in path.read_text()
