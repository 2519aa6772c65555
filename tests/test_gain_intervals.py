"""Gains on the same images carry Newcombe's paired interval (method 10) beside McNemar's p, in
evaluation.json, report.md, `fgvc sweep` and Table 3."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict

import numpy as np
import pytest
from scipy.stats import bootstrap, norm

from fgvc.analysis.science_report import confidence_lines, resolution_gain_lines
from fgvc.analysis.statistics import (
    PairedCounts,
    add_adaptation_tests,
    format_gain,
    mcnemar_exact,
    newcombe_paired_interval,
    summarise_accuracy,
    unpack_hits,
)
from fgvc.recipes.recipe import parse_recipe
from fgvc.workflows.sweep import ProtocolResult, format_result, summarise_protocol
from fgvc.workflows.table3 import RowResult, write_outputs

# Newcombe (1998), "Improved confidence intervals for the difference between binomial
# proportions based on paired data", Stat. Med. 17:2635-2650, Table III, method 10, as printed
# (4 decimals, z = 1.96). Cells: (both, first only, second only, neither); the interval is of
# the first proportion minus the second.
TABLE_III_METHOD_10 = {
    (36, 12, 2, 0): (0.0569, 0.3404),
    (20, 12, 2, 16): (0.0562, 0.3292),
    (18, 12, 2, 18): (0.0562, 0.3290),
    (36, 14, 0, 0): (0.1528, 0.4167),
    (35, 14, 0, 1): (0.1461, 0.4175),
    (18, 14, 0, 18): (0.1441, 0.3963),
    (2, 97, 1, 0): (0.8721, 0.9854),
    (1, 97, 1, 1): (0.8736, 0.9850),
    (0, 29, 1, 0): (0.6666, 0.9882),
    (2, 98, 0, 0): (0.9178, 0.9945),
    (1, 98, 0, 1): (0.9171, 0.9916),
    (0, 30, 0, 0): (0.8395, 1.0),
    (54, 0, 0, 0): (-0.0664, 0.0664),
    (53, 0, 0, 1): (-0.0729, 0.0729),
    (30, 0, 0, 24): (-0.0358, 0.0358),
    (29, 0, 0, 25): (-0.0354, 0.0354),
    (28, 0, 0, 26): (-0.0352, 0.0352),
    (27, 0, 0, 27): (-0.0351, 0.0351),
}


@pytest.mark.parametrize("cells,published", sorted(TABLE_III_METHOD_10.items()))
def test_newcombe_matches_the_papers_table_iii(cells, published):
    low, high = newcombe_paired_interval(PairedCounts(*cells))
    # 1e-4: the paper's 4 printed decimals and its z = 1.96 (ours: 1.959964).
    assert low == pytest.approx(published[0], abs=1e-4)
    assert high == pytest.approx(published[1], abs=1e-4)


def test_newcombe_matches_the_square_and_add_worked_example():
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017),
    # chapter 8: complete response before/after consolidation therapy (Cavo et al. 2012),
    # table [[59, 6], [16, 80]]; Newcombe square-and-add -0.0621 (-0.1186 to -0.0046).
    low, high = newcombe_paired_interval(PairedCounts(59, 6, 16, 80))
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)


def _hits(both: int, only_a: int, only_b: int, neither: int, seed: int = 0):
    """Per-image hit vectors with these 2 x 2 counts, in shuffled order."""
    a = np.repeat([True, True, False, False], [both, only_a, only_b, neither])
    b = np.repeat([True, False, True, False], [both, only_a, only_b, neither])
    order = np.random.default_rng(seed).permutation(len(a))
    return a[order], b[order]


def test_large_samples_approach_the_paired_wald_interval():
    # With thousands of images the score interval and the textbook paired (Wald) interval,
    # theta -/+ z sqrt((b + c)/n - theta^2) / sqrt(n), agree.
    counts = PairedCounts(30_000, 2_400, 1_800, 5_800)
    n, theta = counts.images, (counts.only_a - counts.only_b) / counts.images
    half = norm.ppf(0.975) * math.sqrt(((counts.only_a + counts.only_b) / n - theta**2) / n)
    low, high = newcombe_paired_interval(counts)
    assert low == pytest.approx(theta - half, abs=2e-5)
    assert high == pytest.approx(theta + half, abs=2e-5)


def test_agrees_with_a_paired_bootstrap():
    a, b = _hits(700, 90, 50, 160)
    res = bootstrap((a.astype(float), b.astype(float)), lambda x, y: np.mean(x) - np.mean(y),
                    paired=True, vectorized=False, n_resamples=2000, method="percentile",
                    random_state=np.random.default_rng(1))
    low, high = newcombe_paired_interval(PairedCounts.from_hits(a, b))
    assert low == pytest.approx(res.confidence_interval.low, abs=0.004)
    assert high == pytest.approx(res.confidence_interval.high, abs=0.004)


@pytest.mark.parametrize("cells", [(5, 3, 1, 2), (0, 0, 0, 7), (10, 0, 4, 0), (1, 0, 0, 1),
                                   (0, 9, 0, 0), (400, 12, 30, 58)])
def test_limiting_properties(cells):
    counts = PairedCounts(*cells)
    theta = (counts.only_a - counts.only_b) / counts.images
    low, high = newcombe_paired_interval(counts)
    assert -1.0 <= low <= theta <= high <= 1.0
    assert high - low > 0  # no collapse when no image changes (unlike Wald)
    # Swapping A and B mirrors the interval.
    swapped = newcombe_paired_interval(PairedCounts(cells[0], cells[2], cells[1], cells[3]))
    assert swapped == pytest.approx((-high, -low), abs=1e-12)


def test_pairing_narrows_the_interval_when_the_classifiers_agree():
    # Same margins (70 % and 60 % right): strongly agreeing pairs against independent ones
    # (ad = bc, phi = 0, the unpaired square-and-add interval).
    agreeing = newcombe_paired_interval(PairedCounts(60, 10, 0, 30))
    independent = newcombe_paired_interval(PairedCounts(42, 28, 18, 12))
    assert agreeing[1] - agreeing[0] < independent[1] - independent[0] - 0.02


def test_more_images_narrow_the_interval_like_one_over_root_n():
    small = newcombe_paired_interval(PairedCounts(500, 60, 40, 400))
    large = newcombe_paired_interval(PairedCounts(50_000, 6_000, 4_000, 40_000))
    assert (large[1] - large[0]) == pytest.approx((small[1] - small[0]) / 10, rel=0.05)


def test_paired_test_carries_the_gain_and_its_interval():
    a, b = _hits(50, 12, 4, 34)
    test = mcnemar_exact(a, b)
    low, high = newcombe_paired_interval(PairedCounts(50, 12, 4, 34))
    assert (test.only_a, test.only_b, test.images) == (12, 4, 100)
    assert test.gain == pytest.approx(100 * (a.mean() - b.mean()))
    assert test.gain_ci95 == [round(100 * low, 3), round(100 * high, 3)]
    assert test.gain_ci95[0] < test.gain < test.gain_ci95[1]
    assert "Newcombe" in test.gain_ci_method and "McNemar" in test.test
    assert mcnemar_exact(np.zeros(0, bool), np.zeros(0, bool)).gain is None


def test_format_gain():
    assert format_gain(2.5, [0.8, 4.1], 0.004) == "+2.5 pts [+0.8, +4.1] (McNemar p = 0.004)"
    assert format_gain(-1.04, [-3.0, 0.95], 0.31) == "-1.0 pts [-3.0, +0.9] (McNemar p = 0.31)"
    assert format_gain(12.0, [9.1, 15.0], 1e-9) == "+12.0 pts [+9.1, +15.0] (McNemar p < 1e-4)"
    assert format_gain(0.0, None, None) == "+0.0 pts"
    assert format_gain(None, None, 0.5) == "McNemar p = 0.5"  # older results: the p alone
    assert format_gain(None) == "-"


def _entry(hits: np.ndarray) -> dict:
    """An evaluation.json entry as the pipeline stores it."""
    return summarise_accuracy({"top1": 100 * hits.mean(), "top5": 100.0, "loss": 1.0,
                               "images": len(hits), "correct": int(hits.sum()), "hits": hits,
                               "indices": np.arange(len(hits))})


def _evaluation(seed: int = 0, fixed: float = 0.25) -> dict:
    """Before adaptation at 32 and 48 px, after at 48 px; adaptation fixes about ``fixed`` of
    the images the network got wrong."""
    rng = np.random.default_rng(seed)
    base = rng.random(200) < 0.55
    return {"before_adaptation": {"32": _entry(base), "48": _entry(base ^ (rng.random(200) < 0.2))},
            "after_adaptation": {"48": _entry(base | (rng.random(200) < fixed))}}


def test_evaluation_json_and_report_carry_the_gain(tiny_recipe_dict):
    evaluation = json.loads(json.dumps(add_adaptation_tests(_evaluation())))
    after, before = evaluation["after_adaptation"]["48"], evaluation["before_adaptation"]["48"]
    stored = after["vs_before"]
    assert stored["gain"] == pytest.approx(after["top1"] - before["top1"])
    assert stored["gain_ci95"][0] < stored["gain"] < stored["gain_ci95"][1]
    figure = format_gain(stored["gain"], stored["gain_ci95"], stored["p_value"])
    table = "\n".join(confidence_lines(evaluation))
    assert figure in table and "Newcombe" in table
    # Across resolutions: adapted at 48 px against the 32 px network before adaptation.
    recipe = parse_recipe(tiny_recipe_dict)
    (line, _) = resolution_gain_lines(evaluation, recipe)
    base = evaluation["before_adaptation"]["32"]
    across = mcnemar_exact(unpack_hits(after["top1_hits"], 200), unpack_hits(base["top1_hits"], 200))
    assert across.gain == pytest.approx(after["top1"] - base["top1"])
    assert format_gain(across.gain, across.gain_ci95, across.p_value) in line
    assert "48 px" in line and "32 px" in line


def test_sweep_result_and_table3_carry_gains(tiny_recipe_dict, tmp_path):
    recipe = parse_recipe(tiny_recipe_dict)
    evaluation = _evaluation(1)
    sweep = {"40": _evaluation(2, fixed=0.1)["after_adaptation"]["48"],
             "48": evaluation["after_adaptation"]["48"]}
    result = summarise_protocol(recipe, evaluation, 32, 48, sweep, final=False)
    after, plain = evaluation["after_adaptation"]["48"], evaluation["before_adaptation"]["48"]
    base = evaluation["before_adaptation"]["32"]
    assert result.adapted_vs_no_adaptation_gain == pytest.approx(after["top1"] - plain["top1"])
    assert result.adapted_vs_baseline_gain == pytest.approx(after["top1"] - base["top1"])
    assert sweep["48"]["top1"] > sweep["40"]["top1"] and result.runner_up == 40
    assert result.chosen_vs_runner_up_gain == pytest.approx(
        sweep["48"]["top1"] - sweep["40"]["top1"])
    # result.json keeps the values machine-readable beside the p-values.
    saved = json.loads(json.dumps(asdict(result)))
    for name in ("adapted_vs_no_adaptation", "adapted_vs_baseline", "chosen_vs_runner_up"):
        low, high = saved[f"{name}_gain_ci"]
        assert low <= saved[f"{name}_gain"] <= high and saved[f"{name}_p"] is not None
    text = format_result(recipe, result)
    assert format_gain(result.adapted_vs_baseline_gain, result.adapted_vs_baseline_gain_ci,
                       result.adapted_vs_baseline_p) in text
    assert format_gain(result.chosen_vs_runner_up_gain, result.chosen_vs_runner_up_gain_ci,
                       result.chosen_vs_runner_up_p) in text

    row = RowResult("cub200", **asdict(result), protocol="test")
    write_outputs([row], tmp_path)
    md = (tmp_path / "table3.md").read_text()
    assert format_gain(row.gain, row.adapted_vs_baseline_gain_ci) in md
    assert format_gain(row.adapted_vs_no_adaptation_gain, row.adapted_vs_no_adaptation_gain_ci,
                       row.adapted_vs_no_adaptation_p) in md
    with (tmp_path / "table3.csv").open(newline="") as f:
        (line,) = list(csv.DictReader(f))
    assert float(line["gain (ours)"]) == pytest.approx(row.gain, abs=0.05)
    assert json.loads(line["gain 95% CI"]) == row.adapted_vs_baseline_gain_ci
    assert float(line["gain vs no adaptation"]) == row.adapted_vs_no_adaptation_gain


def test_older_results_without_gains_still_print(tiny_recipe_dict):
    recipe = parse_recipe(tiny_recipe_dict)
    result = summarise_protocol(recipe, _evaluation(3), 32, 48, {}, final=False)
    old = {k: v for k, v in asdict(result).items() if "gain" not in k}
    text = format_result(recipe, ProtocolResult(**old))
    assert "McNemar p = " in text and "pts" not in text
