"""Selection statistics from cell moments: what every moment metric reads.

A selection (the whole probe, a domain, a span) is a union of (domain, span) cells. Its count
and mean come from the cells'; its centered scatter from its shifted Gram (the domain's or the
span's; the whole probe's is the sum over domains) and the cells' sums by the parallel-variance
formula ``M = G - sum_c s_c s_c^T / n_c + sum_c n_c (mu_c - mu)(mu_c - mu)^T`` (exact, float64),
and the centered cross scatter with a reference checkpoint likewise. Eigenvalues are computed at most once per
selection and only when a metric asks for them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from repcollapse.analyze.engine.debias import centered_fourth, debiased_cka, unbiased_hsic
from repcollapse.analyze.engine.moments import (
    CellMoments,
    LayerMoments,
    cross_scatter,
    group_gram,
    selection_scatter,
)
from repcollapse.analyze.engine.tokens import Selection


def _combine(cm: CellMoments, sel: Selection, plan: Any) -> tuple[int, np.ndarray, np.ndarray]:
    """(n, mean, scatter) of a selection of ``cm``, cached on ``cm`` (read-only afterwards)."""
    if sel not in cm.combined:
        cells = plan.cells_of(sel)
        cm.combined[sel] = selection_scatter(cm, cells, cm.gram(sel, plan))
    return cm.combined[sel]


def _fro(cm: CellMoments, sel: Selection, plan: Any) -> float:
    """||scatter||_F of a selection of ``cm``, cached beside its combined moments."""
    key = ("fro", sel)
    if key not in cm.combined:
        M = _combine(cm, sel, plan)[2]
        cm.combined[key] = float(np.sqrt(np.vdot(M, M)))
    return cm.combined[key]


def _self_fourth(cm: CellMoments, sel: Selection, plan: Any) -> float:
    """sum over the selection's rows of ||x_i - mu||^4, cached beside its combined moments."""
    key = ("fourth", sel)
    if key not in cm.combined:
        _, mu, _ = _combine(cm, sel, plan)
        cells = plan.cells_of(sel)
        cm.combined[key] = centered_fourth(
            cm.deb_self, cm, cm, cells, plan, mu, mu, cm.gram(sel, plan)
        )
    return cm.combined[key]


@dataclass
class CrossStats:
    """Centered cross scatter ``K = Xc^T Yc`` (target X, reference Y) on the selection's tokens,
    and linear CKA = ||K||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) (None if a scatter is 0)."""

    K: np.ndarray
    cka: float | None


