"""Domain separability and per-sequence effective rank.

- ``sep_ratio`` = tr(S_B) / tr(S_W) with S_B = sum_c n_c (mu_c - mu)(mu_c - mu)^T and S_W the
  pooled within-domain scatter, from per-domain counts, means and scatter traces (moments only).
  Reported for the whole probe and within each span (domains compared inside the span).
- ``probe_acc``: a frozen linear probe. scikit-learn LogisticRegression (C = 1, lbfgs,
  max_iter 100, random_state = seed; in float32, the rows' precision) on the seeded per-domain row subsample taken during the
  pass (``Options.sample_per_domain`` rows per domain, split by the store's per-example
  ``split``): standardised with the fit rows' statistics, fit on split == 'fit', accuracy on
  split == 'heldout'. Whole probe only. lbfgs usually stops at max_iter before it converges; on the
  demo store (SmolLM2, 6 layer/checkpoint pairs) 1,000 iterations moved the held-out accuracy
  by at most 0.0021 for 1.4x the time, so the cap stays.
- ``probe_acc_shuffled``: the same with the labels permuted (seed + 1) - the falsification
  control; it must fall to chance (1 / number of domains).
- ``silhouette``: sklearn.metrics.silhouette_score with cosine distance on the same subsample,
  labels = domain. Whole probe only.
"""

from __future__ import annotations

import warnings

import numpy as np

from repcollapse.analyze.engine.tokens import ALL, Selection
from repcollapse.analyze.engine.view import LayerView
from repcollapse.analyze.registry import Metric, register

PROBE_C = 1.0
PROBE_MAX_ITER = 100


def sep_ratio(view: LayerView, sel: Selection) -> float | None:
    st = view.stats(sel)
    groups = st.domain_groups()
    if len(groups) < 2:
        return None
    tr_b = sum(n * float((mu - st.mu) @ (mu - st.mu)) for n, mu, _ in groups)
    tr_w = sum(tr for _, _, tr in groups)
    return tr_b / tr_w if tr_w > 0 else None


def probe_accuracy(
    rows: np.ndarray, labels: np.ndarray, fit: np.ndarray, seed: int
) -> float | None:
    """Held-out accuracy of a standardised logistic-regression probe (None if not estimable)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(labels[fit])) < 2 or not np.any(~fit):
        return None
    scaler = StandardScaler().fit(rows[fit])
    clf = LogisticRegression(C=PROBE_C, max_iter=PROBE_MAX_ITER, random_state=seed)
    with warnings.catch_warnings():
        # shuffled labels are noise: the optimiser may stop at max_iter, which is fine here
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(scaler.transform(rows[fit]), labels[fit])
    return float(clf.score(scaler.transform(rows[~fit]), labels[~fit]))


def shuffled(labels: np.ndarray, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 1]).permutation(labels)


def _sample(view: LayerView) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    rows = view.lm.rows
    if rows is None or len(rows) == 0:
        return None
    plan = view.plan
    return rows, plan.sample_domain, plan.sample_fit  # float32: float16 values, exact


def probe_acc(view: LayerView, sel: Selection) -> float | None:
    s = _sample(view)
    return None if s is None else probe_accuracy(s[0], s[1], s[2], view.options.seed)


def probe_acc_shuffled(view: LayerView, sel: Selection) -> float | None:
    s = _sample(view)
    if s is None:
        return None
    return probe_accuracy(s[0], shuffled(s[1], view.options.seed), s[2], view.options.seed)


def silhouette(view: LayerView, sel: Selection) -> float | None:
    from sklearn.metrics import silhouette_score

    s = _sample(view)
    if s is None or not 2 <= len(np.unique(s[1])) <= len(s[1]) - 1:
        return None
    return float(silhouette_score(s[0], s[1], metric="cosine"))


def _seq_cells(view: LayerView, sel: Selection) -> tuple[slice | int, int]:
    dom, span = sel
    rows = slice(None) if dom == ALL else view.plan.domains.index(dom)
    return rows, len(view.plan.spans) if span == ALL else view.plan.spans.index(span)


def seq_erank(view: LayerView, sel: Selection) -> float | None:
    """Mean per-example effective rank (centered token matrix of each example, or of its tokens
    in one span), averaged over the examples of the selection's domain(s) whose tokens are not
    all identical (those have no effective rank: ``seq_erank_skipped`` counts them)."""
    lm = view.lm
    if lm.seq_sum is None:
        return None
    rows, col = _seq_cells(view, sel)
    total, count = np.sum(lm.seq_sum[rows, col]), np.sum(lm.seq_cnt[rows, col])
    return float(total / count) if count else None


def seq_erank_skipped(view: LayerView, sel: Selection) -> float | None:
    """How many examples (or span subsets) of the selection seq_erank left out: all their
    tokens have the same hidden state, so their centered token matrix is zero."""
    lm = view.lm
    if lm.seq_skip is None:
        return None
    rows, col = _seq_cells(view, sel)
    return float(np.sum(lm.seq_skip[rows, col]))


_ROWS = ("gram", "rows")
_P = ("seed", "sample_per_domain")
register(
    Metric(
        "sep_ratio",
        1,
        "between- over within-domain scatter trace tr(S_B) / tr(S_W)",
        "moment",
        ("gram",),
        sep_ratio,
        scopes=("all", "span"),
    )
)
register(
    Metric(
        "probe_acc",
        1,
        "held-out accuracy of a logistic-regression domain probe (seeded subsample)",
        "moment",
        _ROWS,
        probe_acc,
        scopes=("all",),
        params=_P,
    )
)
register(
    Metric(
        "probe_acc_shuffled",
        1,
        "the domain probe with permuted labels: must be at chance",
        "moment",
        _ROWS,
        probe_acc_shuffled,
        scopes=("all",),
        params=_P,
    )
)
register(
    Metric(
        "silhouette",
        1,
        "cosine silhouette score of the domains on the seeded subsample",
        "moment",
        _ROWS,
        silhouette,
        scopes=("all",),
        params=_P,
    )
)
register(
    Metric(
        "seq_erank",
        2,
        "per-example effective rank of the centered token matrix, averaged over the examples "
        "whose tokens are not all identical",
        "moment",
        ("gram", "seq"),
        seq_erank,
    )
)
register(
    Metric(
        "seq_erank_skipped",
        1,
        "examples left out of seq_erank because all their tokens are identical (zero centered "
        "token matrix: no effective rank)",
        "moment",
        ("gram", "seq"),
        seq_erank_skipped,
    )
)
