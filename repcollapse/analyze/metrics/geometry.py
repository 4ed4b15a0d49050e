"""Geometry metrics: anisotropy and CKA drift, O(N d) / O(N d^2).

- ``aniso_uncentered``: mean cosine over distinct pairs = (||sum_i u_i||^2 - N) / (N (N - 1)),
  u_i = h_i / ||h_i||, from the per-cell sums of unit rows (one pass).
- ``aniso_centered``: the same on rows centered by the SELECTION's own mean (exact: from the
  second pass, see repcollapse.analyze.engine.moments). Rows of norm 0 (exactly at the mean) count in N with u = 0.
- ``cka_base`` / ``cka_parent``: linear CKA in feature-space form on centered X (this checkpoint)
  and Y (the base, or the parent, on the same tokens): ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F),
  all centering done algebraically from the sums. The base against itself is 1.
- ``drift_base`` / ``drift_parent`` = 1 - CKA. Not reported for a checkpoint without a base /
  parent in the store.
- ``cka_base_debiased`` / ``cka_parent_debiased``: the same with the unbiased HSIC estimator
  (Song et al. 2012; Kornblith et al. 2019), from the same pass plus O(N d) fourth-moment sums
  per cell (repcollapse.analyze.engine.debias). Biased CKA drifts towards 1 when a selection has not many more
  tokens than features (independent Gaussians at N = 2d: ~0.5); the debiased one stays near 0
  there. It may be negative.
"""

from __future__ import annotations

import numpy as np

from repcollapse.analyze.engine.tokens import Selection
from repcollapse.analyze.engine.view import LayerView
from repcollapse.analyze.registry import Metric, register


def mean_pair_cosine(unit_sum: np.ndarray, n: int) -> float | None:
    """(||sum u||^2 - N) / (N (N - 1)): mean cosine over distinct pairs of unit vectors."""
    if n < 2:
        return None
    return float((unit_sum @ unit_sum - n) / (n * (n - 1.0)))


def aniso_uncentered(view: LayerView, sel: Selection) -> float | None:
    st = view.stats(sel)
    return None if st.unit_sum is None else mean_pair_cosine(st.unit_sum, st.n)


def aniso_centered(view: LayerView, sel: Selection) -> float | None:
    st = view.stats(sel)
    cu = st.centered_unit_sum
    return None if cu is None else mean_pair_cosine(cu, st.n)


def _cka(role: str):  # noqa: ANN202
    def compute(view: LayerView, sel: Selection) -> float | None:
        st = view.stats(sel)
        cs = st.cross(role)
        return None if cs is None else cs.cka

    return compute


def _cka_debiased(role: str):  # noqa: ANN202
    def compute(view: LayerView, sel: Selection) -> float | None:
        return view.stats(sel).cka_debiased(role)

    return compute


def _drift(role: str):  # noqa: ANN202
    cka = _cka(role)

    def compute(view: LayerView, sel: Selection) -> float | None:
        value = cka(view, sel)
        return None if value is None else 1.0 - value

    return compute


register(
    Metric(
        "aniso_uncentered",
        1,
        "mean pairwise cosine of the raw hidden states (||sum u||^2 - N) / (N (N-1))",
        "moment",
        ("gram", "unit"),
        aniso_uncentered,
    )
)
register(
    Metric(
        "aniso_centered",
        1,
        "mean pairwise cosine of hidden states centered by the selection's mean (exact, 2nd pass)",
        "moment",
        ("gram", "centered_unit"),
        aniso_centered,
    )
)
for _role in ("base", "parent"):
    _needs = ("gram", f"cross_{_role}")
    register(
        Metric(
            f"cka_{_role}",
            1,
            f"linear CKA (feature-space form, centered) against the {_role} checkpoint "
            "on the same tokens",
            "moment",
            _needs,
            _cka(_role),
        )
    )
    register(
        Metric(
            f"drift_{_role}",
            1,
            f"1 - linear CKA against the {_role} checkpoint",
            "moment",
            _needs,
            _drift(_role),
        )
    )
    register(
        Metric(
            f"cka_{_role}_debiased",
            1,
            f"debiased linear CKA (unbiased HSIC) against the {_role} checkpoint on the same "
            "tokens",
            "moment",
            (*_needs, "debias"),
            _cka_debiased(_role),
        )
    )
