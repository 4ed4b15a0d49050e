"""Debiased linear CKA (the unbiased HSIC estimator of Song et al. 2012, as in Kornblith et al.
2019), in feature space and from one pass.

Linear CKA of N rows in d features is biased upwards when N is not much larger than d: two
independent Gaussian matrices with N = 2d have a biased CKA near 0.5. The unbiased HSIC of the
linear kernels K = X X^T, L = Y Y^T, with the diagonals zeroed (K~, L~), is

    HSIC_u = [tr(K~ L~) + 1'K~1 1'L~1 / ((N-1)(N-2)) - 2 / (N-2) 1'K~L~1] / (N (N-3))

and it is exactly invariant to a common shift of the rows of X (or of Y). On rows centered by
the selection's mean (X_c, Y_c, with a_i = ||x_i - mu_x||^2, b_i = ||y_i - mu_y||^2) it reduces
to (the common factor 1 / (N (N-3)) dropped, it cancels in the ratio)

    H(X, Y) = ||Y_c^T X_c||_F^2 - N / (N-2) sum_i a_i b_i + (sum_i a_i)(sum_i b_i) / ((N-1)(N-2))

and CKA_debiased = H(X, Y) / sqrt(H(X, X) H(Y, Y)). It may be negative; it is not reported when
H(X, X) or H(Y, Y) is not positive or N < 4.

Everything but sum_i a_i b_i comes from the moments the pass already keeps (the centered cross
scatter, the traces of the scatters). That fourth-moment sum needs the selection's mean, known
only after the pass; the pass works on rows u_i = x_i - r_d shifted by their domain's reference
r_d. With e_d = r_d - mu_x, f_d = r'_d - mu_y (y's reference r'_d), a_i = ||u_i + e_d||^2, and
expanding the product gives sums over rows that the pass can keep per (domain, span) cell
(``PairSums``; O(N d) per chunk, no d x d products):

    sum a b  = sum_c [ab + 2 f.av + ||f||^2 sq_x + 2 e.bu + 2 ||f||^2 e.s_x + ||e||^2 sq_y
                      + 2 ||e||^2 f.s_y + n ||e||^2 ||f||^2] + 4 sum_c e^T K_c f

with, per cell c, ab = sum ||u||^2 ||v||^2, av = sum ||u||^2 v, bu = sum ||v||^2 u, the counts,
sums and sums of squares (n, s, sq) of ``CellMoments``, and the last term from
sum_c e^T K_c f = sum_c [r^T K_c r' - mu_x . K_c r' - (K_c^T r) . mu_y] + mu_x^T K_S mu_y, where
K_S is the selection's shifted cross-Gram the pass keeps anyway (rk = K_c^T r_d, kr = K_c r'_d,
rkr = r_d^T K_c r'_d per cell). The same with y = x gives H(X, X).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from repcollapse.analyze.engine.tokens import TokenPlan
from repcollapse.analyze.engine.xp import to_numpy


class CellMoments(Protocol):
    """What ``centered_fourth`` reads of a member's cell moments (``moments.CellMoments``, which
    imports this module: a protocol here rather than an import back)."""

    n: np.ndarray
    s: np.ndarray
    sq: np.ndarray
    ref: np.ndarray | None


@dataclass
class PairSums:
    """Per (domain, span) cell, for shifted rows u (target) and v (reference) on the same tokens,
    a = ||u||^2, b = ||v||^2, r / r' the domain references of u / v."""

    ab: Any
    """(C,) sum a b."""
    av: Any
    """(C, d) sum a v."""
    bu: Any
    """(C, d) sum b u."""
    kr: Any
    """(C, d) sum u (v . r'): K_c r'."""
    rk: Any
    """(C, d) sum v (u . r): K_c^T r."""
    rkr: Any
    """(C,) sum (u . r)(v . r'): r^T K_c r'."""

    @classmethod
    def zeros(cls, xp: Any, n_cells: int, d: int) -> PairSums:
        return cls(
            ab=xp.zeros(n_cells),
            av=xp.zeros((n_cells, d)),
            bu=xp.zeros((n_cells, d)),
            kr=xp.zeros((n_cells, d)),
            rk=xp.zeros((n_cells, d)),
            rkr=xp.zeros(n_cells),
        )

    def to_host(self) -> PairSums:
        return PairSums(*(np.asarray(to_numpy(v), np.float64) for v in vars(self).values()))


def fold(
    sums: PairSums,
    x: Any,
    y: Any,
    a: Any,
    b: Any,
    rx: Any,
    ry: Any,
    segs: Sequence[tuple[int, int, int]],
    plan: TokenPlan,
) -> None:
    """Add a chunk's rows to ``sums``: ``x``, ``y`` the shifted rows in cell order (``y is x`` for
    a checkpoint with itself), ``a``, ``b`` their squared norms, ``rx``, ``ry`` the per-domain
    references that were subtracted, ``segs`` the chunk's (cell, start, stop) runs."""
    for ci, lo, hi in segs:
        di = plan.cells[ci][0]
        u, v = x[lo:hi], y[lo:hi]
        aa, bb = a[lo:hi], b[lo:hi]
        pu, pv = u @ rx[di], v @ ry[di]
        sums.ab[ci] += float((aa.astype(np.float64) * bb).sum())
        sums.av[ci] += v.T @ aa
        sums.bu[ci] += u.T @ bb
        sums.kr[ci] += u.T @ pv
        sums.rk[ci] += v.T @ pu
        sums.rkr[ci] += float((pu.astype(np.float64) * pv).sum())


def centered_fourth(
    sums: PairSums,
    x: CellMoments,
    y: CellMoments,
    cells: np.ndarray,
    plan: TokenPlan,
    mu_x: np.ndarray,
    mu_y: np.ndarray,
    K_S: np.ndarray,
) -> float:
    """sum over the selection's rows (``cells``) of ||x_i - mu_x||^2 ||y_i - mu_y||^2 (module
    docstring), from the pair's sums, both members' cell moments and references, and ``K_S``
    the selection's shifted cross-Gram (its Gram when y is x)."""
    dom = np.array([plan.cells[c][0] for c in cells], np.int64)
    e, f = x.ref[dom] - mu_x, y.ref[dom] - mu_y
    E, F = (e * e).sum(axis=1), (f * f).sum(axis=1)
    n = x.n[cells].astype(np.float64)
    per_cell = (
        sums.ab[cells]
        + 2 * (f * sums.av[cells]).sum(axis=1)
        + F * x.sq[cells]
        + 2 * (e * sums.bu[cells]).sum(axis=1)
        + 2 * F * (e * x.s[cells]).sum(axis=1)
        + E * y.sq[cells]
        + 2 * E * (f * y.s[cells]).sum(axis=1)
        + n * E * F
    )
    cross = (
        sums.rkr[cells].sum()
        - mu_x @ sums.kr[cells].sum(axis=0)
        - sums.rk[cells].sum(axis=0) @ mu_y
        + mu_x @ K_S @ mu_y
    )
    return float(per_cell.sum() + 4 * cross)


def unbiased_hsic(fro2: float, fourth: float, tr_x: float, tr_y: float, n: int) -> float:
    """H(X, Y) of the module docstring (N (N-3) HSIC_u) from ||Y_c^T X_c||_F^2, sum a b and the
    traces of the two centered scatters."""
    return fro2 - n / (n - 2) * fourth + tr_x * tr_y / ((n - 1) * (n - 2))


def debiased_cka(h_xy: float, h_xx: float, h_yy: float) -> float | None:
    if h_xx <= 0 or h_yy <= 0:
        return None
    return h_xy / float(np.sqrt(h_xx * h_yy))
