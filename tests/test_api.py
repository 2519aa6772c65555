"""The Python API on the embedded dataset (shrunk): run, load_run, predict."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import fgvc


def test_import_fgvc_stays_light():
    code = "import sys, fgvc; fgvc.__version__; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_load_run_gives_model_transforms_classes_and_metrics(finished_run):
    run = fgvc.load_run(finished_run)
    assert run.class_ids == ["100", "101", "102", "103"] and run.resolution == 40
    assert not run.model.training
    assert set(run.metrics["evaluation"]) == {"before_adaptation", "after_adaptation"}
    assert [e["stage"] for e in run.metrics["epochs"]] == ["train", "train", "adapt"]
    from PIL import Image

    assert tuple(run.transform(Image.new("RGB", (60, 50))).shape) == (1, 3, 40, 40)


def test_predict_a_split_and_images_agree_with_the_run(finished_run, tiny_data_root):
    from fgvc.inference.predictions import Predictions

    saved = Predictions.load(finished_run / "predictions")
    split = fgvc.predict(finished_run, "test")
    assert split.ids == saved.ids
    np.testing.assert_allclose(split.probs.astype(np.float32), saved.probs.astype(np.float32),
                               atol=1e-3)
    from PIL import Image

    paths = sorted((tiny_data_root / "images" / "test").glob("*.jpg"))[:3]
    by_path = fgvc.predict(finished_run, paths)
    by_image = fgvc.predict(fgvc.load_run(finished_run), [Image.open(p) for p in paths])
    row = {i: k for k, i in enumerate(saved.ids)}
    expected = saved.probs[[row[p.stem] for p in paths]].astype(np.float32)
    np.testing.assert_allclose(by_path.probs, expected, atol=1e-3)
    np.testing.assert_allclose(by_image.probs, by_path.probs, atol=1e-6)
    ten = fgvc.predict(finished_run, paths, crops="ten_crop", resolutions=[40, 48])
    assert ten.probs.shape == (3, 4) and ten.meta["resolutions"] == [40, 48]
    np.testing.assert_allclose(ten.probs.sum(1), 1, atol=1e-5)


def test_run_with_keyword_overrides(tiny_recipe_dict, tmp_path):
    tiny_recipe_dict["stages"] = tiny_recipe_dict["stages"][:1]
    tiny_recipe_dict["evaluate"]["resolutions"] = [32]
    tiny_recipe_dict["submission"] = None
    tiny_recipe_dict["predict"] = None
    run = fgvc.run(tiny_recipe_dict, name="api", stages__train__epochs=1,
                   **{"tracking.tensorboard": False})
    assert run.run_dir.name == "api" and len(run.metrics["epochs"]) == 1
    assert not (run.run_dir / "tensorboard").exists()
    assert (run.run_dir / "report.md").exists()


def test_bad_override_names_the_key(tiny_recipe_dict):
    from fgvc.recipes.schema import SchemaError

    with pytest.raises(SchemaError, match="stages.tarin"):
        fgvc.run(tiny_recipe_dict, stages__tarin__epochs=1)
    with pytest.raises(AttributeError):
        fgvc.no_such_function  # noqa: B018
