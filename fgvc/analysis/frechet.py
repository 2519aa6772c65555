"""The parametric model of the paper's appendix A.1: pooled activations follow a Fréchet
(inverse Weibull, generalised-extreme-value with shape xi > 0) distribution with xi fixed at 0.3,

    P(x; mu, sigma) = exp(-(1 + xi (x - mu) / sigma) ** (-1 / xi)),

fitted by least squares to the empirical CDF with the zeros excluded (they are outliers of the
model: the pooled ReLU output of an all-negative map). scipy's ``genextreme.fit`` is a maximum
likelihood fit of all three parameters, not the paper's procedure, hence this small fit with
``scipy.optimize.least_squares``.

The equalisation map of the paper is the scalar affine transform that sends Fréchet(mu0, sigma0)
(measured at K_test) onto Fréchet(mu_ref, sigma_ref) (measured at K_train), applied to the
non-zero values only: ``x -> mu_ref + sigma_ref / sigma0 * (x - mu0)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

XI = 0.3


def frechet_cdf(x: np.ndarray, mu: float, sigma: float, xi: float = XI) -> np.ndarray:
    t = 1 + xi * (np.asarray(x, dtype=float) - mu) / sigma
    out = np.zeros_like(t)
    pos = t > 0
    out[pos] = np.exp(-t[pos] ** (-1 / xi))
    return out


@dataclass(frozen=True)
class FrechetFit:
    mu: float
    sigma: float
    xi: float
    samples: int  # non-zero values the fit used
    zeros: float  # fraction of exact zeros, excluded from the fit


def fit_frechet(values: np.ndarray, xi: float = XI, points: int = 1000) -> FrechetFit:
    """Least-squares fit of (mu, sigma) of the CDF above, zeros excluded.

    The empirical CDF is taken at ``points`` quantiles of the non-zero values; the start is the
    method-of-moments solution for the same xi."""
    from scipy.optimize import least_squares

    flat = np.asarray(values, dtype=np.float64).ravel()
    positive = flat[flat > 0]
    if positive.size < 10:
        raise ValueError(f"a Fréchet fit needs at least 10 non-zero activations, got {positive.size}")
    levels = (np.arange(points) + 0.5) / points
    x = np.quantile(positive, levels)
    g1, g2 = math.gamma(1 - xi), math.gamma(1 - 2 * xi)
    sigma0 = max(float(positive.std()) * xi / math.sqrt(g2 - g1 * g1), 1e-6)
    mu0 = float(positive.mean()) - sigma0 * (g1 - 1) / xi

    def residuals(p: np.ndarray) -> np.ndarray:
        return frechet_cdf(x, p[0], math.exp(p[1]), xi) - levels

    fit = least_squares(residuals, [mu0, math.log(sigma0)], method="lm")
    return FrechetFit(float(fit.x[0]), float(math.exp(fit.x[1])), xi, int(positive.size),
                      float(1 - positive.size / max(flat.size, 1)))


def equalise(values: np.ndarray, source: FrechetFit, target: FrechetFit) -> np.ndarray:
    """The paper's affine map (non-zero values only), in numpy, for checks and plots."""
    v = np.asarray(values, dtype=np.float64)
    return np.where(v > 0, target.mu + target.sigma / source.sigma * (v - source.mu), v)
