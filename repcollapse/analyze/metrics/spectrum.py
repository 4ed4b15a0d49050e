"""Spectrum metrics of a selection's covariance, from the moments alone.

C = Hc^T Hc / (N - 1), eigenvalues l_1 >= ... >= l_d >= 0, p_i = l_i / sum_j l_j.

- ``erank`` = exp(-sum p_i log p_i) (0 log 0 = 0); ``erank_norm`` = erank / min(N - 1, d).
- ``pr`` = (sum l)^2 / sum l^2 = tr(C)^2 / ||C||_F^2 (no eigendecomposition needed);
  ``pr_norm`` = pr / min(N - 1, d).
- ``topk_var_<k>`` = sum_{i<=k} l_i / sum l (k = 1 and 10 by default; ``Options.topk``).
- ``alpha_req``: alpha of l_i ~ i^-alpha, minus the slope of the weighted least-squares line of
  log l_i on log i over i = 1 .. min(N - 1, d) with l_i > 1e-5 l_1, each point weighted
  min(1, log2(l_i / (1e-5 l_1))). Why (set when the default mode's Grams were float32 products;
  they are float64 since RankMe v4, and the fit range is kept so that alpha keeps its meaning):
  float32 round-off moves an eigenvalue by up to ~1.3 eps32 l_1 (1.5e-7 l_1, measured), so an eigenvalue
  at 1e-6 l_1 is known to ~15% at worst and a hard cut there flips points in and out of the fit
  between the modes (3.3e-3 on the demo store). At 1e-5 l_1 the worst case is 1.5%, the typical
  1e-5; the weight ramp makes the fit continuous in every eigenvalue, so that round-off moves
  alpha by round-off, never by a whole point. Fewer than 3 points: not reported. Version 2
  (version 1: a hard cut at 1e-6 l_1).
- ``rankme``: the same entropy over the singular values of the UNCENTERED H (square roots of
  the eigenvalues of H^T H = scatter + N mu mu^T), p_i = s_i / sum s (Garrido et al. 2023,
  without their epsilon); 0 beyond rank min(N, d). The member's own Gram and sums are formed
  from float64 rows in both precision modes (repcollapse.analyze.engine.moments), so H^T H is
  known to float64 round-off: eigenvalues l_i <= tau = 4 eps64 l_max(H^T H) count 0 (what a
  rank-deficient selection's null directions read as: the square root would lift them to
  visible singular values) and s_i is scaled by min(1, log2(l_i / tau)) above it, a cut that
  is continuous in l_i. Measured against np.linalg.svd of the rows (d = 576, 4,000 rows): within
  4e-6 relative from power-law spectra down to 3.5e-8 s_max, on rank-3 and rank-40 selections
  with a large mean. Version 4. Version 3 formed the Gram in float32 and cut at
  sqrt(d) eps32 l_max(scatter): the products' round-off forced the floor, and the floor dropped
  real singular values (1.4% below the SVD on the demo store, 20% on a power law beside a
  sink-like mean); version 2 scaled tau by the mode's eps (the modes up to 15% apart).
"""

from __future__ import annotations

import numpy as np

from repcollapse.analyze.engine.moments import erank_of
from repcollapse.analyze.engine.tokens import Selection
from repcollapse.analyze.engine.view import LayerView
from repcollapse.analyze.registry import Metric, register

ALPHA_REL_FLOOR = 1e-5
"""alpha-ReQ's fit keeps l_i > ALPHA_REL_FLOOR l_1 (weights ramp up over one octave above it)."""
ROUND_OFF_EPS = float(np.finfo(np.float32).eps)
"""The round-off unit alpha-ReQ's floor is argued in (the default mode's cross products are
float32; its own Grams are float64)."""
RANKME_FLOOR = 4.0 * float(np.finfo(np.float64).eps)
"""RankMe counts eigenvalues of H^T H below RANKME_FLOOR l_max(H^T H) as 0 (module doc)."""
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


def octave_ramp(lam: np.ndarray, floor: float) -> np.ndarray:
    """0 at and below ``floor``, log2(lam / floor) up to 2 floor, then 1: a cut that is
    continuous in ``lam``, so that round-off near the floor moves a metric by round-off."""
    lam = np.asarray(lam, np.float64)
    pos = lam > floor
    out = np.zeros(lam.shape)
    out[pos] = np.minimum(np.log2(lam[pos] / floor), 1.0)
    return out


def alpha_fit(lam: np.ndarray, max_rank: int) -> float | None:
    """alpha of the power law l_i ~ i^-alpha over the documented fit range (see module doc)."""
    lam = np.asarray(lam, np.float64)[:max_rank]
    if len(lam) == 0 or lam[0] <= 0:
        return None
    w = octave_ramp(lam, ALPHA_REL_FLOOR * lam[0])
    idx = np.flatnonzero(w > 0)
    if len(idx) < 3:
        return None
    # polyfit weights the unsquared residuals: sqrt(w) gives the weights w of the squares
    slope = np.polyfit(np.log(idx + 1.0), np.log(lam[idx]), 1, w=np.sqrt(w[idx]))[0]
    return float(-slope)


def rankme_of(second: np.ndarray, rank: int) -> float:
    """RankMe from the eigenvalues of H^T H (any order) and the rank cap min(N, d), with the
    documented round-off floor (module doc)."""
    lam = np.sort(np.clip(np.asarray(second, np.float64), 0.0, None))[::-1]
    lam[max(1, rank) :] = 0.0
    tau = RANKME_FLOOR * float(lam[0]) if len(lam) else 0.0
    return float(erank_of(np.sqrt(lam) * octave_ramp(lam, tau)))


def alpha_req(view: LayerView, sel: Selection) -> float | None:
    st = view.stats(sel)
    return alpha_fit(st.eig_cov, st.max_rank)


def rankme(view: LayerView, sel: Selection) -> float:
    st = view.stats(sel)
    return rankme_of(st.eig_second, min(st.n, st.d))


def topk_metric(k: int) -> Metric:
    """The ``topk_var_<k>`` entry, registered on first use (``--topk`` adds any k)."""
    from repcollapse.analyze.registry import REGISTRY

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
        2,
        "alpha-ReQ: minus the slope of log l_i on log i over i <= min(N-1, d) with l_i > 1e-5 l_1 "
        "(weighted fit, weights ramping up over one octave above the floor)",
        "moment",
        _G,
        alpha_req,
    )
)
register(
    Metric(
        "rankme",
        4,
        "RankMe: effective rank of the singular values of the uncentered hidden states",
        "moment",
        _G,
        rankme,
    )
)
