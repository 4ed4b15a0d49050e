"""Confidence intervals of the moment metrics: delete-a-group jackknife over probe examples.

Tokens of one example are correlated, so the resampling unit is the example, never the token.
With ``Options.uncertainty`` the token plan splits every (domain, span) cell by example group
(``tokens.example_groups``: within each domain, the examples in store order cut into G
contiguous runs of nearly equal counts, so each group holds ~1/G of every domain's examples),
and the one pass keeps the Grams and cross-Grams per group beside the cell sums (which are per
cell, hence per group, already). No second read of the store: leaving group g out is a
subtraction - its cells' counts and sums set to 0, its Grams subtracted from the totals
(``drop_group``) - and every metric is then computed by its own registry entry on that
leave-one-group-out view, exactly as on the full one.

For a selection with data in G' >= 2 groups, theta the full-sample value and theta_(g) the value
without group g: se = sqrt((G' - 1) / G' sum_g (theta_(g) - mean_g theta_(g))^2) and the 95%
interval theta -/+ t_(0.975, G' - 1) se. Metrics whose inputs are not kept per group get no
interval (NaN, n_groups = 0), by what they need (``NO_INTERVAL``): the probe and silhouette
(a seeded row subsample: its rows would have to be refitted per group) and centered anisotropy
(its rows are centered by the selection's mean in a second pass: leaving a group out moves that
mean, which the pass cannot follow without a pass per group). The per-sequence effective rank's
sums are kept per (group, domain, span), so it gets an interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from scipy import stats as sps

from repcollapse.analyze.engine.debias import PairSums
from repcollapse.analyze.engine.moments import CellMoments, LayerMoments
from repcollapse.analyze.engine.view import LayerView

NO_INTERVAL: dict[str, str] = {
    "rows": "computed on a seeded row subsample (probe, silhouette): not kept per group",
    "centered_unit": "rows centered by the selection's mean in a second pass: leaving a group "
    "out moves the mean",
}
"""Needs whose metrics get no interval, and why (docs/metrics.md)."""
LEVEL = 0.95


def describe(options: Any) -> dict[str, Any]:
    """What provenance.json records of the intervals (none without ``options.uncertainty``)."""
    if not options.uncertainty:
        return {"computed": False}
    return {
        "computed": True,
        "method": "delete-a-group jackknife over example groups, t interval",
        "level": LEVEL,
        "groups": options.uncertainty_groups,
        "grouping": "within each domain, examples in store order cut into contiguous runs",
        "no_interval_by_need": dict(NO_INTERVAL),
    }


def has_interval(metric: Any) -> bool:
    return not any(n in NO_INTERVAL for n in metric.needs)


def _drop_rows(a: np.ndarray | None, cells: np.ndarray) -> np.ndarray | None:
    if a is None:
        return None
    out = np.array(a, copy=True)
    out[cells] = 0
    return out


def _drop_pairs(p: PairSums | None, cells: np.ndarray) -> PairSums | None:
    if p is None:
        return None
    return PairSums(*(_drop_rows(v, cells) for v in vars(p).values()))


def _drop_member(cm: CellMoments, cells: np.ndarray, g: int) -> CellMoments:
    if cm.Ggd is None or cm.Ggs is None:
        raise ValueError("drop_group: the moments were accumulated without example groups")
    return CellMoments(
        n=_drop_rows(cm.n, cells),
        mu=cm.mu,
        s=_drop_rows(cm.s, cells),
        sq=_drop_rows(cm.sq, cells),
        Gd=cm.Gd - cm.Ggd[g],
        Gs=cm.Gs - cm.Ggs[g],
        unit=_drop_rows(cm.unit, cells),
        ref=cm.ref,
        deb_self=_drop_pairs(cm.deb_self, cells),
    )


def _drop_seq(lm: LayerMoments, g: int) -> dict[str, np.ndarray | None]:
    """The per-sequence sums without group ``g`` (None where the pass kept none)."""
    names = ("seq_sum", "seq_cnt", "seq_skip")
    if lm.seq_groups is None:
        return dict.fromkeys(names)
    return {k: getattr(lm, k) - per[g] for k, per in zip(names, lm.seq_groups, strict=True)}


def drop_group(lm: LayerMoments, g: int) -> LayerMoments:
    """The moments of ``lm`` without example group ``g`` (inputs not kept per group: None)."""
    cells = np.flatnonzero(lm.plan.group_of_cells() == g)
    memo: dict[int, CellMoments] = {}

    def member(cm: CellMoments) -> CellMoments:
        if id(cm) not in memo:
            memo[id(cm)] = _drop_member(cm, cells, g)
        return memo[id(cm)]

    refs = {}
    for role, (ref, (kd, ks)) in lm.refs.items():
        kgd, kgs = lm.ref_groups[role]
        refs[role] = (member(ref), (kd - kgd[g], ks - kgs[g]))
    return replace(
        lm,
        own=member(lm.own),
        refs=refs,
        cunit=None,
        rows=None,
        **_drop_seq(lm, g),
        ref_deb={role: _drop_pairs(p, cells) for role, p in lm.ref_deb.items()},
        ref_groups={},
        seq_groups=None,
    )


def jackknife(theta: float, loo: Sequence[float | None]) -> tuple[float, float, float, int]:
    """(se, ci_low, ci_high, n_groups) from the full value and the leave-one-group-out values;
    NaNs and 0 groups when fewer than 2 or any of them is undefined."""
    vals = [v for v in loo if v is not None and math.isfinite(v)]
    if len(vals) < 2 or len(vals) != len(loo):
        return math.nan, math.nan, math.nan, 0
    v = np.asarray(vals, np.float64)
    k = len(v)
    se = float(np.sqrt((k - 1) / k * np.sum((v - v.mean()) ** 2)))
    t = float(sps.t.ppf(0.5 + LEVEL / 2, k - 1))
    return se, theta - t * se, theta + t * se, k


def groups_in(lm: LayerMoments, sel: tuple[str, str]) -> list[int]:
    """Example groups with kept tokens in the selection."""
    cells = lm.plan.cells_of(sel)
    group = lm.plan.group_of_cells()[cells]
    return sorted({int(x) for x in group[lm.own.n[cells] > 0]})


def with_intervals(
    lm: LayerMoments, rows: list[tuple], metrics: Sequence[Any], options: Any, failed: Any
) -> list[tuple]:
    """``rows`` (metric, version, key, checkpoint, layer, domain, span, value, n) with (se,
    ci_low, ci_high, n_groups) appended: the jackknife where the plan has example groups and the
    metric's inputs are kept per group, NaN and 0 elsewhere. ``failed(metric, sel, exc)``: the
    exception to raise when a metric's code fails on a leave-one-group-out view."""
    none = (math.nan, math.nan, math.nan, 0)
    if lm.plan.n_groups < 2:
        return [(*r, *none) for r in rows]
    entry = {m.name: m for m in metrics}
    wanted: dict[tuple[str, str], list[Any]] = {}
    for r in rows:
        m = entry.get(r[0])
        if m is not None and has_interval(m):
            wanted.setdefault((r[5], r[6]), []).append(m)
    present = {sel: groups_in(lm, sel) for sel in wanted}
    loo: dict[tuple[str, tuple[str, str]], list[float | None]] = {}
    for g in range(lm.plan.n_groups):
        sels = [sel for sel in wanted if g in present[sel]]
        if not sels:
            continue
        view = LayerView(drop_group(lm, g), options)
        for sel in sels:
            for m in wanted[sel]:
                try:
                    value = m.compute(view, sel)
                except Exception as exc:  # a plugin's bug: name it, where, and stop the run
                    raise failed(m, sel, exc) from exc
                loo.setdefault((m.name, sel), []).append(None if value is None else float(value))
            view.release(sel)
    out = []
    for r in rows:
        key = (r[0], (r[5], r[6]))
        out.append((*r, *(jackknife(r[7], loo[key]) if key in loo else none)))
    return out
