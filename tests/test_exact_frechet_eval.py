"""The evaluation after adaptation is the network as saved, whatever the adapt method changed.

The evaluation before adaptation keeps what enters the adapted part and the evaluation after it
runs only the tail (fgvc/engine/kept_activations.py). ``frechet`` and ``gaussian`` swap a module
(the pooling, the last activation) rather than change weights, so a tail traced before the
adaptation would still hold the old module and report the unadapted network. Here every method
runs end to end with kept activations, and every probability the evaluation after adaptation
computed (every resolution, every image) is compared with a full forward of a fresh model loaded
from the adapt stage's saved checkpoint: log-probabilities, i.e. logits up to each image's
constant, within 1e-5 (the tail runs on batches of another composition).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

import fgvc.engine.loop as loop
from fgvc.datasets import load_dataset
from fgvc.engine.adapt_methods import load_model_state
from fgvc.engine.checkpoint import load_checkpoint
from fgvc.engine.context import RunContext
from fgvc.inference.predictions import Predictions
from fgvc.models import create_model, data_config
from fgvc.recipes.recipe import parse_recipe
from fgvc.workflows import pipeline

RESOLUTIONS = [32, 48]


class _RecordingTally(loop._Tally):
    """Keeps every image's probabilities as the evaluation scores them."""

    made: list[_RecordingTally] = []

    def __init__(self, *args):
        super().__init__(*args)
        self.rows: dict[int, torch.Tensor] = {}
        _RecordingTally.made.append(self)

    def add(self, probs, labels, indices):
        super().add(probs, labels, indices)
        self.rows.update({int(i): p.clone() for i, p in zip(indices, probs, strict=True)})


def _run_recording(recipe_dict, monkeypatch):
    """A whole run; returns (run folder, {resolution: {image index: probabilities}} of the
    evaluation after adaptation, the log's text is in caplog)."""
    after: dict[int, dict[int, torch.Tensor]] = {}
    real = pipeline.evaluate

    def spy(model, loader, device, **kwargs):
        _RecordingTally.made.clear()
        out = real(model, loader, device, **kwargs)
        if kwargs.get("desc", "").startswith("after_adaptation"):
            for view, tally in zip(kwargs["views"], _RecordingTally.made, strict=True):
                after[view] = tally.rows
        return out

    monkeypatch.setattr(loop, "_Tally", _RecordingTally)
    monkeypatch.setattr(pipeline, "evaluate", spy)
    # Pooled-activation statistics at the end of the run: other passes, not under test here.
    monkeypatch.setattr(pipeline.activations, "record_after_run", lambda *a, **k: None)
    return pipeline.run_recipe(parse_recipe(recipe_dict)), after


def _saved_model(run_dir, recipe):
    """A fresh model with the adapt stage's checkpoint, as a later process loads it."""
    index = load_dataset("synthetic", recipe.dataset.root, recipe.dataset.options)
    model = create_model(recipe.model, index.num_classes)
    load_model_state(model, load_checkpoint(run_dir / "checkpoints" / "adapt.pt")["model"])
    return RunContext(recipe, run_dir, index, model, data_config(model, recipe.model),
                      torch.device("cpu"))


def _full_forward(ctx, resolution):
    indices, probs, _ = loop.predict_probabilities(
        ctx.model, ctx.eval_loader("val", resolution, 16), ctx.device)
    return dict(zip(indices.tolist(), torch.from_numpy(probs), strict=True))


def _recipe(tiny_recipe_dict, method):
    recipe = json.loads(json.dumps(tiny_recipe_dict))
    recipe["name"] = f"exact-{method}"
    recipe["evaluate"]["resolutions"] = RESOLUTIONS
    # The adapt stage alone, from the recipe's weights (K_train given): fewer passes to wait for.
    recipe["stages"] = [{**recipe["stages"][1], "method": method, "reference_resolution": 32}]
    recipe["predict"] = None
    recipe["submission"] = None
    return recipe


