"""A stage's albumentations pipeline: inline and from a file saved with ``A.save``, applied after
(or before) fgvc's crop, seeded per sample so runs and resumed runs are bit-identical, with a
warning for a transform that crops or resizes and one line for a missing extra or a bad
transform."""

from __future__ import annotations

import copy
import multiprocessing
import os
import signal
import sys

import numpy as np
import pytest
import torch
import yaml

from fgvc.cli import main
from fgvc.errors import RecipeError
from fgvc.transforms import (
    AfterLoad,
    DataConfig,
    FastTrain,
    albumentations_step,
    albumentations_warnings,
    loader_transform,
)

A = pytest.importorskip("albumentations")

KAGGLE = A.Compose([A.HorizontalFlip(p=0.5),
                    A.Affine(translate_percent=(-0.06, 0.06), scale=(0.9, 1.1), rotate=(-15, 15),
                             p=1.0),
                    A.HueSaturationValue(p=1.0),
                    A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(0.2, 0.3),
                                    hole_width_range=(0.2, 0.3), p=1.0)])


def inline() -> dict:
    """The pipeline as a recipe holds it: ``A.to_dict`` through YAML (tuples become lists)."""
    return yaml.safe_load(yaml.safe_dump(A.to_dict(KAGGLE)))


def one_stage(recipe: dict, block: dict | None, epochs: int = 2) -> dict:
    recipe = copy.deepcopy(recipe)
    recipe["stages"] = recipe["stages"][:1]
    recipe["stages"][0]["epochs"] = epochs
    if block is not None:
        recipe["stages"][0]["albumentations"] = block
    recipe["predict"] = recipe["submission"] = None
    recipe["evaluate"]["resolutions"] = [32]
    return recipe


def write(tmp_path, data: dict, name: str = "recipe.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "train.pt", weights_only=True)["model"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- the transform --------------------------------------------------------------------------------


@pytest.fixture
def rel(tiny_data_root) -> str:
    """A training image of the tiny dataset."""
    from conftest import TINY_OPTIONS

    from fgvc.datasets import load_dataset

    return load_dataset("synthetic", tiny_data_root, TINY_OPTIONS).split("train")[0].path


def test_after_crop_is_the_pipeline_seeded_from_torch_on_fgvcs_own_crop(tiny_data_root, rel):
    step = albumentations_step(inline(), "after_crop", 32)
    plain, augmented = FastTrain(32, DataConfig()), loader_transform("train", 32, DataConfig(),
                                                                     albumentations=step)
    assert isinstance(augmented, AfterLoad)
    torch.manual_seed(5)
    crop = plain.load(tiny_data_root, rel)
    seed = int(torch.randint(0, 2**31 - 1, ()))  # the one draw the step takes after the crop
    torch.manual_seed(5)
    out = augmented.load(tiny_data_root, rel)
    expected = A.from_dict(inline())
    expected.set_random_seed(seed)
    want = expected(image=crop.permute(1, 2, 0).numpy())["image"]
    assert out.shape == crop.shape == (3, 32, 32) and out.dtype == torch.uint8
    assert not torch.equal(out, crop)  # fgvc's crop is there, augmented
    assert np.array_equal(out.permute(1, 2, 0).numpy(), want)
    torch.manual_seed(5)
    assert torch.equal(augmented.load(tiny_data_root, rel), out)  # same seed, same image


def test_before_crop_runs_on_the_decoded_image_then_fgvcs_crop(tiny_data_root, rel):
    seen = []
    step = albumentations_step(inline(), "before_crop", 32)
    real = step.array
    step.array = lambda image: seen.append(image.shape) or real(image)
    out = loader_transform("train", 32, DataConfig(), albumentations=step).load(tiny_data_root,
                                                                                rel)
    assert out.shape == (3, 32, 32) and seen and min(seen[0][:2]) >= 40  # the whole image


def test_a_resizing_transform_is_warned_about_by_name():
    block = A.to_dict(A.Compose([A.HorizontalFlip(),
                                 A.OneOf([A.RandomResizedCrop((32, 32)), A.Blur()])]))
    warnings = albumentations_warnings(albumentations_step(block, "after_crop", 32))
    assert len(warnings) == 1 and "RandomResizedCrop" in warnings[0]
    assert "object size" in warnings[0]
    assert albumentations_warnings(albumentations_step(inline(), "after_crop", 32)) == []


@pytest.mark.parametrize(("transform", "says"), [
    ({"__class_fullname__": "HorizontalFlp"},
     "HorizontalFlp: unknown transform 'HorizontalFlp' (did you mean 'HorizontalFlip'?)"),
    ({"__class_fullname__": "HorizontalFlip", "pp": 1}, "HorizontalFlip has no argument(s) pp"),
    ({"__class_fullname__": "GaussNoise", "std_range": "x"},
     "cannot build GaussNoise: std_range: Input should be a valid tuple"),
    ({"__class_fullname__": "Resize", "height": 16, "width": 16, "p": 1},
     "Resize turns fgvc's 32 x 32 crop into 16 x 16"),
])
def test_a_bad_transform_is_one_line_naming_it(transform, says):
    block = {"transform": {"__class_fullname__": "Compose", "transforms": [transform]}}
    with pytest.raises(RecipeError) as err:
        albumentations_step(block, "after_crop", 32)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_the_missing_extra_is_one_line_saying_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "albumentations", None)  # import fails as if absent
    with pytest.raises(RecipeError) as err:
        albumentations_step(inline(), "after_crop", 32)
    assert "pip install 'fgvc[albumentations]'" in str(err.value)
    assert "\n" not in str(err.value)


