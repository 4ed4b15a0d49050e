"""Selection statistics from cell moments: what every moment metric reads.

A selection (the whole probe, a domain, a span) is a union of (domain, span) cells. Its count,
mean and scatter come from the cells' by the parallel-variance formula
``M = sum_c M_c + sum_c n_c (mu_c - mu)(mu_c - mu)^T`` (exact, float64), and the centered
cross scatter with a reference checkpoint likewise. Eigenvalues are computed at most once per
selection and only when a metric asks for them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from analyze.moments import CellMoments, LayerMoments
from analyze.tokens import Selection


def _combine(cm: CellMoments, cells: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    n_c = cm.n[cells].astype(np.float64)
    n = float(n_c.sum())
    mu = (n_c[:, None] * cm.mu[cells]).sum(axis=0) / n
    dev = np.sqrt(n_c)[:, None] * (cm.mu[cells] - mu)
    return int(n), mu, cm.M[cells].sum(axis=0) + dev.T @ dev


@dataclass
class CrossStats:
    """Centered cross scatter ``K = Xc^T Yc`` (target X, reference Y) and the reference's own
    scatter, on the selection's tokens."""

    K: np.ndarray
    M_ref: np.ndarray


class SelectionStats:
    """n, mean, scatter and derived spectra of one selection of one target."""

    def __init__(self, lm: LayerMoments, sel: Selection) -> None:
        self.lm, self.sel = lm, sel
        self.cells = lm.plan.cells_of(sel)
        self.n, self.mu, self.M = _combine(lm.own, self.cells)
        self.d = self.M.shape[0]

    @property
    def max_rank(self) -> int:
        """min(N - 1, d): the most non-zero covariance eigenvalues N rows can have."""
        return max(1, min(self.n - 1, self.d))

    @functools.cached_property
    def cov(self) -> np.ndarray:
        return self.M / max(self.n - 1, 1)

    @functools.cached_property
    def eig_cov(self) -> np.ndarray:
        """Covariance eigenvalues, descending, clipped at 0 (round-off negatives)."""
        return np.clip(np.linalg.eigvalsh(self.cov)[::-1], 0.0, None)

    @functools.cached_property
    def sv_uncentered(self) -> np.ndarray:
        """Singular values of the uncentered H: sqrt of the eigenvalues of H^T H = M + n mu mu^T."""
        second = self.M + self.n * np.outer(self.mu, self.mu)
        return np.sqrt(np.clip(np.linalg.eigvalsh(second)[::-1], 0.0, None))

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
        ref, k_cells = self.lm.refs[role]
        cells = self.cells
        n_c = self.lm.own.n[cells].astype(np.float64)
        _, mu_y, M_ref = _combine(ref, cells)
        dx = np.sqrt(n_c)[:, None] * (self.lm.own.mu[cells] - self.mu)
        dy = np.sqrt(n_c)[:, None] * (ref.mu[cells] - mu_y)
        return CrossStats(K=k_cells[cells].sum(axis=0) + dx.T @ dy, M_ref=M_ref)

    def domain_groups(self) -> list[tuple[int, np.ndarray, float]]:
        """Per domain inside the selection: (count, mean, trace of its scatter)."""
        plan, out = self.lm.plan, []
        for di in sorted({plan.cells[c][0] for c in self.cells}):
            cells = np.array([c for c in self.cells if plan.cells[c][0] == di], np.int64)
            n, mu, M = _combine(self.lm.own, cells)
            out.append((n, mu, float(np.trace(M))))
        return out


class LayerView:
    """The metrics' window on one target at one layer: selection stats cached per selection."""

    def __init__(self, lm: LayerMoments, options: Any) -> None:
        self.lm, self.options = lm, options
        self._stats: dict[Selection, SelectionStats] = {}

    @property
    def plan(self) -> Any:
        return self.lm.plan

    def stats(self, sel: Selection) -> SelectionStats:
        if sel not in self._stats:
            self._stats[sel] = SelectionStats(self.lm, sel)
        return self._stats[sel]
