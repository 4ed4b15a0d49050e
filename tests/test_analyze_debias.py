"""Debiased linear CKA: against the N x N Gram form of the unbiased HSIC on raw (uncentered,
unshifted) rows, and the analytic cases (identical checkpoints: 1; independent: ~0 where the
biased CKA is far from 0)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_analyze_support import SMALL, rows_of, store_with, value

from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.analyze.options import Options
from repcollapse.store_schema import open_store
from repcollapse.store_schema.testing import SyntheticSpec

F64 = Options(precision="float64")
NAMES = ["cka_base", "cka_parent", "cka_base_debiased", "cka_parent_debiased"]
REFS = {"A/01-stage": ("base", "base"), "A/02-stage": ("base", "A/01-stage")}


def bf_hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012): the diagonals zeroed, the textbook N x N formula."""
    n = len(K)
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    one = np.ones(n)
    return float(
        (
            np.trace(K @ L)
            + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ K @ L @ one)
        )
        / (n * (n - 3))
    )


def bf_cka_debiased(X: np.ndarray, Y: np.ndarray) -> float:
    K, L = X @ X.T, Y @ Y.T  # raw rows: the estimator is shift invariant, nothing centered
    return bf_hsic_unbiased(K, L) / np.sqrt(bf_hsic_unbiased(K, K) * bf_hsic_unbiased(L, L))


def _selections(ds) -> list[tuple[str, str]]:
    doms = list(dict.fromkeys(np.asarray(ds["domain"].values).tolist()))
    spans = list(dict.fromkeys(np.asarray(ds["span"].values).tolist()))
    return [("all", "all"), *[(d, "all") for d in doms], *[("all", s) for s in spans]]


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_debiased_cka_matches_the_gram_form_on_raw_rows(tmp_path, precision: str) -> None:
    store = store_with(tmp_path / "s.zarr")
    run_metrics(
        store,
        tmp_path / "out",
        options=Options(precision=precision),
        metrics=NAMES,
        log=lambda _: None,
    )
    table = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    ds = open_store(store)
    rel = 1e-8 if precision == "float64" else 2e-5  # float32 products: measured 3.4e-6
    checked = 0
    for c, (base, parent) in REFS.items():
        for dom, span in _selections(ds):
            X = rows_of(ds, c, 2, dom, span)
            for role, ref in (("base", base), ("parent", parent)):
                expected = bf_cka_debiased(X, rows_of(ds, ref, 2, dom, span))
                got = value(table, f"cka_{role}_debiased", c, 2, dom, span)
                assert got == pytest.approx(expected, rel=rel, abs=rel), (c, role, dom, span)
                checked += 1
    assert checked == 2 * 2 * len(_selections(ds))
    assert value(table, "cka_base_debiased", "base", 2) == pytest.approx(1.0, abs=1e-12)


def test_identical_checkpoints_give_1_and_independent_ones_give_0(tmp_path) -> None:
    spec = SyntheticSpec(**{**SMALL.__dict__, "n_features": 64})
    C, L, N, d = spec.n_checkpoints, spec.n_layers, spec.n_tokens, spec.n_features
    rng = np.random.default_rng(7)
    hidden = rng.normal(size=(C, L, N, d)) + 3.0  # a common offset: shift invariance matters
    hidden[1] = hidden[0]
    store = store_with(tmp_path / "s.zarr", spec, hidden=hidden)
    run_metrics(store, tmp_path / "out", options=F64, metrics=NAMES, log=lambda _: None)
    table = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    ds = open_store(store)
    for dom, span in _selections(ds):
        same = value(table, "cka_base_debiased", "A/01-stage", 1, dom, span)
        assert same == pytest.approx(1.0, abs=1e-9)
    # A/02 is independent of the base: about 100 tokens per domain at 64 features
    for dom, _ in _selections(ds)[1:7]:
        n = len(rows_of(ds, "base", 1, dom))
        biased = value(table, "cka_base", "A/02-stage", 1, dom)
        debiased = value(table, "cka_base_debiased", "A/02-stage", 1, dom)
        assert biased == pytest.approx(d / (n + d), rel=0.25)  # E[CKA] of independent Gaussians
        assert abs(debiased) < 0.1, (dom, biased, debiased)
    assert abs(value(table, "cka_base_debiased", "A/02-stage", 1)) < 0.03
