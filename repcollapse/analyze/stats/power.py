"""Effects over seeds with family as a fixed effect, their t intervals, and the minimal
detectable effect (MDE) of a t test at a given standard error and degrees of freedom.

A claim is measured once per replicate unit, a (model family, seed) pair. The effect is the
mean over families of each family's mean over its seeds (family as a fixed effect: every
family weighs the same, and the inference is about these families, not a population of them).
Its standard error comes from the seed-to-seed spread within families, pooled:
s^2 = sum_f sum_s (v_fs - mean_f)^2 / (N - F), SE^2 = s^2 / F^2 * sum_f 1 / n_f, df = N - F.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.optimize
import scipy.stats


def power_t(ncp: float, df: float, alpha: float, two_sided: bool) -> float:
    """Power of the t test at noncentrality ``ncp`` (effect / SE); df = inf: the z test.

    One-sided here means the test that rejects when the CI excludes zero on the predicted side
    (a two-sided (1 - alpha) interval read in one direction, so the tail is alpha / 2).
    """
    if np.isinf(df):
        crit = scipy.stats.norm.ppf(1 - alpha / 2)
        up = scipy.stats.norm.sf(crit - ncp)
        return float(up + (scipy.stats.norm.cdf(-crit - ncp) if two_sided else 0.0))
    crit = scipy.stats.t.ppf(1 - alpha / 2, df)
    up = float(scipy.stats.nct.sf(crit, df, ncp))
    # The far tail underflows to NaN in scipy at large noncentrality: it is 0 there.
    low = float(np.nan_to_num(scipy.stats.nct.cdf(-crit, df, ncp))) if two_sided else 0.0
    return up + low


def mde(
    se: float, df: float, alpha: float = 0.05, power: float = 0.8, two_sided: bool = False
) -> float:
    """The smallest true effect the test detects with probability ``power``: ncp* x SE, where
    ncp* solves power_t(ncp*) = power exactly (noncentral t, not the z approximation).

    NaN when the SE or df is unusable (df < 1, SE not finite).
    """
    if not (np.isfinite(se) and se >= 0 and (np.isinf(df) or df >= 1)):
        return float("nan")
    if se == 0:
        return 0.0

    def gap(k: float) -> float:
        return power_t(k, df, alpha, two_sided) - power

    hi = 4.0
    while gap(hi) < 0:  # power rises with the noncentrality: widen until it brackets
        hi *= 2
    ncp = scipy.optimize.brentq(gap, 0.0, hi, xtol=1e-10)
    return float(ncp * se)


@dataclass(frozen=True)
class SeedEffect:
    effect: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    n_units: int
    n_families: int
    n_seeds: int
    """The smallest number of seeds any family contributes."""
    sd: float
    """Pooled within-family seed-to-seed standard deviation of the unit values (NaN: none)."""
    design: float
    """sum_f 1 / n_f / F^2: SE^2 = variance of one unit value x design."""


def seed_effect(units: pd.DataFrame, alpha: float = 0.05) -> SeedEffect:
    """The fixed-family mean of ``units['value']`` (columns model_family, seed, value)."""
    u = units.dropna(subset=["value"])
    nan = float("nan")
    if u.empty:
        return SeedEffect(nan, nan, nan, nan, nan, 0, 0, 0, nan, nan)
    g = u.groupby("model_family")["value"]
    means, counts = g.mean(), g.size()
    n, f = len(u), len(means)
    effect = float(means.mean())
    df = n - f
    design = float((1.0 / counts).sum()) / f**2
    se = lo = hi = sd = nan
    if df >= 1:
        s2 = float(((u["value"] - u["model_family"].map(means)) ** 2).sum()) / df
        sd, se = float(np.sqrt(s2)), float(np.sqrt(s2 * design))
        half = float(scipy.stats.t.ppf(1 - alpha / 2, df)) * se
        lo, hi = effect - half, effect + half
    return SeedEffect(effect, se, float(df), lo, hi, n, f, int(counts.min()), sd, design)


def seed_mde(
    eff: SeedEffect,
    alpha: float = 0.05,
    power: float = 0.8,
    two_sided: bool = False,
    item_var: float | None = None,
) -> float:
    """MDE of a fixed-family mean over ``eff``'s seeds.

    ``item_var`` is the measurement variance of one unit value from the probe or evaluation
    items alone (None or NaN: unknown). The variance of a unit value is the seed spread floored
    by it (a seed spread below the item noise is luck); with no seed spread (one seed per
    family) the item noise alone gives a z-test MDE, a lower bound (seeds only add variance).
    The CI is not floored: it is the interval over seeds.
    """
    iv = item_var if item_var is not None and np.isfinite(item_var) else None
    if eff.n_units == 0:
        return float("nan")
    if np.isfinite(eff.sd):
        var, df = (max(eff.sd**2, iv) if iv is not None else eff.sd**2), eff.df
    elif iv is not None:
        var, df = iv, float("inf")
    else:
        return float("nan")
    if var == 0:  # no spread and no item noise known: nothing says how small an effect shows
        return float("nan")
    return mde(float(np.sqrt(var * eff.design)), df, alpha, power, two_sided)
