"""benchmarks/quickstart_seeds.py: one run per seed, mean ± sd per cell."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import yaml


def load_script():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "quickstart_seeds.py"
    spec = importlib.util.spec_from_file_location("quickstart_seeds", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_cells_are_mean_and_sd():
    script = load_script()
    evals = [{"before_adaptation": {"64": {"top1": b}}, "after_adaptation": {"64": {"top1": a}}}
             for b, a in ((70.0, 72.0), (71.0, 75.0), (72.0, 74.0))]
    text = script.table(evals, [0, 1, 2], "cmd")
    row = next(line for line in text.splitlines() if line.startswith("| 64"))
    gains = [2.0, 4.0, 2.0]
    assert row == (f"| 64 | 71.0 ± 1.0 | 73.7 ± 1.5 | {statistics.mean(gains):.1f} ± "
                   f"{statistics.stdev(gains):.1f} |")


def test_two_seeds_end_to_end(tiny_recipe_dict, tmp_path, capsys):
    script = load_script()
    recipe = tmp_path / "tiny.yaml"
    tiny_recipe_dict["stages"][0]["epochs"] = 1
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict))
    out = tmp_path / "seeds"
    assert script.main([str(recipe), "--seeds", "0", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| 48 |" in text and "±" in text and "seeds 0, 1" in text
    assert (out / "tiny-seed0" / "evaluation.json").exists()
    assert (out / "tiny-seed1" / "evaluation.json").exists()
    assert (out / "seeds.md").read_text() == text
