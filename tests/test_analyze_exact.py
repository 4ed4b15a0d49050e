"""Every metric against a brute-force reference, and the analytic cases (float64 mode)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import zarr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler
from test_analyze_support import (
    SMALL,
    bf_aniso,
    bf_cka,
    bf_ece,
    bf_erank_rows,
    bf_sep_ratio,
    bf_spectrum,
    resign,
    rows_of,
    store_with,
    value,
)

from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.analyze.engine.tokens import build_plan
from repcollapse.analyze.options import Options
from repcollapse.store_schema import open_store

F64 = Options(precision="float64")
RTOL = 1e-8
CKPTS = ("base", "A/01-stage", "A/02-stage")


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, pd.DataFrame]:
    root = tmp_path_factory.mktemp("exact")
    store = store_with(root / "s.zarr")
    run_metrics(store, root / "out", options=F64, log=lambda _: None)
    return open_store(store), pd.read_parquet(root / "out" / "metrics.parquet")


def _selections(ds) -> list[tuple[str, str]]:
    doms = list(dict.fromkeys(np.asarray(ds["domain"].values).tolist()))
    spans = list(dict.fromkeys(np.asarray(ds["span"].values).tolist()))
    return [("all", "all"), *[(d, "all") for d in doms], *[("all", s) for s in spans]]


@pytest.mark.parametrize("layer", [0, 2])
def test_spectrum_matches_eigendecomposition_of_the_covariance(synth, layer: int) -> None:
    ds, table = synth
    for c in CKPTS:
        for dom, span in _selections(ds):
            ref = bf_spectrum(rows_of(ds, c, layer, dom, span))
            for name, expected in ref.items():
                got = value(table, name, c, layer, dom, span)
                assert got == pytest.approx(expected, rel=RTOL), (name, c, dom, span)


def test_anisotropy_matches_pairwise_cosines(synth) -> None:
    ds, table = synth
    for c in CKPTS:
        for dom, span in _selections(ds):
            H = rows_of(ds, c, 1, dom, span)
            got_u = value(table, "aniso_uncentered", c, 1, dom, span)
            got_c = value(table, "aniso_centered", c, 1, dom, span)
            assert got_u == pytest.approx(bf_aniso(H), rel=RTOL, abs=1e-12)
            assert got_c == pytest.approx(bf_aniso(H - H.mean(0)), rel=1e-7, abs=1e-12)


def test_cka_matches_gram_form_hsic(synth) -> None:
    ds, table = synth
    refs = {"A/01-stage": ("base", "base"), "A/02-stage": ("base", "A/01-stage")}
    for c, (base, parent) in refs.items():
        for dom, span in _selections(ds):
            X = rows_of(ds, c, 2, dom, span)
            for role, ref in (("base", base), ("parent", parent)):
                expected = bf_cka(X, rows_of(ds, ref, 2, dom, span))
                assert value(table, f"cka_{role}", c, 2, dom, span) == pytest.approx(
                    expected, rel=RTOL
                )
                assert value(table, f"drift_{role}", c, 2, dom, span) == pytest.approx(
                    1 - expected, rel=1e-7, abs=1e-12
                )
    assert value(table, "cka_base", "base", 2) == pytest.approx(1.0)
    assert table[(table.metric == "cka_parent") & (table.checkpoint == "base")].empty


def test_separability_ratio_and_sklearn_probe_and_silhouette(synth) -> None:
    ds, table = synth
    coords = {
        k: np.asarray(ds[k].values)
        for k in ("example", "domain", "span", "split", "is_sink", "target_id")
    }
    plan = build_plan(coords, SMALL.token_chunk)
    dom = np.asarray(ds["domain"].values)
    keep = ~coords["is_sink"].astype(bool)
    for c in CKPTS:
        H = np.asarray(ds["hidden"].sel(checkpoint=c).isel(layer=1).values, np.float64)
        assert value(table, "sep_ratio", c, 1) == pytest.approx(
            bf_sep_ratio(H[keep], dom[keep]), rel=RTOL
        )
        rows = H[plan.sample_tokens].astype(np.float32)
        y, fit = plan.sample_domain, plan.sample_fit
        sc = StandardScaler().fit(rows[fit])
        clf = LogisticRegression(C=1.0, max_iter=100, random_state=0).fit(
            sc.transform(rows[fit]), y[fit]
        )
        assert value(table, "probe_acc", c, 1) == pytest.approx(
            clf.score(sc.transform(rows[~fit]), y[~fit])
        )
        assert value(table, "silhouette", c, 1) == pytest.approx(
            silhouette_score(rows, y, metric="cosine"), rel=1e-9
        )
        assert value(table, "probe_acc", c, 1) > 0.9
        assert value(table, "probe_acc_shuffled", c, 1) < 0.45  # six domains: chance is 1/6


def test_sequence_effective_rank_matches_per_example_svd(synth) -> None:
    ds, table = synth
    ex = np.asarray(ds["example"].values)
    span = np.asarray(ds["span"].values)
    keep = ~np.asarray(ds["is_sink"].values).astype(bool)
    H = np.asarray(ds["hidden"].sel(checkpoint="A/01-stage").isel(layer=2).values, np.float64)
    whole, per_span = [], {}
    for e in dict.fromkeys(ex.tolist()):
        m = (ex == e) & keep
        whole.append(bf_erank_rows(H[m]))
        for s in np.unique(span[m]):
            ms = m & (span == s)
            if ms.sum() >= 2:
                per_span.setdefault(s, []).append(bf_erank_rows(H[ms]))
    assert value(table, "seq_erank", "A/01-stage", 2) == pytest.approx(np.mean(whole), rel=1e-9)
    for s, vals in per_span.items():
        assert value(table, "seq_erank", "A/01-stage", 2, "all", s) == pytest.approx(
            np.mean(vals), rel=1e-9
        )


def test_function_metrics_and_ece_by_direct_loop(synth) -> None:
    ds, table = synth
    keep = ~np.asarray(ds["is_sink"].values).astype(bool) & (
        np.asarray(ds["target_id"].values) >= 0
    )
    for c in CKPTS:
        v = {
            k: np.asarray(ds[k].sel(checkpoint=c).values, np.float64)[keep]
            for k in (
                "logit_entropy",
                "logit_top1_prob",
                "logit_top2_prob",
                "logit_support_90",
                "logit_target_logprob",
            )
        }
        correct = (
            np.asarray(ds["logit_argmax_id"].sel(checkpoint=c).values)
            == np.asarray(ds["target_id"].values)
        )[keep]
        assert value(table, "entropy", c, -1) == pytest.approx(v["logit_entropy"].mean(), rel=1e-9)
        assert value(table, "prob_margin", c, -1) == pytest.approx(
            (v["logit_top1_prob"] - v["logit_top2_prob"]).mean(), rel=1e-9
        )
        assert value(table, "support_90", c, -1) == pytest.approx(
            v["logit_support_90"].mean(), rel=1e-9
        )
        assert value(table, "nll", c, -1) == pytest.approx(
            -v["logit_target_logprob"].mean(), rel=1e-9
        )
        assert value(table, "ece", c, -1) == pytest.approx(
            bf_ece(v["logit_top1_prob"], correct), rel=1e-9
        )


def test_function_metrics_at_a_temperature_from_hidden_and_unembedding(tmp_path) -> None:
    store = store_with(tmp_path / "s.zarr")
    run_metrics(
        store,
        tmp_path / "out",
        metrics=["entropy", "ece", "support_90", "nll", "prob_margin"],
        options=Options(precision="float64", temperatures=(1.0, 2.5)),
        log=lambda _: None,
    )
    table = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    ds = open_store(store)
    W = np.asarray(ds["unembedding"].values[0], np.float64)
    target = np.asarray(ds["target_id"].values)
    keep = ~np.asarray(ds["is_sink"].values).astype(bool) & (target >= 0)
    for T in (1.0, 2.5):
        h = np.asarray(ds["hidden"].sel(checkpoint="A/01-stage").isel(layer=-1).values, np.float64)[
            keep
        ]
        z = h @ W.T / T
        logp = z - scipy.special.logsumexp(z, axis=1, keepdims=True)
        p = np.exp(logp)
        ps = -np.sort(-p, axis=1)
        t = target[keep]

        def get(name: str, T: float = T) -> float:
            return value(table, f"{name}@T{T:g}", "A/01-stage", -1)

        assert get("entropy") == pytest.approx(-(p * logp).sum(1).mean(), rel=1e-9)
        assert get("prob_margin") == pytest.approx((ps[:, 0] - ps[:, 1]).mean(), rel=1e-9)
        assert get("nll") == pytest.approx(-logp[np.arange(len(t)), t].mean(), rel=1e-9)
        assert get("support_90") == pytest.approx(
            (np.argmax(np.cumsum(ps, 1) >= 0.9, 1) + 1).mean()
        )
        assert get("ece") == pytest.approx(bf_ece(ps[:, 0], p.argmax(1) == t), rel=1e-9)


def test_lora_spectrum_and_overlap_against_dense_svd_and_principal_angles(synth, tmp_path) -> None:
    ds, _ = synth
    store = store_with(tmp_path / "s.zarr")
    run_metrics(
        store,
        tmp_path / "out",
        metrics=["lora_update_erank", "lora_overlap_prev"],
        log=lambda _: None,
    )
    spec = pd.read_parquet(tmp_path / "out" / "lora_spectrum.parquet")
    ov = pd.read_parquet(tmp_path / "out" / "lora_overlap.parquet")
    ds = open_store(store)
    r, scale = SMALL.lora_rank, 2.0
    U = {}
    for c in ("A/01-stage", "A/02-stage"):
        A = np.asarray(ds["lora_A__q_proj"].sel(checkpoint=c).values)[1, :r]
        B = np.asarray(ds["lora_B__q_proj"].sel(checkpoint=c).values)[1, :, :r]
        u, s, _ = np.linalg.svd(scale * B.astype(np.float64) @ A)
        got = spec[
            (spec.checkpoint == c) & (spec.module == "q_proj") & (spec.block == 1)
        ].sort_values("index")
        np.testing.assert_allclose(got.singular_value, s[:r], rtol=1e-10)
        U[c] = u[:, :r]
    k = min(8, r)
    cos2 = np.cos(scipy.linalg.subspace_angles(U["A/01-stage"][:, :k], U["A/02-stage"][:, :k])) ** 2
    row = ov[
        (ov.checkpoint_a == "A/01-stage")
        & (ov.checkpoint_b == "A/02-stage")
        & (ov.module == "q_proj")
    ]
    per_block = []
    for b in range(SMALL.n_layers - 1):
        us = []
        for c in ("A/01-stage", "A/02-stage"):
            A = np.asarray(ds["lora_A__q_proj"].sel(checkpoint=c).values)[b, :r]
            B = np.asarray(ds["lora_B__q_proj"].sel(checkpoint=c).values)[b, :, :r]
            us.append(np.linalg.svd(B.astype(np.float64) @ A)[0][:, :k])
        per_block.append(np.mean(np.cos(scipy.linalg.subspace_angles(*us)) ** 2))
    assert float(row.overlap.iloc[0]) == pytest.approx(np.mean(per_block), rel=1e-9)
    assert 0 < cos2.mean() < 1
    assert float(row.baseline.iloc[0]) == pytest.approx(k / SMALL.n_features)


def test_identical_and_orthogonal_adapters(tmp_path) -> None:
    store = store_with(tmp_path / "s.zarr")
    g = zarr.open_group(str(store), mode="r+")
    rng = np.random.default_rng(3)
    r = SMALL.lora_rank
    for module in ("q_proj", "v_proj"):
        A = g[f"lora_A__{module}"]
        B = g[f"lora_B__{module}"]
        a = rng.normal(size=A.shape[1:]).astype(np.float32)
        b1 = np.zeros(B.shape[1:], np.float32)
        b2 = np.zeros(B.shape[1:], np.float32)
        b1[:, :r, :r] = rng.normal(size=(B.shape[1], r, r))  # column space in e_0..e_{r-1}
        b2[:, r : 2 * r, :r] = rng.normal(size=(B.shape[1], r, r))  # in e_r..e_{2r-1}
        A[1], A[2], B[1], B[2] = a, a, b1, b2
    resign(store)
    run_metrics(store, tmp_path / "out", metrics=["lora_overlap_prev"], log=lambda _: None)
    ov = pd.read_parquet(tmp_path / "out" / "lora_overlap.parquet")
    same = ov[(ov.checkpoint_a == "A/01-stage") & (ov.checkpoint_b == "A/01-stage")]
    orth = ov[(ov.checkpoint_a == "A/01-stage") & (ov.checkpoint_b == "A/02-stage")]
    np.testing.assert_allclose(same.overlap, 1.0, rtol=1e-12)
    np.testing.assert_allclose(orth.overlap, 0.0, atol=1e-12)
    table = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    assert value(table, "lora_overlap_prev", "A/02-stage", -1) == pytest.approx(0.0, abs=1e-12)


def test_analytic_isotropic_rank_k_and_identical_checkpoints(tmp_path) -> None:
    C, L, N, d = SMALL.n_checkpoints, SMALL.n_layers, SMALL.n_tokens, SMALL.n_features
    rng = np.random.default_rng(7)
    hidden = np.empty((C, L, N, d))
    hidden[0] = rng.normal(size=(L, N, d))  # isotropic Gaussian
    hidden[1] = hidden[0]  # identical to the base
    k = 3  # rank-k, exactly representable in float16 (small integers)
    hidden[2] = rng.integers(-5, 6, size=(L, N, k)) @ rng.integers(0, 2, size=(k, d)) + 7
    store = store_with(tmp_path / "s.zarr", hidden=hidden)
    run_metrics(
        store,
        tmp_path / "out",
        options=F64,
        metrics=["erank_norm", "erank", "cka_base", "drift_base"],
        log=lambda _: None,
    )
    table = pd.read_parquet(tmp_path / "out" / "metrics.parquet")
    assert value(table, "erank_norm", "base", 1) > 0.95
    assert value(table, "erank", "A/02-stage", 1) <= k + 1e-9
    assert value(table, "cka_base", "A/01-stage", 1) == pytest.approx(1.0, abs=1e-12)
    assert value(table, "drift_base", "A/01-stage", 1) == pytest.approx(0.0, abs=1e-12)
