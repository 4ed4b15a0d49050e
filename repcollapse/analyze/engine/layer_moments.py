"""What a pass hands to the metrics: a member's host float64 cell moments (``CellMoments``), a
target's moments at one layer (``LayerMoments``), and the exact algebra that turns a selection's
shifted Gram and its cells' sums into its centered scatter (``selection_scatter``,
``cross_scatter``). The accumulator that builds them is ``moments.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from repcollapse.analyze.engine.debias import PairSums
from repcollapse.analyze.engine.tokens import ALL, TokenPlan


@dataclass
class CellMoments:
    """Host float64 moments of one member: per cell the count, mean, shifted sum and sum of
    squares; per domain and per span the Gram of the shifted rows (rows minus their domain's
    reference mean, subtracted before the products)."""

    n: np.ndarray
    mu: np.ndarray
    s: np.ndarray
    sq: np.ndarray
    Gd: np.ndarray
    Gs: np.ndarray
    unit: np.ndarray | None = None
    ref: np.ndarray | None = None
    """Per domain: the reference subtracted before the products (working precision, as float64)."""
    deb_self: PairSums | None = None
    """Debiased CKA's sums of the member with itself."""
    combined: dict[Any, Any] = field(default_factory=dict, repr=False)
    """Selections' (n, mean, scatter) by key, shared by every target that reads this member
    (its own metrics, and its children's CKA)."""
    Ggd: np.ndarray | None = None
    """Per example group: the Grams ``Gd`` sums (groups x domains x d x d); None with one group."""
    Ggs: np.ndarray | None = None

    def gram(self, sel: tuple[str, str], plan: TokenPlan) -> np.ndarray:
        return group_gram(self.Gd, self.Gs, sel, plan)


def group_gram(Gd: np.ndarray, Gs: np.ndarray, sel: tuple[str, str], plan: TokenPlan) -> np.ndarray:
    """The (shifted, uncentered) Gram of a selection: the whole probe is the sum over domains."""
    dom, span = sel
    if dom == ALL and span == ALL:
        return Gd.sum(axis=0)
    if span == ALL:
        return Gd[plan.domains.index(dom)]
    if dom == ALL:
        return Gs[plan.spans.index(span)]
    raise KeyError(f"selection {sel!r}: expected the whole probe, one domain or one span")


def between_factors(
    cm: CellMoments, cells: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """n, mean, and the factors A (rows s_c / sqrt(n_c)) and B (rows sqrt(n_c) (mu_c - mu)) of
    a union of cells: its centered scatter is G - A^T A + B^T B for its shifted Gram G."""
    cells = cells[cm.n[cells] > 0]
    n_c = cm.n[cells].astype(np.float64)
    n = float(n_c.sum())
    mu = (n_c[:, None] * cm.mu[cells]).sum(axis=0) / n
    root = np.sqrt(n_c)[:, None]
    return n, mu, cm.s[cells] / root, root * (cm.mu[cells] - mu)


def selection_scatter(
    cm: CellMoments, cells: np.ndarray, G: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray]:
    """(n, mean, centered scatter) of a selection from its shifted Gram and its cells' sums:
    sum_c (G_c - s_c s_c^T / n_c) + sum_c n_c (mu_c - mu)(mu_c - mu)^T, exact for any shift."""
    n, mu, A, B = between_factors(cm, cells)
    return int(n), mu, G - A.T @ A + B.T @ B


def cross_scatter(x: CellMoments, y: CellMoments, cells: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Centered cross scatter Xc^T Yc of two members on the same tokens, from their shifted
    cross-Gram ``K`` of the selection."""
    _, _, Ax, Bx = between_factors(x, cells)
    _, _, Ay, By = between_factors(y, cells)
    return K - Ax.T @ Ay + Bx.T @ By


@dataclass
class LayerMoments:
    """Everything the metrics of one target at one layer are derived from."""

    checkpoint: str
    layer: int
    plan: TokenPlan
    own: CellMoments
    refs: dict[str, tuple[CellMoments, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    """role ('base' or 'parent') -> (reference moments, (per-domain, per-span) shifted
    cross-Gram of target and reference)."""
    cunit: np.ndarray | None = None
    rows: np.ndarray | None = None
    seq_sum: np.ndarray | None = None
    seq_cnt: np.ndarray | None = None
    seq_skip: np.ndarray | None = None
    ref_deb: dict[str, PairSums] = field(default_factory=dict)
    """role -> debiased CKA's sums of target and reference."""
    ref_groups: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """role -> per example group, the (per-domain, per-span) shifted cross-Grams (uncertainty)."""
    seq_groups: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    """Per example group: seq_sum, seq_cnt, seq_skip (groups x domains x spans + 1)."""
