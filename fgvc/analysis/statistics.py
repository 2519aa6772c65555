"""How sure an accuracy figure is: confidence intervals on a top-1 and a paired test between two
classifiers scored on the same images.

- ``wilson_interval``: the Wilson score interval for a binomial proportion (the default, named
  ``"wilson"`` wherever fgvc reports it): scipy's ``binomtest(k, n).proportion_ci(method=
  "wilson")``, checked in the tests against published reference values and the closed form.
- ``bootstrap_interval``: percentile bootstrap of the mean of per-image hits (scipy.stats.bootstrap).
- ``mcnemar_exact``: McNemar's exact test on the discordant pairs, i.e. a two-sided binomial test
  of b successes in b + c trials at p = 1/2 (scipy.stats.binomtest), with the gain (A's top-1
  minus B's, on the same images) and its 95 % interval (``newcombe_paired_interval``).
- ``newcombe_paired_interval``: Newcombe's method 10 for the difference of paired proportions.
- ``pack_hits`` / ``unpack_hits``: per-image top-1 hits stored compactly in JSON (base64 of
  ``numpy.packbits``), so a paired test can be run later on two runs' files.
"""

from __future__ import annotations

import base64
import math
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


GAIN_CI_METHOD = "Newcombe method 10 (hybrid score, paired)"


@dataclass(frozen=True)
class PairedCounts:
    """The 2 x 2 table of two classifiers' top-1 hits on the same images."""

    both: int  # right under A and under B
    only_a: int  # A right, B wrong
    only_b: int  # B right, A wrong
    neither: int

    @property
    def images(self) -> int:
        return self.both + self.only_a + self.only_b + self.neither

    @classmethod
    def from_hits(cls, hits_a: np.ndarray, hits_b: np.ndarray) -> PairedCounts:
        a, b = np.asarray(hits_a, dtype=bool), np.asarray(hits_b, dtype=bool)
        if a.shape != b.shape:
            raise ValueError(f"paired test needs the same images: {a.shape} vs {b.shape}")
        return cls(int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum()),
                   int((~a & ~b).sum()))


def newcombe_paired_interval(counts: PairedCounts, confidence: float = CONFIDENCE
                             ) -> tuple[float, float]:
    """Interval of p_A - p_B (proportions) for paired data: Newcombe's method 10.

    Written here because neither scipy nor any other dependency of fgvc offers it
    (statsmodels, not a dependency, added one only recently). Newcombe, "Improved confidence
    intervals for the difference between binomial proportions based on paired data", Stat. Med.
    17:2635-2650 (1998), section 5: with the Wilson intervals (l1, u1) of p_A and (l2, u2) of
    p_B and theta = p_A - p_B,

        lower = theta - sqrt((p_A - l1)^2 - 2 phi (p_A - l1)(u2 - p_B) + (u2 - p_B)^2)
        upper = theta + sqrt((u1 - p_A)^2 - 2 phi (u1 - p_A)(p_B - l2) + (p_B - l2)^2)

    where phi is the correlation of the 2 x 2 table, (ad - bc) / sqrt of the product of its
    four margins, with ad - bc replaced by max(ad - bc - n/2, 0) when it is positive, and 0
    when a margin is empty. Unlike a Wald interval it stays inside [-1, 1] and does not
    collapse to a point when no image changes.
    """
    n = counts.images
    right_a, right_b = counts.both + counts.only_a, counts.both + counts.only_b
    p_a, p_b = right_a / n, right_b / n
    l1, u1 = wilson_interval(right_a, n, confidence)
    l2, u2 = wilson_interval(right_b, n, confidence)
    phi = _paired_phi(counts)
    theta = p_a - p_b
    return (max(-1.0, theta - _combined(p_a - l1, u2 - p_b, phi)),
            min(1.0, theta + _combined(u1 - p_a, p_b - l2, phi)))


def _combined(x: float, y: float, phi: float) -> float:
    """sqrt(x^2 - 2 phi x y + y^2): two half-widths added as correlated errors."""
    return math.sqrt(max(x * x - 2 * phi * x * y + y * y, 0.0))


def _paired_phi(counts: PairedCounts) -> float:
    """Newcombe's continuity-corrected phi coefficient of the 2 x 2 table (method 10)."""
    a, b, c, d = counts.both, counts.only_a, counts.only_b, counts.neither
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    if margins == 0:
        return 0.0
    cross = a * d - b * c
    if cross > 0:
        cross = max(cross - counts.images / 2, 0.0)
    return cross / math.sqrt(margins)


@dataclass
class PairedTest:
    """McNemar's exact test of classifier A against classifier B on the same images, and A's
    gain over B in top-1 percentage points with its Newcombe interval."""

    only_a: int  # images A gets right and B wrong
    only_b: int  # images B gets right and A wrong
    p_value: float
    test: str = "McNemar exact (two-sided binomial on discordant pairs)"
    images: int | None = None
    gain: float | None = None  # top-1 of A minus top-1 of B, percentage points
    gain_ci95: list[float] | None = None  # [low, high], percentage points
    gain_ci_method: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def mcnemar_exact(hits_a: np.ndarray, hits_b: np.ndarray) -> PairedTest:
    """Paired test of two per-image hit vectors over the same images, in the same order, with
    the gain of A over B and its 95 % interval."""
    counts = PairedCounts.from_hits(hits_a, hits_b)
    if counts.images == 0:
        return PairedTest(0, 0, 1.0, images=0)
    low, high = newcombe_paired_interval(counts)
    return PairedTest(counts.only_a, counts.only_b, mcnemar_p(counts.only_a, counts.only_b),
                      images=counts.images,
                      gain=round(100 * (counts.only_a - counts.only_b) / counts.images, 3),
                      gain_ci95=[round(100 * low, 3), round(100 * high, 3)],
                      gain_ci_method=GAIN_CI_METHOD)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value of the discordant counts (1 when there are none)."""
    from scipy.stats import binomtest

    if only_a + only_b == 0:
        return 1.0
    p = binomtest(only_a, only_a + only_b, 0.5, alternative="two-sided").pvalue
    return float(min(1.0, p))


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


def format_gain(gain: float | None, ci: list[float] | None = None, p: float | None = None) -> str:
    """``+2.5 pts [+0.8, +4.1] (McNemar p = 0.004)``: a gain in top-1 percentage points, its
    interval and the paired test's p-value; what is not stored (older runs) is left out."""
    parts = [] if gain is None else [f"{gain:+.1f} pts"]
    if gain is not None and ci:
        parts.append(f"[{ci[0]:+.1f}, {ci[1]:+.1f}]")
    if p is not None:
        shown = format_p(p)
        test = f"McNemar p {'< ' + shown[1:] if shown.startswith('<') else '= ' + shown}"
        parts.append(f"({test})" if parts else test)
    return " ".join(parts) or "-"


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