class SelectionStats:
    """n, mean, scatter and derived spectra of one selection of one target."""

    def __init__(self, lm: LayerMoments, sel: Selection) -> None:
        self.lm, self.sel = lm, sel
        self.cells = lm.plan.cells_of(sel)
        self.n, self.mu, self.M = _combine(lm.own, sel, lm.plan)
        self.d = self.M.shape[0]
        self._cross: dict[str, CrossStats] = {}

    @property
    def max_rank(self) -> int:
        """min(N - 1, d): the most non-zero covariance eigenvalues N rows can have."""
        return max(1, min(self.n - 1, self.d))

    @functools.cached_property
    def cov(self) -> np.ndarray:
        return self.M / max(self.n - 1, 1)

    @functools.cached_property
    def _eig_scatter(self) -> np.ndarray:
        """Eigenvalues of the centered scatter M, descending, as computed (round-off included)."""
        return np.linalg.eigvalsh(self.M)[::-1].copy()

    @functools.cached_property
    def top_scatter(self) -> float:
        """The largest eigenvalue of M: the scale of the products' round-off (RankMe's floor)."""
        return max(float(self._eig_scatter[0]), 0.0)

    @functools.cached_property
    def eig_cov(self) -> np.ndarray:
        """Covariance eigenvalues, descending, clipped at 0 and 0 beyond the rank N - 1 that N
        rows allow. No noise floor here: in the entropy, round-off eigenvalues weigh ~eps each
        (measured: 4.5e-5 relative on a rank-1 selection), while a floor drops genuine small
        eigenvalues beside a 29,000-sized sink direction (3.5e-5 relative)."""
        lam = np.clip(self._eig_scatter, 0.0, None)
        lam[self.max_rank :] = 0.0
        return lam / max(self.n - 1, 1)

    @functools.cached_property
    def eig_second(self) -> np.ndarray:
        """Eigenvalues of H^T H = M + n mu mu^T (the uncentered second moment), descending, as
        computed: RankMe (repcollapse.analyze.metrics.spectrum) applies its round-off floor and rank cap."""
        return np.linalg.eigvalsh(self.M + self.n * np.outer(self.mu, self.mu))[::-1].copy()

    @property
    def unit_sum(self) -> np.ndarray | None:
        u = self.lm.own.unit
        return None if u is None else u[self.cells].sum(axis=0)

    @property
    def centered_unit_sum(self) -> np.ndarray | None:
        if self.lm.cunit is None:
            return None
        return self.lm.cunit[self.lm.plan.selection_index(self.sel)]

    def cross(self, role: str) -> CrossStats | None:
        """Against the 'base' or 'parent' checkpoint; None when the target has none."""
        if role not in self.lm.refs:
            return None
        if role not in self._cross:
            ref, (kd, ks) = self.lm.refs[role]
            plan = self.lm.plan
            K = cross_scatter(self.lm.own, ref, self.cells, group_gram(kd, ks, self.sel, plan))
            den = _fro(self.lm.own, self.sel, plan) * _fro(ref, self.sel, plan)
            cka = float(np.vdot(K, K)) / den if den > 0 else None
            self._cross[role] = CrossStats(K=K, cka=cka)
        return self._cross[role]

    def cka_debiased(self, role: str) -> float | None:
        """Debiased linear CKA against the 'base' or 'parent' checkpoint (repcollapse.analyze.engine.debias); None
        without that reference, without the pass's debias sums, or below 4 rows."""
        cs = self.cross(role)
        if cs is None or role not in self.lm.ref_deb or self.n < 4:
            return None
        ref, (kd, ks) = self.lm.refs[role]
        plan, own, sel, n = self.lm.plan, self.lm.own, self.sel, self.n
        _, mu_r, M_r = _combine(ref, sel, plan)
        fourth = centered_fourth(
            self.lm.ref_deb[role],
            own,
            ref,
            self.cells,
            plan,
            self.mu,
            mu_r,
            group_gram(kd, ks, sel, plan),
        )
        tr_x, tr_y = float(np.trace(self.M)), float(np.trace(M_r))
        h_xy = unbiased_hsic(float(np.vdot(cs.K, cs.K)), fourth, tr_x, tr_y, n)
        h_xx = unbiased_hsic(_fro(own, sel, plan) ** 2, _self_fourth(own, sel, plan), tr_x, tr_x, n)
        h_yy = unbiased_hsic(_fro(ref, sel, plan) ** 2, _self_fourth(ref, sel, plan), tr_y, tr_y, n)
        return debiased_cka(h_xy, h_xx, h_yy)

    def domain_groups(self) -> list[tuple[int, np.ndarray, float]]:
        """Per domain inside the selection: (count, mean, trace of its scatter), from the cells'
        sums of squares (tr M_c = sq_c - ||s_c||^2 / n_c, then the parallel-variance formula)."""
        plan, own, out = self.lm.plan, self.lm.own, []
        present = self.cells[own.n[self.cells] > 0]
        n_all = np.maximum(own.n, 1).astype(np.float64)
        traces = own.sq - np.einsum("cj,cj->c", own.s, own.s) / n_all
        for di in sorted({plan.cells[c][0] for c in present}):
            cells = np.array([c for c in present if plan.cells[c][0] == di], np.int64)
            n_c = own.n[cells].astype(np.float64)
            mu = (n_c[:, None] * own.mu[cells]).sum(axis=0) / n_c.sum()
            tr = float(traces[cells].sum() + (n_c * ((own.mu[cells] - mu) ** 2).sum(axis=1)).sum())
            out.append((int(n_c.sum()), mu, tr))
        return out


class LayerView:
    """The metrics' window on one target at one layer: selection stats cached per selection."""

    def __init__(self, lm: LayerMoments, options: Any) -> None:
        self.lm, self.options = lm, options
        self._stats: dict[Selection, SelectionStats] = {}

    @property
    def plan(self) -> Any:
        return self.lm.plan

    def release(self, sel: Selection) -> None:
        """Drop a selection's derived matrices (its combined moments stay cached)."""
        self._stats.pop(sel, None)

    def stats(self, sel: Selection) -> SelectionStats:
        if sel not in self._stats:
            self._stats[sel] = SelectionStats(self.lm, sel)
        return self._stats[sel]
