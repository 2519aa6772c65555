"""How sure an accuracy figure is: confidence intervals on a top-1 and a paired test between two
classifiers scored on the same images.

- ``wilson_interval``: the Wilson score interval for a binomial proportion (the default, named
  ``"wilson"`` wherever fgvc reports it): scipy's ``binomtest(k, n).proportion_ci(method=
  "wilson")``, checked in the tests against published reference values and the closed form.
- ``bootstrap_interval``: percentile bootstrap of the mean of per-image hits (scipy.stats.bootstrap).
- ``mcnemar_exact``: McNemar's exact test on the discordant pairs, i.e. a two-sided binomial test
  of b successes in b + c trials at p = 1/2 (scipy.stats.binomtest).
- ``pack_hits`` / ``unpack_hits``: per-image top-1 hits stored compactly in JSON (base64 of
  ``numpy.packbits``), so a paired test can be run later on two runs' files.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass

import numpy as np

CI_METHOD = "wilson"
CONFIDENCE = 0.95


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of ``successes / n`` as proportions in [0, 1]."""
    from scipy.stats import binomtest

    if n <= 0:
        raise ValueError(f"a confidence interval needs n > 0 trials, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence,
                                                          method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_interval(hits: np.ndarray, confidence: float = CONFIDENCE, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy of per-image ``hits`` (proportions)."""
    from scipy.stats import bootstrap

    data = (np.asarray(hits, dtype=float),)
    res = bootstrap(data, np.mean, confidence_level=confidence, n_resamples=resamples,
                    method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def accuracy_ci(successes: int, n: int, confidence: float = CONFIDENCE) -> list[float]:
    """The Wilson interval in percent, rounded for reports: ``[low, high]``."""
    low, high = wilson_interval(successes, n, confidence)
    return [round(100 * low, 3), round(100 * high, 3)]


@dataclass
class PairedTest:
    """McNemar's exact test of classifier A against classifier B on the same images."""

    only_a: int  # images A gets right and B wrong
    only_b: int  # images B gets right and A wrong
    p_value: float
    test: str = "McNemar exact (two-sided binomial on discordant pairs)"

    def to_dict(self) -> dict:
        return asdict(self)


def mcnemar_exact(hits_a: np.ndarray, hits_b: np.ndarray) -> PairedTest:
    """Paired test of two per-image hit vectors over the same images, in the same order."""
    from scipy.stats import binomtest

    a, b = np.asarray(hits_a, dtype=bool), np.asarray(hits_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired test needs the same images: {a.shape} vs {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return PairedTest(0, 0, 1.0)
    p = binomtest(only_a, only_a + only_b, 0.5, alternative="two-sided").pvalue
    return PairedTest(only_a, only_b, float(min(1.0, p)))


def pack_hits(hits: np.ndarray) -> str:
    return base64.b64encode(np.packbits(np.asarray(hits, dtype=bool)).tobytes()).decode("ascii")


def unpack_hits(text: str, n: int) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    return np.unpackbits(raw)[:n].astype(bool)


def format_ci(value: float, ci: list[float] | None) -> str:
    """``78.1 [76.2, 79.9]``; the value alone when no interval is stored (older runs)."""
    return f"{value:.1f}" if not ci else f"{value:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def format_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def summarise_accuracy(result: dict) -> dict:
    """An ``evaluate`` result ready for ``evaluation.json``: the per-image hits packed
    (``top1_hits``), the top-1 95 % Wilson interval (``top1_ci95``, percent) and its method."""
    out = {k: v for k, v in result.items() if k not in ("hits", "indices")}
    if "correct" in out and out.get("images"):
        out["top1_ci95"] = accuracy_ci(out["correct"], out["images"])
        out["ci_method"] = CI_METHOD
    if "hits" in result:
        out["top1_hits"] = pack_hits(result["hits"])
    return out


def paired_test(a: dict, b: dict) -> PairedTest | None:
    """McNemar between two ``evaluation.json`` entries scored on the same images (``a`` right
    only -> ``only_a``); ``None`` when either lacks per-image hits or the image counts differ."""
    if "top1_hits" not in a or "top1_hits" not in b or a.get("images") != b.get("images"):
        return None
    n = a["images"]
    return mcnemar_exact(unpack_hits(a["top1_hits"], n), unpack_hits(b["top1_hits"], n))


def add_adaptation_tests(evaluation: dict) -> dict:
    """For each resolution scored before and after adaptation: ``after_adaptation[res]
    ["vs_before"]`` = McNemar's exact test (``only_a``: right only after adaptation)."""
    before, after = evaluation.get("before_adaptation", {}), evaluation.get("after_adaptation", {})
    for res, entry in after.items():
        test = paired_test(entry, before[res]) if res in before else None
        if test is not None:
            entry["vs_before"] = test.to_dict()
    return evaluation
