"""Table 3 and `fgvc sweep` carry intervals and paired tests; `table3 --final` retrains on the
whole training split once K_test is chosen on the held-out slice."""

from __future__ import annotations

import csv
import json

import yaml

from fgvc.analysis.statistics import paired_test, unpack_hits, wilson_interval
from fgvc.cli import main


def test_table3_final_with_intervals_and_paired_tests(tmp_path, capsys):
    out = tmp_path / "t3"
    assert main(["table3", "--smoke", "--final", "--out", str(out), "--datasets", "cub200"]) == 0
    row_dir = out / "rows" / "cub200"
    result = json.loads((row_dir / "result-final.json").read_text())
    assert result["final"] is True
    # The final network trained on the whole training split: no hold-out carved out.
    final_recipe = yaml.safe_load((row_dir / "train-final" / "recipe.yaml").read_text())
    assert final_recipe["dataset"]["holdout"] == 0.0
    first_recipe = yaml.safe_load((row_dir / "train" / "recipe.yaml").read_text())
    assert first_recipe["dataset"]["holdout"] > 0
    k = result["test_resolution"]
    evaluation = json.loads((row_dir / f"adapt-final-{k}" / "evaluation.json").read_text())
    adapted = evaluation["after_adaptation"][str(k)]
    # The interval is the Wilson interval of the stored counts, the p-value McNemar's on the
    # stored per-image hits.
    low, high = wilson_interval(adapted["correct"], adapted["images"])
    assert result["adapted_ci"] == [round(100 * low, 3), round(100 * high, 3)]
    plain = evaluation["before_adaptation"][str(k)]
    assert result["adapted_vs_no_adaptation_p"] == paired_test(adapted, plain).p_value
    hits = unpack_hits(adapted["top1_hits"], adapted["images"])
    assert hits.sum() == adapted["correct"]
    # Chosen vs runner-up: McNemar on the two sweep runs' validation hits.
    runner = result["runner_up"]
    assert runner is not None and runner != k
    sweep_a = json.loads((row_dir / f"sweep-{k}" / "evaluation.json").read_text())
    sweep_b = json.loads((row_dir / f"sweep-{runner}" / "evaluation.json").read_text())
    expected = paired_test(sweep_a["after_adaptation"][str(k)],
                           sweep_b["after_adaptation"][str(runner)]).p_value
    assert result["chosen_vs_runner_up_p"] == expected

    table = (out / "table3.md").read_text()
    assert "Wilson" in table and "retrained on the whole training split" in table
    assert "held out" in table
    with (out / "table3.csv").open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["FixRes 95% CI"].startswith("[") and row["McNemar p FixRes vs baseline"]


def test_sweep_reports_runner_up(tiny_recipe_dict, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    tiny_recipe_dict.update(sweep_resolutions=[40, 48], predict=None, submission=None)
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict))
    assert main(["sweep", str(recipe), "--out", str(tmp_path / "sw")]) == 0
    text = capsys.readouterr().out
    assert "runner-up" in text and "McNemar exact p" in text and "95 % Wilson CI" in text
