"""``method: gaussian`` (the paper's appendix A.2): per-channel Gaussians of the input of the last
activation at K_train and K_test, and the affine map between them applied there."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from fgvc.analysis.gaussian import ChannelMoments, apply_map, matching_map, merge_all
from fgvc.engine.adapt_methods import (
    NoLastActivation,
    PreActivationMap,
    channel_moments,
    last_activation,
    load_model_state,
)
from fgvc.engine.checkpoint import load_checkpoint
from fgvc.engine.stage import run_stage
from fgvc.models import create_model
from fgvc.recipes.recipe import parse_recipe
from fgvc.recipes.schema import SchemaError
from tests.test_adapt_freezing import changed_keys, make_context, snapshot

LAST_ACT = "layer4.0.act2"  # test_resnet: the in-place ReLU after the last residual addition


def test_moments_merged_batch_by_batch_equal_those_of_all_values():
    rng = np.random.default_rng(0)
    values = rng.normal([[[[3.0]], [[-1.0]], [[0.01]]]], [[[[2.0]], [[0.5]], [[1e-3]]]],
                        size=(20, 3, 5, 4))
    whole = ChannelMoments.of(values)
    merged = merge_all([ChannelMoments.of(values[a:b]) for a, b in ((0, 1), (1, 8), (8, 20))])
    assert merged.count == whole.count == 20 * 5 * 4
    np.testing.assert_allclose(merged.mean, values.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(merged.std, values.std(axis=(0, 2, 3)), rtol=1e-10)
    with pytest.raises(ValueError, match="3 and 2 channels"):
        whole.merge(ChannelMoments.of(values[:, :2]))


def test_the_map_sends_each_test_gaussian_onto_its_reference():
    rng = np.random.default_rng(1)
    test = rng.normal([0.2, -0.4, 1.0], [0.3, 1.5, 0.7], size=(5000, 3))
    ref = rng.normal([-1.0, 0.5, 2.0], [1.2, 0.2, 0.7], size=(3000, 3))
    test[:, 2] = 0.25  # a constant channel: only shifted, never divided by its zero spread
    scale, shift = matching_map(ChannelMoments.of(test), ChannelMoments.of(ref))
    mapped = ChannelMoments.of(apply_map(test, scale, shift))
    target = ChannelMoments.of(ref)
    np.testing.assert_allclose(mapped.mean, target.mean, atol=1e-12)
    np.testing.assert_allclose(mapped.std[:2], target.std[:2], rtol=1e-12)
    assert scale[2] == 1.0 and mapped.std[2] < 1e-12
    # The map keeps the order of the values (a positive scale) and moves what a ReLU lets
    # through: channel 0's mean went from +0.2 to -1.0, so far fewer values stay above 0.
    assert (scale > 0).all()
    assert (apply_map(test, scale, shift)[:, 0] > 0).mean() < (test[:, 0] > 0).mean() / 2


def _adapt_only(tiny_recipe_dict, **stage):
    tiny_recipe_dict["stages"][1].update(method="gaussian", **stage)
    return tiny_recipe_dict


def test_stage_matches_the_pre_activation_moments_without_labels(tiny_recipe_dict, tmp_path):
    # The unlabelled test split: a label-free method never reads labels.
    ctx = make_context(_adapt_only(tiny_recipe_dict, data_split="test"), tmp_path,
                       ["classifier", "last_bn"])
    assert not ctx.index.is_labelled("test")
    before = snapshot(ctx.model)
    run_stage(ctx, ctx.recipe.stage("adapt"))
    after = snapshot(ctx.model)
    # Nothing but the new map changes: every weight and statistic stays bit-identical.
    key = f"{LAST_ACT}.gaussian_map"
    assert set(after) - set(before) == {key}
    assert not changed_keys(before, {k: after[k] for k in before})
    assert isinstance(ctx.model.get_submodule(LAST_ACT), PreActivationMap)

    fit = json.loads((ctx.run_dir / "adapt_gaussian.json").read_text())
    assert fit["module"] == LAST_ACT and fit["split"] == "test" and fit["channels"] == 96
    assert (fit["reference"]["resolution"], fit["test"]["resolution"]) == (32, 48)
    _, shape = last_activation(ctx.model, 48, ctx.device)  # every position of every image
    assert fit["test"]["values_per_channel"] == len(ctx.index.split("test")) * shape[2] * shape[3]
    # The defining property: what now enters the ReLU at 48 px has, channel by channel, the
    # mean and standard deviation the unmapped network had at 32 px.
    loader = ctx.eval_loader("test", 48, 16)
    mapped, positive = channel_moments(ctx.model, f"{LAST_ACT}.act", loader, ctx.device, False,
                                       "check")
    np.testing.assert_allclose(mapped.mean, fit["reference"]["mean"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mapped.std, fit["reference"]["std"], rtol=1e-4, atol=1e-6)
    assert not np.allclose(fit["test"]["std"], fit["reference"]["std"], rtol=1e-2)
    assert 0 < positive < 1
    # The stage's checkpoint carries the map; a fresh model loading it computes the same logits.
    state = load_checkpoint(ctx.run_dir / "checkpoints" / "adapt.pt")["model"]
    assert torch.equal(state[key], after[key]) and state[key].shape == (2, 96, 1, 1)
    torch.manual_seed(1)
    fresh = create_model(ctx.recipe.model, ctx.index.num_classes)
    load_model_state(fresh, state)
    x = torch.rand(3, 3, 48, 48)
    ctx.model.eval()
    fresh.eval()
    torch.testing.assert_close(fresh(x), ctx.model(x), rtol=0, atol=0)


def test_last_activation_is_the_module_feeding_the_pooling():
    import timm

    model = timm.create_model("test_resnet", num_classes=4)
    path, shape = last_activation(model, 48, torch.device("cpu"))
    assert path == LAST_ACT and tuple(shape) == (1, 96, 2, 2)


def test_modules_handing_their_input_on_are_passed_over():
    class DropoutLast(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)
            self.act, self.drop, self.keep = nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Identity()
            self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 2)

        def forward(self, x):
            x = self.keep(self.drop(self.act(self.bn(self.conv(x)))))
            return self.fc(self.avgpool(x).flatten(1))

    path, shape = last_activation(DropoutLast(), 32, torch.device("cpu"))
    assert path == "act" and tuple(shape) == (1, 8, 30, 30)


def test_a_shared_activation_is_refused_in_one_line():
    import torchvision

    model = torchvision.models.resnet18(num_classes=4)  # BasicBlock calls one ReLU twice
    with pytest.raises(NoLastActivation, match=r"layer4\.1\.relu, .* runs 2 times per forward"):
        last_activation(model, 64, torch.device("cpu"))


def test_a_norm_before_the_pooling_is_refused_in_one_line():
    class NormLast(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)
            self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.avgpool(self.norm(self.conv(x))).flatten(1))

    with pytest.raises(NoLastActivation, match=r"norm \(BatchNorm2d\) feeds the pooling of "
                                               r"NormLast and is not an activation"):
        last_activation(NormLast(), 32, torch.device("cpu"))


def test_gaussian_needs_k_train(tiny_recipe_dict):
    tiny_recipe_dict["stages"] = [{**tiny_recipe_dict["stages"][1], "method": "gaussian"}]
    with pytest.raises(SchemaError, match=r"stages\[0\].reference_resolution: method gaussian "
                                          "needs K_train"):
        parse_recipe(tiny_recipe_dict)
    tiny_recipe_dict["stages"][0]["reference_resolution"] = 32
    assert parse_recipe(tiny_recipe_dict).stage("adapt").method == "gaussian"


def test_validate_plan_names_the_method(tiny_recipe_dict):
    from fgvc.recipes.plan import adapt_method_lines

    recipe = parse_recipe(_adapt_only(tiny_recipe_dict))
    (line,) = adapt_method_lines(recipe, recipe.stage("adapt"))
    assert "method gaussian: per-channel Gaussians before the last ReLU" in line


def test_report_section_compares_as_table_4(tiny_recipe_dict, tmp_path):
    from fgvc.report import ReportContext, adapted_distribution
    from fgvc.runfolder import RunFolder

    recipe = parse_recipe(_adapt_only(tiny_recipe_dict))
    folder = RunFolder(tmp_path)
    folder.write_evaluation({
        "before_adaptation": {"32": {"top1": 50.0}, "48": {"top1": 41.25}},
        "after_adaptation": {"32": {"top1": 47.5}, "48": {"top1": 45.0}}})
    (tmp_path / "adapt_gaussian.json").write_text(json.dumps({
        "module": LAST_ACT, "channels": 2, "split": "train",
        "reference": {"resolution": 32, "mean": [0.1, 0.3], "std": [1.0, 2.0], "positive": 0.4},
        "test": {"resolution": 48, "mean": [-0.1, 0.1], "std": [0.5, 1.0], "positive": 0.3}}))
    lines = adapted_distribution(ReportContext(tmp_path, recipe, {}))
    text = "\n".join(lines)
    assert "| top-1 % | 32 | 48 (adapted to) |" in text
    assert "| no adaptation | 50.0 | 41.2 |" in text
    assert "| adapted distribution (`gaussian`) | 47.5 | 45.0 |" in text
    assert ("32 px: channel means 0.200 and stds 1.500 on average, 40.0 % of values > 0; "
            "48 px: channel means 0.000 and stds 0.750 on average, 30.0 % of values > 0") in text
    # The paper's rows beside them, as Table 4 prints them.
    assert "| adapted distribution | 29.8 | 77.0 | 77.7 | 77.3 | 76.8 |" in text
    assert "| adapted distribution + fine-tuned classifier | 41.8 |" in text
    # Other methods have no such section.
    other = parse_recipe({**tiny_recipe_dict, "stages": [tiny_recipe_dict["stages"][0],
                                                         {**tiny_recipe_dict["stages"][1],
                                                          "method": "frechet"}]})
    assert adapted_distribution(ReportContext(tmp_path, other, {})) is None
