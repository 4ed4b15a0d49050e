"""Spectrum metrics of a selection's covariance (DESIGN.md section 5), from the moments alone.

C = Hc^T Hc / (N - 1), eigenvalues l_1 >= ... >= l_d >= 0, p_i = l_i / sum_j l_j.

- ``erank`` = exp(-sum p_i log p_i) (0 log 0 = 0); ``erank_norm`` = erank / min(N - 1, d).
- ``pr`` = (sum l)^2 / sum l^2 = tr(C)^2 / ||C||_F^2 (no eigendecomposition needed);
  ``pr_norm`` = pr / min(N - 1, d).
- ``topk_var_<k>`` = sum_{i<=k} l_i / sum l (k = 1 and 10 by default; ``Options.topk``).
- ``alpha_req``: alpha of l_i ~ i^-alpha, i.e. minus the slope of the least-squares line of
  log l_i on log i. Fit range: i = 1 .. min(N - 1, d) (the eigenvalues N rows can make non-zero),
  keeping only l_i > 1e-6 * l_1: below that, eigenvalues sit at the noise floor of float16
  storage (11 significant bits: quantisation variance ~1e-7 of the signal's) and of the float32
  products, and would steer the log-log fit. The top eigenvalue is included. Fewer than 3 such
  eigenvalues: not reported.
- ``rankme``: the same entropy over the singular values of the UNCENTERED H (square roots of
  the eigenvalues of H^T H = scatter + N mu mu^T), p_i = s_i / sum s (Garrido et al. 2023,
  without their epsilon). Eigenvalues of H^T H below sqrt(d) * eps * l_max(scatter) are set to
  0 before the square root (eps of the working precision: round-off, which the square root
  would lift to visible singular values), and so is everything beyond rank min(N, d). Version 2:
  version 1 had no floor and overstated RankMe of low-rank selections (2.19 vs 1.94).
"""

from __future__ import annotations

import numpy as np

from analyze.moments import erank_of
from analyze.registry import Metric, register
from analyze.tokens import Selection
from analyze.view import LayerView

ALPHA_REL_FLOOR = 1e-6
DEFAULT_TOPK: tuple[int, ...] = (1, 10)


def erank(view: LayerView, sel: Selection) -> float:
    return float(erank_of(view.stats(sel).eig_cov))


def erank_norm(view: LayerView, sel: Selection) -> float:
    return erank(view, sel) / view.stats(sel).max_rank


def pr(view: LayerView, sel: Selection) -> float | None:
    C = view.stats(sel).cov
    fro2 = float(np.sum(C * C))
    return float(np.trace(C)) ** 2 / fro2 if fro2 > 0 else None


def pr_norm(view: LayerView, sel: Selection) -> float | None:
    value = pr(view, sel)
    return None if value is None else value / view.stats(sel).max_rank


def topk_var(k: int):  # noqa: ANN201
    def compute(view: LayerView, sel: Selection) -> float | None:
        lam = view.stats(sel).eig_cov
        total = float(lam.sum())
        return float(lam[:k].sum()) / total if total > 0 else None

    return compute


def alpha_fit(lam: np.ndarray, max_rank: int) -> float | None:
    """alpha of the power law l_i ~ i^-alpha over the documented fit range (see module doc)."""
    lam = np.asarray(lam, np.float64)[:max_rank]
    if len(lam) == 0 or lam[0] <= 0:
        return None
    idx = np.flatnonzero(lam > ALPHA_REL_FLOOR * lam[0])
    if len(idx) < 3:
        return None
    slope = np.polyfit(np.log(idx + 1.0), np.log(lam[idx]), 1)[0]
    return float(-slope)


def alpha_req(view: LayerView, sel: Selection) -> float | None:
    st = view.stats(sel)
    return alpha_fit(st.eig_cov, st.max_rank)


def rankme(view: LayerView, sel: Selection) -> float:
    return float(erank_of(view.stats(sel).sv_uncentered))


def topk_metric(k: int) -> Metric:
    """The ``topk_var_<k>`` entry, registered on first use (``--topk`` adds any k)."""
    from analyze.registry import REGISTRY

    name = f"topk_var_{k}"
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"top-k variance: k must be a positive integer, found {k!r}")
    if name in REGISTRY:
        return REGISTRY.get(name)
    return register(
        Metric(
            name,
            1,
            f"fraction of the variance in the top {k} covariance eigenvalue(s): "
            f"sum_(i<={k}) l_i / sum l",
            "moment",
            ("gram",),
            topk_var(k),
        )
    )


_G = ("gram",)
register(
    Metric(
        "erank",
        1,
        "effective rank exp(H(p)), p = covariance eigenvalues / their sum",
        "moment",
        _G,
        erank,
    )
)
register(Metric("erank_norm", 1, "effective rank / min(N - 1, d)", "moment", _G, erank_norm))
register(
    Metric(
        "pr",
        1,
        "participation ratio (sum l)^2 / sum l^2 of the covariance eigenvalues",
        "moment",
        _G,
        pr,
    )
)
register(Metric("pr_norm", 1, "participation ratio / min(N - 1, d)", "moment", _G, pr_norm))
for _k in DEFAULT_TOPK:
    topk_metric(_k)
register(
    Metric(
        "alpha_req",
        1,
        "alpha-ReQ: minus the slope of log l_i on log i over i <= min(N-1, d) with l_i > 1e-6 l_1",
        "moment",
        _G,
        alpha_req,
    )
)
register(
    Metric(
        "rankme",
        2,
        "RankMe: effective rank of the singular values of the uncentered hidden states",
        "moment",
        _G,
        rankme,
    )
)