# -- recipes, end to end --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, tiny_data_root):
    """An uninterrupted run with the pipeline inline (loader workers: 2)."""
    from conftest import tiny_recipe

    tmp = tmp_path_factory.mktemp("albu")
    recipe = one_stage(tiny_recipe(tiny_data_root, tmp), {"pipeline": inline()})
    recipe["dataset"]["num_workers"] = 2
    assert main(["run", write(tmp, recipe)]) == 0
    return weights(tmp / "runs" / "tiny")


def test_inline_and_saved_pipelines_train_identically_and_differ_from_none(
        tiny_recipe_dict, tmp_path, straight_run, capsys):
    saved = tmp_path / "kaggle.json"
    A.save(KAGGLE, str(saved))
    recipe = one_stage(tiny_recipe_dict, {"pipeline": str(saved)})  # one loading process
    assert main(["run", write(tmp_path, recipe)]) == 0
    assert same(weights(tmp_path / "runs" / "tiny"), straight_run)

    plain = one_stage(tiny_recipe_dict, None)
    plain["name"] = "plain"
    assert main(["run", write(tmp_path, plain, "plain.yaml")]) == 0
    assert not same(weights(tmp_path / "runs" / "plain"), straight_run)


def test_yaml_file_before_crop_and_the_plan_line(tiny_recipe_dict, tmp_path, capsys, caplog):
    saved = tmp_path / "resizing.yaml"
    A.save(A.Compose([A.SmallestMaxSize(max_size=48), A.CLAHE(p=1.0)]), str(saved),
           data_format="yaml")
    recipe = one_stage(tiny_recipe_dict, {"pipeline": str(saved), "position": "before_crop"},
                       epochs=1)
    path = write(tmp_path, recipe)
    assert main(["validate", path, "--no-data"]) == 0
    out = capsys.readouterr().out
    assert f"albumentations ({saved}, before crop): SmallestMaxSize, CLAHE" in out
    assert "warning: albumentations transform SmallestMaxSize crops or resizes" in out
    with caplog.at_level("WARNING"):
        assert main(["run", path]) == 0
    assert "SmallestMaxSize crops or resizes" in caplog.text


def test_sigterm_mid_epoch_then_resume_is_bit_identical(tiny_recipe_dict, tmp_path, monkeypatch,
                                                        capsys, straight_run):
    import fgvc.engine.loop as loop

    recipe = one_stage(tiny_recipe_dict, {"pipeline": inline()})
    recipe["dataset"]["num_workers"] = 2
    path = write(tmp_path, recipe)
    real_set_lr, calls = loop.set_lr, {"n": 0}

    def set_lr_then_signal(optimizer, lr):
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 2, its 2nd step: to every process, as SLURM sends it
            for worker in multiprocessing.active_children():
                os.kill(worker.pid, signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        real_set_lr(optimizer, lr)

    monkeypatch.setattr(loop, "set_lr", set_lr_then_signal)
    assert main(["run", path]) == 128 + signal.SIGTERM
    run_dir = tmp_path / "runs" / "tiny"
    state = torch.load(run_dir / "checkpoints" / "train_last.pt", weights_only=True)
    assert state["progress"]["epoch_progress"]["batches"] == 2  # stopped mid-epoch
    monkeypatch.setattr(loop, "set_lr", real_set_lr)
    assert main(["resume", str(run_dir)]) == 0
    assert same(weights(run_dir), straight_run)


@pytest.mark.parametrize(("pipeline", "says"), [
    ({"transform": {"__class_fullname__": "Compose",
                    "transforms": [{"__class_fullname__": "ShiftScaleRotat"}]}},
     "stage train: albumentations.pipeline: albumentations cannot build ShiftScaleRotat"),
    ("missing.json", "cannot read the pipeline file 'missing.json'"),
])
def test_cli_says_a_bad_pipeline_in_one_line(tiny_recipe_dict, tmp_path, capsys, pipeline, says):
    path = write(tmp_path, one_stage(tiny_recipe_dict, {"pipeline": pipeline}))
    assert main(["validate", path, "--no-data"]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_without_the_extra_says_how_to_install(tiny_recipe_dict, tmp_path, capsys,
                                                   monkeypatch):
    monkeypatch.setitem(sys.modules, "albumentations", None)
    path = write(tmp_path, one_stage(tiny_recipe_dict, {"pipeline": inline()}))
    assert main(["run", path]) == 2
    err = capsys.readouterr().err
    assert "pip install 'fgvc[albumentations]'" in err and "Traceback" not in err


def test_an_adapt_stage_with_a_pipeline_must_turn_its_cache_off(tiny_recipe_dict):
    from fgvc.recipes.recipe import parse_recipe
    from fgvc.recipes.schema import SchemaError

    tiny_recipe_dict["stages"][1]["albumentations"] = {"pipeline": inline()}
    with pytest.raises(SchemaError, match="adapt_cache_gb: 0"):
        parse_recipe(tiny_recipe_dict)
    tiny_recipe_dict["stages"][1]["adapt_cache_gb"] = 0
    assert parse_recipe(tiny_recipe_dict).stages[1].albumentations.position == "after_crop"
