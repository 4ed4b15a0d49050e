"""Standard errors of the behavioural numbers, and the future-learning curve's summaries.

Pure Python (no torch): every estimator here is a plain function of per-item values, so the
tests check it against analytic cases.

* an accuracy over n items scored 0/1: the binomial SE ``sqrt(p (1 - p) / n)`` (plug-in; it is
  0 at p = 0 or 1, which says "no variation seen", not "no uncertainty": read it with n);
* a mean of per-item values in [0, 1] that are not all 0/1 (e.g. a fraction of checks passed):
  the sample SE ``sd / sqrt(n)``;
* a token-pooled mean (NLL per response token = sum over items of summed NLL / sum of tokens):
  the items are the independent units (tokens of one item are correlated), so the SE is the
  ratio estimator's linearisation over items,
  ``sqrt(n / (n - 1) * sum_i (a_i - r t_i)^2) / sum_i t_i`` with ``r = sum a / sum t``;
  with equal token counts it is the SE of the per-item means;
* a mean of k independent estimates (retention over domains, the future score over tasks):
  ``sqrt(sum se^2) / k``;
* statistics that are not linear in the items (ECE, steps to a threshold): a bootstrap over
  items with a fixed seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

Estimate = dict[str, Any]
"""``{"value": float | None, "se": float | None, "n": int}``."""

BOOTSTRAP_RESAMPLES = 200
BOOTSTRAP_SEED = 0


def estimate(value: float | None, se: float | None, n: int) -> Estimate:
    return {"value": value, "se": se, "n": int(n)}


def binomial_se(p: float, n: int) -> float | None:
    """SE of an accuracy ``p`` over ``n`` independent 0/1 items."""
    if n < 1:
        return None
    return math.sqrt(max(p * (1.0 - p), 0.0) / n)


def mean_se(values: Sequence[float]) -> Estimate:
    """Mean of independent item values with its sample SE (None below 2 items)."""
    n = len(values)
    if n == 0:
        return estimate(None, None, 0)
    m = sum(values) / n
    if n < 2:
        return estimate(m, None, n)
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    return estimate(m, math.sqrt(var / n), n)


def score_estimate(scores: Sequence[float]) -> Estimate:
    """An accuracy (binomial SE) when every item scored 0 or 1, else a mean (sample SE)."""
    n = len(scores)
    if n == 0:
        return estimate(None, None, 0)
    if all(s in (0.0, 1.0) for s in scores):
        p = sum(scores) / n
        return estimate(p, binomial_se(p, n), n)
    return mean_se(scores)


def ratio_estimate(numerators: Sequence[float], denominators: Sequence[float]) -> Estimate:
    """``sum a / sum t`` over items with the linearised SE over items (n = items)."""
    n = len(numerators)
    if n != len(denominators):
        raise ValueError(f"ratio_estimate: {n} numerators for {len(denominators)} denominators")
    total = float(sum(denominators))
    if n == 0 or total <= 0:
        return estimate(None, None, n)
    r = sum(numerators) / total
    if n < 2:
        return estimate(r, None, n)
    ss = sum((a - r * t) ** 2 for a, t in zip(numerators, denominators, strict=True))
    return estimate(r, math.sqrt(n / (n - 1) * ss) / total, n)


def combine_mean(parts: Sequence[Estimate]) -> Estimate:
    """Mean of k independent estimates: SE ``sqrt(sum se^2) / k``, n = total items."""
    parts = [p for p in parts if p.get("value") is not None]
    if not parts:
        return estimate(None, None, 0)
    k = len(parts)
    value = sum(float(p["value"]) for p in parts) / k
    ses = [p.get("se") for p in parts]
    se = None if any(s is None for s in ses) else math.sqrt(sum(s * s for s in ses)) / k  # type: ignore[operator]
    return estimate(value, se, sum(int(p.get("n", 0)) for p in parts))


def bootstrap_se(
    n: int,
    statistic: Callable[[Sequence[int]], float | None],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float | None, int]:
    """SE of ``statistic(item indices)`` by resampling the n items with replacement.

    Returns (se, resamples where the statistic was defined); resamples giving None (e.g. a
    curve that never reaches the threshold) are left out and counted.
    """
    if n < 2:
        return None, 0
    rng = random.Random(seed)
    vals: list[float] = []
    for _ in range(resamples):
        v = statistic([rng.randrange(n) for _ in range(n)])
        if v is not None and math.isfinite(v):
            vals.append(float(v))
    if len(vals) < 2:
        return None, len(vals)
    m = sum(vals) / len(vals)
    return math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)), len(vals)


def curve_auc(steps: Sequence[float], values: Sequence[float]) -> float:
    """Trapezoid area under value(step) divided by the step range (a mean value over the
    adaptation); one point: that point's value."""
    if len(steps) != len(values) or not steps:
        raise ValueError(f"curve_auc: {len(steps)} steps for {len(values)} values")
    if len(steps) < 2 or steps[-1] == steps[0]:
        return float(values[-1])
    area = sum(
        (steps[i + 1] - steps[i]) * (values[i] + values[i + 1]) / 2 for i in range(len(steps) - 1)
    )
    return float(area / (steps[-1] - steps[0]))


def steps_to_threshold(
    steps: Sequence[float], values: Sequence[float], threshold: float
) -> float | None:
    """First step at which the (falling) curve reaches ``value <= threshold``, linearly
    interpolated between evaluated steps; 0 when it starts there; None when it never does
    within the adaptation budget."""
    if len(steps) != len(values) or not steps:
        raise ValueError(f"steps_to_threshold: {len(steps)} steps for {len(values)} values")
    if values[0] <= threshold:
        return float(steps[0])
    for i in range(1, len(steps)):
        if values[i] <= threshold:
            v0, v1 = values[i - 1], values[i]
            frac = (v0 - threshold) / (v0 - v1)
            return float(steps[i - 1] + frac * (steps[i] - steps[i - 1]))
    return None
