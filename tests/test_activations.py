"""Pooled-activation statistics equal a direct computation on the hooked features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fgvc.analysis.activations import PooledRecorder, activation_stats
from fgvc.models import create_model
from fgvc.recipes.recipe import ModelConfig


def test_recorded_fractions_equal_direct_computation():
    torch.manual_seed(0)
    model = create_model(ModelConfig(arch="test_resnet"), 4).eval()
    x = torch.randn(6, 3, 48, 48) * 2
    with torch.no_grad(), PooledRecorder(model, max_images=5) as rec:
        model(x[:3])
        model(x[3:])
        direct = model.forward_head(model.forward_features(x), pre_logits=True)[:5].numpy()
    stats = rec.stats()
    values = direct.ravel().astype(np.float64)
    assert stats["images"] == 5 and stats["values"] == values.size
    assert stats["zeros"] == pytest.approx(np.mean(values == 0))
    assert stats["above_2"] == pytest.approx(np.mean(values > 2))
    assert stats["mean"] == pytest.approx(values.mean(), rel=1e-6)
    assert stats["percentiles"]["50"] == pytest.approx(np.median(values), rel=1e-6)
    assert 0 < stats["zeros"] < 1  # the check is not vacuous


def test_stats_of_known_values():
    stats = activation_stats(np.array([[0.0, 0.0, 1.0, 3.0], [2.0, 2.5, 0.5, 0.0]]))
    assert stats["zeros"] == 3 / 8 and stats["above_2"] == 2 / 8
    assert stats["mean"] == pytest.approx(9 / 8)
    assert stats["cdf"]["values"][0] == 0.0 and stats["cdf"]["values"][-1] == 3.0


def test_run_records_activations_and_command_recomputes(tiny_recipe_dict, tmp_path, capsys):
    from fgvc.cli import main
    from fgvc.recipes.recipe import parse_recipe
    from fgvc.workflows.pipeline import run_recipe

    run_dir = run_recipe(parse_recipe(tiny_recipe_dict))
    data = json.loads((run_dir / "activations.json").read_text())
    assert set(data["before_adaptation"]) == set(data["after_adaptation"]) == {"32", "48"}
    report = (run_dir / "report.md").read_text()
    assert "Pooled activations" in report and "McNemar" in report
    assert (run_dir / "activations_cdf.png").stat().st_size > 0
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    entry = evaluation["after_adaptation"]["48"]
    assert entry["ci_method"] == "wilson" and entry["top1_ci95"][0] <= entry["top1"]
    assert set(entry["vs_before"]) >= {"only_a", "only_b", "p_value"}

    assert main(["activations", str(run_dir), "--resolutions", "40", "--split", "test"]) == 0
    again = json.loads((run_dir / "activations.json").read_text())
    assert again["split"] == "test" and set(again["after_adaptation"]) == {"40"}
    assert main(["activations", str(tmp_path)]) == 2
    assert "not a fgvc run folder" in capsys.readouterr().err
