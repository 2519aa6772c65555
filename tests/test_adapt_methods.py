"""Label-free adaptation (bn_stats, frechet) and the authors' official preset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fgvc.engine.checkpoint import load_checkpoint
from fgvc.engine.stage import run_stage
from fgvc.recipes.recipe import parse_recipe
from tests.test_adapt_freezing import changed_keys, make_context, snapshot

LAST_BNS = ("layer4.0.bn2.", "layer4.0.downsample.2.")  # test_resnet: both feed the pooling


def test_bn_stats_changes_only_adapted_bn_statistics_without_labels(tiny_recipe_dict, tmp_path):
    adapt = tiny_recipe_dict["stages"][1]
    adapt.update(method="bn_stats", data_split="test", bn_momentum=None)  # test split: no labels
    ctx = make_context(tiny_recipe_dict, tmp_path, ["classifier", "last_bn"])
    assert not ctx.index.is_labelled("test")
    before = snapshot(ctx.model)
    run_stage(ctx, ctx.recipe.stage("adapt"))
    after = snapshot(ctx.model)
    changed = changed_keys(before, after)
    stats = {k for k in before if k.startswith(LAST_BNS)
             and k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert changed == stats  # nothing else, not even the classifier or the BN's affine
    details = json.loads((ctx.run_dir / "adapt_bn_stats.json").read_text())
    assert details["split"] == "test" and details["images"] == len(ctx.index.split("test"))
    assert (ctx.run_dir / "checkpoints" / "adapt.pt").exists()


def test_frechet_fit_recovers_known_parameters():
    from scipy.stats import genextreme

    from fgvc.analysis.frechet import fit_frechet

    rng = np.random.default_rng(0)
    for mu, sigma in ((2.0, 0.5), (0.8, 0.15)):
        # scipy's genextreme with shape c = -xi is the paper's Fréchet law.
        draws = genextreme(c=-0.3, loc=mu, scale=sigma).rvs(40_000, random_state=rng)
        values = np.concatenate([draws, np.zeros(8_000)])  # zeros are excluded from the fit
        fit = fit_frechet(rng.permutation(values))
        assert fit.mu == pytest.approx(mu, rel=0.02)
        assert fit.sigma == pytest.approx(sigma, rel=0.03)
        assert fit.zeros == pytest.approx(8_000 / 48_000, abs=1e-9)


def test_frechet_map_sends_one_fit_onto_the_other():
    from scipy.stats import genextreme

    from fgvc.analysis.frechet import equalise, fit_frechet

    test = genextreme(c=-0.3, loc=1.0, scale=0.2).rvs(30_000, random_state=1)
    ref = genextreme(c=-0.3, loc=3.0, scale=0.9).rvs(30_000, random_state=2)
    f_test, f_ref = fit_frechet(test), fit_frechet(ref)
    mapped = fit_frechet(equalise(test, f_test, f_ref))
    assert mapped.mu == pytest.approx(f_ref.mu, rel=1e-3)
    assert mapped.sigma == pytest.approx(f_ref.sigma, rel=1e-3)


def test_frechet_stage_persists_through_checkpoint_and_predict(tiny_recipe_dict, tmp_path):
    from fgvc.engine.adapt_methods import PooledAffineMap
    from fgvc.inference.predictions import Predictions
    from fgvc.workflows.pipeline import predict_run, run_recipe

    tiny_recipe_dict["stages"][1]["method"] = "frechet"
    run_dir = run_recipe(parse_recipe(tiny_recipe_dict))
    fitted = json.loads((run_dir / "adapt_frechet.json").read_text())
    assert fitted["reference"]["resolution"] == 32 and fitted["test"]["resolution"] == 48
    state = load_checkpoint(run_dir / "checkpoints" / "adapt.pt")["model"]
    params = state["global_pool.frechet_params"].tolist()
    assert params == pytest.approx([fitted["test"]["mu"], fitted["test"]["sigma"],
                                    fitted["reference"]["mu"], fitted["reference"]["sigma"]])
    # Evaluation after the stage used the map: accuracy at 48 px is recorded after adaptation.
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert "48" in evaluation["after_adaptation"]
    # A fresh process predicting from the saved run reinstalls the map: same probabilities.
    saved = Predictions.load(run_dir / "predictions")
    out, again = predict_run(run_dir, [], tmp_path / "again")
    assert np.array_equal(np.asarray(saved.probs), np.asarray(again.probs))
    # ... and without the map the probabilities differ, so the map really is in the path.
    from fgvc.models import create_model

    model = create_model(parse_recipe(tiny_recipe_dict).model, 4)
    model.load_state_dict({k: v for k, v in state.items() if "frechet" not in k})
    assert not isinstance(model.global_pool, PooledAffineMap)
    x = torch.rand(2, 3, 48, 48)
    model.eval()
    from fgvc.engine.adapt_methods import load_model_state

    plain = model(x)
    load_model_state(model, state)
    assert isinstance(model.global_pool, PooledAffineMap)
    assert not torch.allclose(plain, model(x))


def test_official_preset_trainable_set_and_weight_decay(tiny_recipe_dict, tmp_path):
    from fgvc.engine.freeze import apply_requires_grad, plan_trainable, set_train_mode
    from fgvc.engine.optim import build_optimizer

    tiny_recipe_dict["stages"][1] = {"name": "adapt", "resolution": 48, "preset": "official",
                                     "batch_size": 8, "epochs": 1}
    ctx = make_context(tiny_recipe_dict, tmp_path, None)
    stage = ctx.recipe.stage("adapt")
    assert stage.trainable == ["classifier"] and stage.reestimate == ["last_bn"]
    assert stage.bn_momentum == 0.1 and stage.schedule.name == "step"
    assert (stage.schedule.every, stage.schedule.gamma) == (30, 0.1)
    assert stage.optimizer.lr == pytest.approx(0.008 * 8 / 512) and stage.optimizer.decay_all
    model = ctx.model
    plan = plan_trainable(model, stage.trainable, stage.reestimate)
    apply_requires_grad(model, plan)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    optimizer = build_optimizer(model, stage.optimizer)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-4]
    assert {id(p) for p in optimizer.param_groups[0]["params"]} == {id(model.fc.weight),
                                                                     id(model.fc.bias)}
    set_train_mode(model, plan)
    modes = {n for n, m in model.named_modules() if m.training}
    assert modes == {"fc", "layer4.0.bn2", "layer4.0.downsample.2"}

    before = snapshot(model)
    run_stage(ctx, stage)
    changed = changed_keys(before, snapshot(model))
    assert {"fc.weight", "fc.bias", "layer4.0.bn2.running_mean"} <= changed
    assert not {"layer4.0.bn2.weight", "layer4.0.bn2.bias"} & changed  # affine frozen
    assert all(k.startswith(("fc.",) + LAST_BNS) for k in changed)


def test_user_fields_win_over_the_preset(tiny_recipe_dict):
    tiny_recipe_dict["stages"][1] = {"name": "adapt", "resolution": 48, "preset": "official",
                                     "epochs": 2, "optimizer": {"lr": 0.5}}
    stage = parse_recipe(tiny_recipe_dict).stage("adapt")
    assert stage.epochs == 2 and stage.optimizer.lr == 0.5 and stage.optimizer.decay_all


def test_method_fields_are_validated(tiny_recipe_dict):
    from fgvc.recipes.schema import SchemaError

    tiny_recipe_dict["stages"][0]["method"] = "bn_stats"
    tiny_recipe_dict["stages"][1]["method"] = "magic"
    with pytest.raises(SchemaError) as err:
        parse_recipe(tiny_recipe_dict)
    text = str(err.value)
    assert "stages[0].method" in text and "stages[1].method" in text


def test_frechet_without_train_stage_needs_reference_resolution(tiny_recipe_dict):
    from fgvc.recipes.schema import SchemaError

    tiny_recipe_dict["stages"] = [{**tiny_recipe_dict["stages"][1], "method": "frechet"}]
    with pytest.raises(SchemaError, match=r"stages\[0\].reference_resolution: method frechet"):
        parse_recipe(tiny_recipe_dict)
    tiny_recipe_dict["stages"][0]["reference_resolution"] = 32
    assert parse_recipe(tiny_recipe_dict).stage("adapt").reference_resolution == 32
