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


def _cell_sum(arr: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """sum over ``cells`` of arr[c], without the (cells, d, d) copy fancy indexing would make."""
    out = arr[cells[0]].copy()
    for c in cells[1:]:
        out += arr[c]
    return out


def _combine(cm: CellMoments, cells: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(n, mean, scatter) of the union of ``cells``, cached on ``cm`` (read-only afterwards)."""
    key = tuple(int(c) for c in cells)
    if key not in cm.combined:
        cm.combined[key] = _combine_cells(cm, cells)
    return cm.combined[key]


def _combine_cells(cm: CellMoments, cells: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    n_c = cm.n[cells].astype(np.float64)
    n = float(n_c.sum())
    mu = (n_c[:, None] * cm.mu[cells]).sum(axis=0) / n
    dev = np.sqrt(n_c)[:, None] * (cm.mu[cells] - mu)
    return int(n), mu, _cell_sum(cm.M, cells) + dev.T @ dev


def _fro(cm: CellMoments, cells: np.ndarray) -> float:
    """||scatter||_F of a selection of ``cm``, cached beside its combined moments."""
    key = ("fro", *(int(c) for c in cells))
    if key not in cm.combined:
        M = _combine(cm, cells)[2]
        cm.combined[key] = float(np.sqrt(np.vdot(M, M)))
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
        self.n, self.mu, self.M = _combine(lm.own, self.cells)
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
        if role not in self._cross:
            ref, k_cells = self.lm.refs[role]
            cells = self.cells
            n_c = self.lm.own.n[cells].astype(np.float64)
            _, mu_y, _ = _combine(ref, cells)
            dx = np.sqrt(n_c)[:, None] * (self.lm.own.mu[cells] - self.mu)
            dy = np.sqrt(n_c)[:, None] * (ref.mu[cells] - mu_y)
            K = _cell_sum(k_cells, cells) + dx.T @ dy
            den = _fro(self.lm.own, cells) * _fro(ref, cells)
            cka = float(np.vdot(K, K)) / den if den > 0 else None
            self._cross[role] = CrossStats(K=K, cka=cka)
        return self._cross[role]

    def domain_groups(self) -> list[tuple[int, np.ndarray, float]]:
        """Per domain inside the selection: (count, mean, trace of its scatter), from the cells'
        scatter traces (tr M_d = sum_c tr M_c + sum_c n_c ||mu_c - mu_d||^2)."""
        plan, own, out = self.lm.plan, self.lm.own, []
        traces = np.einsum("cii->c", own.M)
        for di in sorted({plan.cells[c][0] for c in self.cells}):
            cells = np.array([c for c in self.cells if plan.cells[c][0] == di], np.int64)
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
