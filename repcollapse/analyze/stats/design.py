"""Linear models the data can identify: family fixed effects, errors clustered by replicate.

With two model families a variance between families cannot be estimated (one difference), so
family enters as a fixed effect. Checkpoints of one training chain (family, sequence,
mitigation, seed) share that seed's training noise down the chain, so they are not independent
rows: the standard errors are cluster-robust (CR1 sandwich) with clusters at the coarsest level
that has enough of them, the (family, sequence) cell when it does, the chain otherwise, and
every interval and p-value uses a t reference with G - 1 degrees of freedom (G clusters).
docs/claims.md gives the reasons.

``identify`` refuses a model before fitting it: a design that is singular or nearly so, too few
residual degrees of freedom, or fewer clusters than coefficients (the sandwich covariance has
rank at most G - 1, so with more coefficients some of them have no standard error at all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.stats

MIN_RESID_DF = 3
"""Residual degrees of freedom a fit must keep (n - coefficients)."""
MAX_CONDITION = 1e4
"""Largest condition number of the column-standardised design: beyond it a coefficient is a
difference of huge, nearly cancelling numbers and its interval means nothing."""


class Unidentifiable(ValueError):
    """The data cannot identify the model asked for; the message says why and what would help."""


def chain_labels(d: pd.DataFrame) -> pd.Series:
    """One label per training chain: the unit a seed replicates (base: one per store)."""
    seq = d["sequence"].astype(str).replace("", "base")
    return (
        d["store_id"].astype(str)
        + "|"
        + seq
        + "|"
        + d["mitigation"].astype(str)
        + "|"
        + d["seed"].astype(str).where(seq != "base", "-")
    )


def cell_labels(d: pd.DataFrame) -> pd.Series:
    """(family, sequence) cells: chains of every seed and mitigation of one sequence together."""
    return d["store_id"].astype(str) + "|" + d["sequence"].astype(str).replace("", "base")


def design_matrix(d: pd.DataFrame, terms: Sequence[str], family_fe: bool) -> pd.DataFrame:
    """Intercept, the terms, and one dummy per family but the first (when ``family_fe``)."""
    x = pd.DataFrame({"Intercept": 1.0}, index=d.index)
    for t in terms:
        x[t] = d[t].astype(float)
    if family_fe:
        fams = sorted(d["model_family"].astype(str).unique())
        for f in fams[1:]:
            x[f"family[{f}]"] = (d["model_family"].astype(str) == f).astype(float)
    return x


def condition_number(x: pd.DataFrame) -> float:
    """Condition number of the design with every non-constant column scaled to unit norm."""
    a = x.to_numpy(dtype=float)
    norms = np.linalg.norm(a, axis=0)
    if (norms == 0).any():
        return float("inf")
    s = np.linalg.svd(a / norms, compute_uv=False)
    return float(s[0] / s[-1]) if s[-1] > 0 else float("inf")


def identify(x: pd.DataFrame, clusters: pd.Series | None) -> None:
    """Raise ``Unidentifiable`` naming the reason when the model cannot be estimated."""
    n, p = x.shape
    if n - p < MIN_RESID_DF:
        raise Unidentifiable(
            f"{p} coefficients on {n} rows leave {n - p} residual degrees of freedom "
            f"(at least {MIN_RESID_DF} needed): add seeds or checkpoints, or fewer predictors"
        )
    a = x.to_numpy(dtype=float)
    if np.linalg.matrix_rank(a) < p:
        raise Unidentifiable(
            "the design is singular (a column is a linear combination of the others: "
            f"{', '.join(x.columns)})"
        )
    cond = condition_number(x)
    if cond > MAX_CONDITION:
        raise Unidentifiable(
            f"the design is nearly singular (condition number {cond:.3g} > {MAX_CONDITION:g} "
            f"after scaling the columns: {', '.join(x.columns)})"
        )
    if clusters is not None:
        g = int(clusters.nunique())
        if g - 1 < p:
            raise Unidentifiable(
                f"{p} coefficients need at least {p + 1} independent clusters for cluster-robust "
                f"errors, found {g}: add seeds or use fewer predictors"
            )


@dataclass(frozen=True)
class ClusteredFit:
    """OLS point estimates with CR1 cluster-robust errors and t(G - 1) inference."""

    params: pd.Series
    std_err: pd.Series
    df: int
    n_obs: int
    n_clusters: int
    resid_var: float
    alpha: float

    def t_crit(self) -> float:
        return float(scipy.stats.t.ppf(1 - self.alpha / 2, self.df))

    def table(self, terms: Sequence[str]) -> pd.DataFrame:
        t = self.params[list(terms)] / self.std_err[list(terms)]
        half = self.t_crit() * self.std_err[list(terms)]
        return pd.DataFrame(
            {
                "term": list(terms),
                "estimate": self.params[list(terms)].to_numpy(),
                "std_err": self.std_err[list(terms)].to_numpy(),
                "ci_low": (self.params[list(terms)] - half).to_numpy(),
                "ci_high": (self.params[list(terms)] + half).to_numpy(),
                "p_value": (2 * scipy.stats.t.sf(np.abs(t), self.df)),
            }
        )


def fit_clustered(
    x: pd.DataFrame, y: pd.Series, clusters: pd.Series, alpha: float = 0.05
) -> ClusteredFit:
    """OLS of ``y`` on ``x`` with the CR1 sandwich over ``clusters`` (checked by ``identify``)."""
    identify(x, clusters)
    a, yv = x.to_numpy(dtype=float), y.to_numpy(dtype=float)
    n, p = a.shape
    bread = np.linalg.inv(a.T @ a)
    beta = bread @ a.T @ yv
    e = yv - a @ beta
    codes, uniq = pd.factorize(clusters)
    g = len(uniq)
    scores = np.zeros((g, p))
    np.add.at(scores, codes, a * e[:, None])  # X_g' e_g for every cluster g
    meat = scores.T @ scores
    # CR1: the small-sample factor that makes one-observation clusters give the HC1 estimator.
    c = g / (g - 1) * (n - 1) / (n - p)
    cov = c * bread @ meat @ bread
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    return ClusteredFit(
        params=pd.Series(beta, index=x.columns),
        std_err=pd.Series(se, index=x.columns),
        df=g - 1,
        n_obs=n,
        n_clusters=g,
        resid_var=float(e @ e / (n - p)),
        alpha=alpha,
    )


def choose_clusters(d: pd.DataFrame, n_coef: int) -> tuple[pd.Series, str]:
    """The coarsest clustering with enough clusters for ``n_coef`` coefficients (see module)."""
    cells = cell_labels(d)
    if cells.nunique() - 1 >= n_coef:
        return cells, "family/sequence"
    return chain_labels(d), "chain"


def term_budget(d: pd.DataFrame, clustered: bool, family_fe: bool) -> int:
    """How many predictors (besides the intercept and family dummies) the rows allow: residual
    df >= MIN_RESID_DF, and with clustered errors no more coefficients than chains - 1."""
    fixed = 1 + (d["model_family"].nunique() - 1 if family_fe else 0)
    budget = len(d) - MIN_RESID_DF - fixed
    if clustered:
        budget = min(budget, chain_labels(d).nunique() - 1 - fixed)
    return max(budget, 0)