@pytest.mark.parametrize("method", ["frechet", "gaussian", "bn_stats", "finetune"])
def test_evaluation_after_adaptation_is_the_saved_network(tiny_recipe_dict, monkeypatch, caplog,
                                                          method):
    recipe_dict = _recipe(tiny_recipe_dict, method)
    with caplog.at_level(logging.INFO):
        run_dir, after = _run_recording(recipe_dict, monkeypatch)
    # The fast path ran: the kept activations served the evaluation after adaptation.
    assert "only the adapted part runs" in caplog.text
    ctx = _saved_model(run_dir, parse_recipe(recipe_dict))
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    reused = {int(r) for r, e in evaluation["after_adaptation"].items() if e.get("reused")}
    # finetune: its last validation at 48 px is the identical pass, reused: checked by metrics.
    assert sorted(after) == sorted(set(RESOLUTIONS) - reused)
    moved = 0.0
    for res in RESOLUTIONS:
        full = _full_forward(ctx, res)
        images = sorted(full)
        want = torch.stack([full[i] for i in images])
        if res in after:
            assert sorted(after[res]) == images
            got = torch.stack([after[res][i] for i in images])
            torch.testing.assert_close(got.clamp_min(1e-30).log(), want.clamp_min(1e-30).log(),
                                       rtol=1e-5, atol=1e-5)
        labels = torch.tensor([ctx.index.split("val")[i].label for i in images])
        stored = evaluation["after_adaptation"][str(res)]
        assert stored["top1"] == pytest.approx(100 * (want.argmax(1) == labels).double().mean())
        loss = torch.nn.functional.nll_loss(want.clamp_min(1e-12).log(), labels).item()
        assert stored["loss"] == pytest.approx(loss, rel=1e-5)
        moved = max(moved, abs(stored["loss"] - evaluation["before_adaptation"][str(res)]["loss"]))
    assert moved > 1e-6, f"{method} changed nothing the evaluation can see"
    # The per-image predictions at the final resolution are the saved network's too.
    preds = Predictions.load(run_dir / "eval_predictions")
    full = _full_forward(ctx, 48)
    want = np.stack([full[i].numpy() for i in range(len(full))])
    np.testing.assert_allclose(preds.probs.astype(np.float32), want, atol=1e-3)  # float16 file


def test_a_map_in_the_frozen_part_sends_the_evaluation_to_the_whole_network(
        tiny_recipe_dict, monkeypatch, caplog):
    """With only the classifier adapted, the pooling belongs to the frozen part: its kept
    outputs are those of the unmapped pooling, so the Fréchet map must not reuse them."""
    recipe_dict = _recipe(tiny_recipe_dict, "frechet")
    recipe_dict["stages"][0]["trainable"] = ["classifier"]
    with caplog.at_level(logging.INFO):
        run_dir, after = _run_recording(recipe_dict, monkeypatch)
    assert "the frozen part is not the network the activations were kept from" in caplog.text
    assert "only the adapted part runs" not in caplog.text
    ctx = _saved_model(run_dir, parse_recipe(recipe_dict))
    for res in RESOLUTIONS:
        full = _full_forward(ctx, res)
        got = torch.stack([after[res][i] for i in sorted(full)])
        torch.testing.assert_close(got, torch.stack([full[i] for i in sorted(full)]),
                                   rtol=1e-5, atol=1e-6)


def test_any_module_swapped_in_the_tail_runs(tiny_recipe_dict, tmp_path, caplog):
    """Not only the adapt methods: a module swapped in the adapted part by any means (here the
    last ReLU replaced by a PReLU, whose weight a checkpoint carries) is what the evaluation
    after adaptation runs."""
    recipe = parse_recipe(_recipe(tiny_recipe_dict, "finetune"))
    index = load_dataset("synthetic", recipe.dataset.root, recipe.dataset.options)
    torch.manual_seed(0)
    model = create_model(recipe.model, index.num_classes)
    (tmp_path / "run").mkdir()
    ctx = RunContext(recipe, tmp_path / "run", index, model, data_config(model, recipe.model),
                     torch.device("cpu"))
    before = pipeline.evaluate_resolutions(ctx, "before_adaptation")
    assert ctx.kept is not None
    model.layer4[0].act2 = torch.nn.PReLU(init=0.5)  # after the cut: part of the tail
    with caplog.at_level(logging.INFO):
        after = pipeline.evaluate_resolutions(ctx, "after_adaptation")
    assert "only the adapted part runs" in caplog.text
    for res in RESOLUTIONS:
        full = loop.evaluate(model, ctx.eval_loader("val", res, 16), ctx.device)
        assert after[str(res)]["loss"] == pytest.approx(full["loss"], rel=1e-5)
        assert after[str(res)]["top1"] == full["top1"]
        assert after[str(res)]["loss"] != pytest.approx(before[str(res)]["loss"], rel=1e-4)
