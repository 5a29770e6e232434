"""Fitting helpers of ``scripts/estimate_synthetic_params.py``: the parameter model from data.

Each helper fits one of the parameter model's distributions or models on real values; numbers
are rounded to six significant digits for the JSON.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats
from scipy.special import ndtri

from fedgaze.data.synthetic.arrays import FloatArray
from fedgaze.data.synthetic.params import (
    BetaDist,
    Box,
    Categorical,
    Logistic,
    LogNormal,
    MixedEffect,
    QuantileTable,
)


def quantile_table(values: FloatArray, knots: int = 201) -> QuantileTable:
    """Inverse-CDF knots of an empirical distribution (exact min and max at the ends)."""
    probs = np.linspace(0.0, 1.0, knots)
    q = np.quantile(np.asarray(values, np.float64), probs)
    return QuantileTable(
        probs=tuple(round(float(p), 6) for p in probs), values=tuple(round_sig(v) for v in q)
    )


def round_sig(v: float, digits: int = 6) -> float:
    """Round for the JSON (significant digits)."""
    return float(f"{float(v):.{digits}g}")


def categorical(values: Sequence[float]) -> Categorical:
    """Frequencies of the observed values."""
    counts = Counter(float(v) for v in values)
    keys = sorted(counts)
    total = sum(counts.values())
    return Categorical(values=tuple(keys), probs=tuple(round_sig(counts[k] / total) for k in keys))


def lognormal(values: FloatArray) -> LogNormal:
    """Lognormal fit (mean and SD of the logs)."""
    logs = np.log(np.asarray(values, np.float64))
    return LogNormal(mu=round_sig(logs.mean()), sigma=round_sig(logs.std(ddof=1)))


def logit_share(share: FloatArray, n: FloatArray) -> FloatArray:
    """Logit of a share of ``n`` samples, kept finite by half a sample at 0 and 1."""
    n = np.maximum(n, 1.0)
    s = np.clip(share, 0.5 / n, 1.0 - 0.5 / n)
    return np.asarray(np.log(s / (1.0 - s)), np.float64)


def normal_scores(values: FloatArray) -> FloatArray:
    """Rank-based inverse-normal transform (mid-ranks for ties)."""
    return np.asarray(ndtri((stats.rankdata(values) - 0.5) / len(values)), np.float64)


def fit_mixed(
    y: FloatArray,
    covariates: dict[str, FloatArray],
    groups: FloatArray,
) -> MixedEffect:
    """Random-intercept model on the normal scores of ``y`` (rows with NaN are skipped).

    Normal scores: ndtri of the mid-ranks, so the real marginal is kept exactly in
    ``marginal``. OLS gives the fixed effects; the device SD is the variance of device-mean
    residuals less its expected within-device part (mean of s_w^2 / n_g), floored at zero.
    """
    ok = np.isfinite(y) & np.all([np.isfinite(c) for c in covariates.values()], axis=0)
    y, g = y[ok], groups[ok]
    z = normal_scores(y)
    x = np.column_stack([np.ones(len(y)), *(c[ok] for c in covariates.values())])
    beta = np.linalg.lstsq(x, z, rcond=None)[0]
    resid = z - x @ beta
    _, inv, cnt = np.unique(g, return_inverse=True, return_counts=True)
    gmean = np.bincount(inv, resid) / cnt
    within = resid - gmean[inv]
    s2w = float(within @ within) / max(len(y) - len(cnt), 1)
    s2b = float(np.var(gmean, ddof=1)) - float(np.mean(s2w / cnt)) if len(cnt) > 1 else 0.0
    return MixedEffect(
        intercept=round_sig(beta[0]),
        coefs={k: round_sig(b) for k, b in zip(covariates, beta[1:], strict=True)},
        sd_device=round_sig(math.sqrt(max(s2b, 0.0))),
        sd_query=round_sig(math.sqrt(s2w)),
        marginal=quantile_table(y, knots=101),
        n=len(y),
    )


def fit_logistic(y: FloatArray, covariates: dict[str, FloatArray]) -> Logistic:
    """Logistic regression by maximum likelihood."""
    x = np.column_stack([np.ones(len(y)), *covariates.values()])

    def nll(b: FloatArray) -> float:
        eta = x @ b
        return float(np.sum(np.logaddexp(0.0, eta) - y * eta))

    b = optimize.minimize(nll, np.zeros(x.shape[1]), method="BFGS").x
    return Logistic(
        intercept=round_sig(b[0]),
        coefs={k: round_sig(v) for k, v in zip(covariates, b[1:], strict=True)},
        n=len(y),
    )


def fit_negbinom(counts: FloatArray) -> tuple[float, float]:
    """Negative binomial (mean, dispersion k) by maximum likelihood."""

    def nll(theta: FloatArray) -> float:
        mu, k = np.exp(theta)
        return -float(np.sum(stats.nbinom.logpmf(counts, k, k / (k + mu))))

    start = np.log([max(counts.mean(), 0.1), 1.0])
    mu, k = np.exp(optimize.minimize(nll, start, method="Nelder-Mead").x)
    return round_sig(mu), round_sig(k)


def fit_betabinom(k: FloatArray, n: FloatArray) -> BetaDist:
    """Beta-binomial (a, b) by maximum likelihood: a share that varies across devices."""

    def nll(theta: FloatArray) -> float:
        a, b = np.exp(theta)
        return -float(np.sum(stats.betabinom.logpmf(k, n, a, b)))

    a, b = np.exp(optimize.minimize(nll, np.zeros(2), method="Nelder-Mead").x)
    return BetaDist(a=round_sig(a), b=round_sig(b))


def beta_moments(x: FloatArray) -> BetaDist:
    """Beta (a, b) matching the mean and variance of shares in (0, 1)."""
    x = np.clip(x, 0.005, 0.995)
    m, v = float(x.mean()), float(x.var(ddof=1))
    common = max(m * (1 - m) / max(v, 1e-9) - 1.0, 1e-3)
    return BetaDist(a=round_sig(m * common), b=round_sig((1 - m) * common))


def run_lengths(codes: FloatArray) -> FloatArray:
    """Lengths of runs of equal consecutive values."""
    if len(codes) == 0:
        return np.empty(0)
    change = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1], True])
    return np.diff(change).astype(np.float64)


def quantile_box(x: FloatArray, y: FloatArray) -> Box:
    """The 1-99% quantile box of points (one device's panel, robust to a few strays)."""
    x0, x1 = np.quantile(x, [0.01, 0.99])
    y0, y1 = np.quantile(y, [0.01, 0.99])
    return Box(x0=round_sig(x0), y0=round_sig(y0), x1=round_sig(x1), y1=round_sig(y1))
