"""Confidence intervals and the paired test against independent reference values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fgvc.analysis.statistics import (
    accuracy_ci,
    bootstrap_interval,
    mcnemar_exact,
    pack_hits,
    unpack_hits,
    wilson_interval,
)

# Newcombe (1998), "Two-sided confidence intervals for the single proportion: comparison of
# seven methods", Statistics in Medicine 17:857-872, Table II, method 3 (Wilson score, no
# continuity correction); statsmodels' proportion_confint(method="wilson") gives the same.
NEWCOMBE = [((81, 263), (0.2553, 0.3662)), ((15, 148), (0.0624, 0.1605)),
            ((0, 20), (0.0, 0.1611)), ((1, 29), (0.0061, 0.1718))]


@pytest.mark.parametrize("counts,expected", NEWCOMBE)
def test_wilson_matches_published_values(counts, expected):
    low, high = wilson_interval(*counts)
    assert (round(low, 4), round(high, 4)) == expected


def _wilson_closed_form(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The textbook formula fgvc used before scipy's (Wilson 1927)."""
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    p, denom = k / n, 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def test_wilson_is_the_closed_form_on_a_grid():
    grid = [(k, n) for n in (*range(1, 41), 263, 1000, 10007)
            for k in sorted({0, 1, n // 3, n // 2, n - 1, n} & set(range(n + 1)))]
    for k, n in grid:
        for confidence in (0.9, 0.95, 0.99):
            got, want = wilson_interval(k, n, confidence), _wilson_closed_form(k, n, confidence)
            assert got == pytest.approx(want, abs=1e-12), (k, n, confidence)


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError, match="n > 0"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 4)


def test_accuracy_ci_is_in_percent_and_brackets_the_rate():
    low, high = accuracy_ci(1500, 2000)
    assert low < 75.0 < high and high - low < 4


def _mcnemar_by_hand(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar: twice the smaller binomial tail at p = 1/2, capped at 1."""
    n, k = only_a + only_b, min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("only_a,only_b", [(5, 1), (0, 5), (12, 30), (40, 41), (3, 3)])
def test_mcnemar_matches_direct_binomial_sum(only_a, only_b):
    both = 17
    a = np.array([1] * only_a + [0] * only_b + [1] * both + [0] * 9, dtype=bool)
    b = np.array([0] * only_a + [1] * only_b + [1] * both + [0] * 9, dtype=bool)
    result = mcnemar_exact(a, b)
    assert (result.only_a, result.only_b) == (only_a, only_b)
    assert result.p_value == pytest.approx(_mcnemar_by_hand(only_a, only_b), rel=1e-9)


def test_mcnemar_known_values_and_shape_check():
    # 0 vs 5 discordant pairs: 2 / 2^5.
    assert mcnemar_exact(np.zeros(5, bool), np.ones(5, bool)).p_value == pytest.approx(0.0625)
    assert mcnemar_exact(np.ones(4, bool), np.ones(4, bool)).p_value == 1.0
    with pytest.raises(ValueError, match="same images"):
        mcnemar_exact(np.ones(3, bool), np.ones(4, bool))


def test_bootstrap_close_to_wilson_for_large_n():
    hits = np.r_[np.ones(750, bool), np.zeros(250, bool)]
    boot = bootstrap_interval(hits, resamples=1000)
    wilson = wilson_interval(750, 1000)
    assert abs(boot[0] - wilson[0]) < 0.01 and abs(boot[1] - wilson[1]) < 0.01


def test_hits_round_trip():
    rng = np.random.default_rng(0)
    hits = rng.random(1003) < 0.7
    assert np.array_equal(unpack_hits(pack_hits(hits), len(hits)), hits)
