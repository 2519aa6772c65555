"""Stage 2 on cached activations (fgvc/engine/feature_cache.py) equals the per-epoch procedure.

Tolerance: every tensor of the state dict (weights, BN running statistics and batch counters)
within rtol 1e-4, atol 1e-5 of the uncached run. The cached run reads the same batches in the
same order; only the frozen part's convolutions run on other batch compositions, which moves
float32 results in the last bits.
"""

from __future__ import annotations

import logging

import pytest
import torch

import fgvc.engine.feature_cache as feature_cache
from fgvc.datasets import load_dataset
from fgvc.engine.context import RunContext
from fgvc.engine.stage import run_stage
from fgvc.models import create_model, data_config
from fgvc.recipes.recipe import parse_recipe


def adapted_state(recipe_dict, tmp_path, name, **stage_changes):
    recipe_dict["stages"][1].update(epochs=3, **stage_changes)
    recipe = parse_recipe(recipe_dict)
    index = load_dataset("synthetic", recipe.dataset.root, recipe.dataset.options)
    torch.manual_seed(0)
    model = create_model(recipe.model, index.num_classes)
    run_dir = tmp_path / name
    run_dir.mkdir()
    ctx = RunContext(recipe, run_dir, index, model, data_config(model, recipe.model),
                     torch.device("cpu"))
    run_stage(ctx, recipe.stage("adapt"))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, run_dir


def assert_states_close(cached, uncached):
    assert cached.keys() == uncached.keys()
    for key in cached:
        torch.testing.assert_close(cached[key].double(), uncached[key].double(),
                                   rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("trainable", [["classifier", "last_bn"], ["last_stage", "classifier"]])
def test_cached_adaptation_equals_uncached(tiny_recipe_dict, tmp_path, caplog, trainable):
    recipe = dict(tiny_recipe_dict, stages=[dict(s) for s in tiny_recipe_dict["stages"]])
    recipe["stages"][1]["bn_momentum"] = None  # exact re-estimation: resets the statistics
    with caplog.at_level(logging.INFO, logger="fgvc.engine.feature_cache"):
        cached, _ = adapted_state(recipe, tmp_path, "cached", trainable=trainable)
    assert "frozen part ran once" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fgvc.engine.feature_cache"):
        uncached, _ = adapted_state(recipe, tmp_path, "uncached", trainable=trainable,
                                    adapt_cache_gb=0)
    assert "not used (adapt_cache_gb is 0)" in caplog.text
    assert_states_close(cached, uncached)
    # The adaptation did something: the BN statistics moved away from the initial ones.
    assert not torch.equal(cached["layer4.0.bn2.running_mean"],
                           torch.zeros_like(cached["layer4.0.bn2.running_mean"]))


def test_memory_mapped_cache_equals_uncached_and_is_removed(tiny_recipe_dict, tmp_path,
                                                             monkeypatch):
    monkeypatch.setattr(feature_cache, "IN_MEMORY_BYTES", 0)
    files = []
    real_init = feature_cache.CachedFeatures.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        files.extend(self.files)

    monkeypatch.setattr(feature_cache.CachedFeatures, "__init__", spy)
    cached, run_dir = adapted_state(tiny_recipe_dict, tmp_path, "mapped")
    assert files and all(str(f).startswith(str(run_dir)) for f in files)
    assert not any(f.exists() for f in files)
    uncached, _ = adapted_state(tiny_recipe_dict, tmp_path, "plain", adapt_cache_gb=0)
    assert_states_close(cached, uncached)


@pytest.mark.parametrize("changes, reason", [
    ({"augment": "test2"}, "augment 'test2' is random"),
    ({"adapt_cache_gb": 1e-9}, "> adapt_cache_gb"),
])
def test_falls_back_with_a_log_line(tiny_recipe_dict, tmp_path, caplog, changes, reason):
    with caplog.at_level(logging.INFO, logger="fgvc.engine.feature_cache"):
        adapted_state(tiny_recipe_dict, tmp_path, "fallback", **changes)
    assert reason in caplog.text
    assert "frozen part ran once" not in caplog.text


def test_split_shares_the_models_modules(tiny_recipe_dict):
    recipe = parse_recipe(tiny_recipe_dict)
    model = create_model(recipe.model, 4).eval()
    split = feature_cache.split_model(model, ["layer4.0.bn2", "fc"])
    assert split is not None
    assert split.tail.graph_module.fc is model.fc
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        frontier = split.prefix(x)
        torch.testing.assert_close(split.tail(frontier), model(x))
    # The shortcut input of the last block is part of the frontier: the tail is not a chain.
    assert len(frontier) == 2
