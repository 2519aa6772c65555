"""The evaluation after adaptation on activations kept before it (fgvc/engine/kept_activations.py)
equals the full passes, reads fewer images, and is not used once the frozen part changed.

Tolerance: the same per-image top-1 hits and top-1/top-5 counts; losses and probabilities within
rtol 1e-5 (the tail runs on batches of another composition, which moves float32 results in the
last bits).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

import fgvc.engine.kept_activations as kept_activations
from fgvc.datasets import fast_decode, load_dataset
from fgvc.engine.context import RunContext
from fgvc.inference.predictions import Predictions
from fgvc.models import create_model, data_config
from fgvc.recipes.recipe import parse_recipe
from fgvc.workflows import pipeline


def _run(recipe_dict, monkeypatch, keep: bool):
    """One whole run; returns (run folder, how often each validation image was decoded)."""
    decodes: dict[str, int] = {}
    real = fast_decode.EncodedImage.decode

    def counting(self, *args, **kwargs):
        decodes[str(self.path)] = decodes.get(str(self.path), 0) + 1
        return real(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(fast_decode.EncodedImage, "decode", counting)
        if not keep:
            patch.setattr(pipeline, "start_keeping", lambda *a, **k: None)
        run_dir = pipeline.run_recipe(parse_recipe(recipe_dict))
    return run_dir, decodes


def _recipe(tiny_recipe_dict, name):
    recipe = json.loads(json.dumps(tiny_recipe_dict))
    recipe["name"] = name
    recipe["submission"]["path"] = recipe["submission"]["path"].replace("tiny.csv", f"{name}.csv")
    recipe["evaluate"]["resolutions"] = [32, 40, 48, 56]
    recipe["stages"][1]["bn_momentum"] = None
    recipe["stages"][0]["validate_every"] = 2  # epoch 1 without validation
    return recipe


def test_after_adaptation_on_kept_activations_equals_full_passes(tiny_recipe_dict, monkeypatch,
                                                                 caplog):
    with caplog.at_level(logging.INFO):
        kept_dir, kept_decodes = _run(_recipe(tiny_recipe_dict, "kept"), monkeypatch, True)
    assert "only the adapted part runs" in caplog.text
    assert "validation images' activations are those kept" in caplog.text
    full_dir, full_decodes = _run(_recipe(tiny_recipe_dict, "full"), monkeypatch, False)
    kept, full = (json.loads((d / "evaluation.json").read_text()) for d in (kept_dir, full_dir))
    for phase in ("before_adaptation", "after_adaptation"):
        for res in ("32", "40", "48", "56"):
            a, b = kept[phase][res], full[phase][res]
            assert (a["top1"], a["top5"], a["images"]) == (b["top1"], b["top5"], b["images"])
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    # The adaptation moved the weights: some accuracy or loss after it differs from before.
    assert any(kept["after_adaptation"][r]["loss"] != kept["before_adaptation"][r]["loss"]
               for r in ("40", "56"))
    a, b = (Predictions.load(d / "eval_predictions") for d in (kept_dir, full_dir))
    assert a.ids == b.ids
    np.testing.assert_allclose(a.probs.astype(np.float32), b.probs.astype(np.float32),
                               rtol=1e-2, atol=1e-3)  # float16 files
    assert (a.probs.argmax(1) == b.probs.argmax(1)).all()
    # Each validation image is read twice less: no decode for the adapt stage's validation cache
    # and none for the per-image predictions at the final resolution.
    val = [k for k in full_decodes if "/val/" in k]
    assert val and all(full_decodes[k] - kept_decodes[k] == 2 for k in val)
    assert not (kept_dir / "kept_activations").exists()
    # The report's epoch table shows a dash, not nan, for an epoch without validation.
    report = (kept_dir / "report.md").read_text()
    assert "nan" not in report and any(
        line.startswith("| train | 1 |") and line.endswith("| - | - |")
        for line in report.splitlines())


def test_memory_mapped_views_are_removed(tiny_recipe_dict, monkeypatch):
    monkeypatch.setattr(kept_activations, "IN_MEMORY_BYTES", 0)
    files = []
    real_init = kept_activations.CachedFeatures.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        files.extend(self.files)

    monkeypatch.setattr(kept_activations.CachedFeatures, "__init__", spy)
    run_dir, _ = _run(_recipe(tiny_recipe_dict, "mapped"), monkeypatch, True)
    assert any("kept_activations" in str(f) for f in files)
    assert not any(f.exists() for f in files)
    assert json.loads((run_dir / "evaluation.json").read_text())["after_adaptation"]


def _context(recipe_dict, run_dir):
    recipe = parse_recipe(recipe_dict)
    index = load_dataset("synthetic", recipe.dataset.root, recipe.dataset.options)
    torch.manual_seed(0)
    model = create_model(recipe.model, index.num_classes)
    run_dir.mkdir()
    return RunContext(recipe, run_dir, index, model, data_config(model, recipe.model),
                      torch.device("cpu"))


def test_not_used_once_the_frozen_part_changed(tiny_recipe_dict, tmp_path, caplog):
    ctx = _context(_recipe(tiny_recipe_dict, "changed"), tmp_path / "run")
    pipeline.evaluate_resolutions(ctx, "before_adaptation")
    assert ctx.kept is not None and sorted(ctx.kept.views) == [32, 40, 48, 56]
    with torch.no_grad():
        next(ctx.model.parameters()).mul_(1.5)  # the stem: part of the frozen prefix
    with caplog.at_level(logging.INFO):
        after = pipeline.evaluate_resolutions(ctx, "after_adaptation")
    assert "the frozen part's weights changed" in caplog.text
    assert "only the adapted part runs" not in caplog.text
    for res in (32, 48):
        full = pipeline.evaluate(ctx.model, ctx.eval_loader("val", res, 16), ctx.device)
        assert after[str(res)]["top1"] == full["top1"]
        assert after[str(res)]["loss"] == pytest.approx(full["loss"], rel=1e-5)


@pytest.mark.parametrize("change, reason", [
    ({"evaluate": {"crops": "ten_crop"}}, "only one crop per image is kept"),
    ({"adapt_cache_gb": 1e-9}, "> the adapt stage's adapt_cache_gb"),
])
def test_not_kept_with_a_log_line(tiny_recipe_dict, tmp_path, caplog, change, reason):
    recipe = _recipe(tiny_recipe_dict, "not-kept")
    if "evaluate" in change:
        recipe["evaluate"].update(change["evaluate"])
    else:
        recipe["stages"][1].update(change)
    ctx = _context(recipe, tmp_path / "run")
    with caplog.at_level(logging.INFO):
        pipeline.evaluate_resolutions(ctx, "before_adaptation")
    assert reason in caplog.text
    assert ctx.kept is None
