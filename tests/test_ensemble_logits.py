"""Averaging logits (the authors' competition code) over crops and over models, beside
probabilities and log-probabilities: schema, arithmetic, and what the outputs record."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fgvc.errors import EnsembleError
from fgvc.inference.ensemble import combine
from fgvc.inference.predictions import Predictions
from fgvc.inference.tta import combine_crops
from fgvc.recipes.recipe import parse_recipe
from fgvc.recipes.schema import SchemaError
from fgvc.report import crops_title
from fgvc.runfolder import RunFolder
from fgvc.workflows.ensemble_run import run_ensemble

CLASSES = ["10", "20", "30"]


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def member(logits) -> Predictions:
    """Saved predictions as a run writes them: softmax of the logits, in float16."""
    logits = np.asarray(logits, dtype=np.float64)
    ids = [f"img{i}" for i in range(len(logits))]
    return Predictions(ids, CLASSES[:logits.shape[1]], softmax(logits).astype(np.float16),
                       {"model": "m"})


# One image, two classes: one member confidently says class 0, two mildly say class 1.
# Mean probability: class 1 (0.534 > 0.466); mean logit: class 0 ((6.9 - 2 * 1.39) / 3 > 0).
DISAGREEING = [[[6.9, 0.0]], [[0.0, 1.386]], [[0.0, 1.386]]]


def test_crop_logit_averaging_is_mean_logits_then_softmax():
    logits = torch.randn(4, 10, 7, generator=torch.Generator().manual_seed(0)) * 3
    got = combine_crops(logits, "logits")
    assert torch.allclose(got, logits.mean(dim=1).softmax(dim=-1), atol=1e-6)
    crops = torch.tensor(DISAGREEING, dtype=torch.float32).squeeze(1)[None]  # 1 image, 3 crops
    assert combine_crops(crops, "logits").argmax(-1).item() == 0
    assert combine_crops(crops, "probs").argmax(-1).item() == 1


def test_model_logit_averaging_is_weighted_mean_logits_then_softmax(tmp_path):
    rng = np.random.default_rng(0)
    logits = [rng.normal(0, 2, (6, 3)) for _ in range(3)]
    weights = [2.0, 1.0, 0.5]
    expected = softmax(sum(w * z for w, z in zip(weights, logits, strict=True)) / sum(weights))
    members = [(f"m{i}", member(z)) for i, z in enumerate(logits)]
    in_memory = combine(members, weights, how="logits")
    written = combine(members, weights, how="logits", out=tmp_path / "ens")
    for preds in (in_memory, written):
        np.testing.assert_allclose(preds.probs.astype(np.float64), expected, atol=2e-3)
        assert preds.meta["combine"] == "logits"
    assert json.loads((tmp_path / "ens" / "meta.json").read_text())["combine"] == "logits"


def test_model_logit_averaging_differs_from_probability_averaging():
    members = [(f"m{i}", member(z)) for i, z in enumerate(DISAGREEING)]
    by_logits = combine(members, how="logits").probs.astype(np.float64)
    by_probs = combine(members, how="probs").probs.astype(np.float64)
    np.testing.assert_allclose(by_logits, softmax(np.mean(DISAGREEING, axis=0)), atol=2e-3)
    assert by_logits.argmax() == 0 and by_probs.argmax() == 1


def test_unknown_combine_is_one_clear_line():
    with pytest.raises(EnsembleError, match=r"combine: expected one of probs, log_probs, logits, "
                                            r"got 'logit' \(did you mean 'logits'\?\)"):
        combine([("a", member([[1.0, 0.0]]))], how="logit")


def ensemble_recipe(tmp_path, combine_how, paths) -> dict:
    return {"name": "ens", "kind": "ensemble", "output_root": str(tmp_path / "runs"),
            "members": [{"predictions": str(p)} for p in paths], "combine": combine_how,
            "submission": None}


def test_schema_accepts_logits_and_suggests_it(tmp_path, tiny_recipe_dict):
    assert parse_recipe(ensemble_recipe(tmp_path, "logits", ["a", "b"])).combine == "logits"
    with pytest.raises(SchemaError, match=r"combine: expected one of 'probs', 'log_probs', "
                                          r"'logits', got 'logit' \(did you mean 'logits'\?\)"):
        parse_recipe(ensemble_recipe(tmp_path, "logit", ["a", "b"]))
    for section in ("evaluate", "predict"):
        data = {**tiny_recipe_dict, section: {**tiny_recipe_dict[section], "average": "logit"}}
        with pytest.raises(SchemaError, match=rf"{section}.average: expected one of 'probs', "
                                              r"'logits', got 'logit' \(did you mean 'logits'\?\)"):
            parse_recipe(data)


def test_ensemble_run_records_logit_averaging(tmp_path):
    paths = [member(z).save(tmp_path / f"m{i}") for i, z in enumerate(DISAGREEING)]
    recipe = parse_recipe(ensemble_recipe(tmp_path, "logits", paths))
    folder = RunFolder(run_ensemble(recipe))
    preds = Predictions.load(folder.predictions_dir)
    assert preds.meta["combine"] == "logits" and preds.probs.astype(float).argmax() == 0
    assert "the mean of their logits, then softmax (`combine: logits`)" in (
        folder.report_path.read_text())
    assert json.loads(folder.summary_path.read_text())["combine"] == "logits"


def test_report_names_how_crops_were_combined():
    assert crops_title("ten_crop", "logits") == "10 crops, logits averaged"
    assert crops_title("center_flip", "probs") == "centre crop + flip, probs averaged"
    assert crops_title("center", "logits") == "single centre crop"  # one crop: nothing averaged
    assert crops_title("ten_crop") == "10 crops"  # predictions of older runs record no average
