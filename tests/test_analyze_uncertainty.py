"""--uncertainty: the jackknife interval from the per-group moments of the one pass equals the
interval computed by recomputing each metric from the raw rows of every leave-one-group-out
example set (brute force, float64 NumPy written out here).

Tolerance: |difference| <= 1e-6 |value| + 1e-9 on se, ci_low and ci_high, in the default
(float32) mode: the own Grams are float64 (spectra exact to ~1e-12). The CKA family (values in
[-1, 1]) gets 1e-6 absolute on top: its cross-Grams are float32 products, and debiased CKA is a
difference of terms of order 1 that can end near 0 (measured 1.6e-9 off at a value of 1e-3).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.analyze.engine.tokens import build_plan, example_groups
from repcollapse.analyze.options import Options
from repcollapse.store_schema import open_store
from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store

SPEC = SyntheticSpec(n_checkpoints=3, n_layers=3, n_tokens=1200, n_features=16, token_chunk=256)
G = 5
LAYER = 1
KEY = ["metric", "checkpoint", "layer", "domain", "span"]
METRICS = [
    "erank",
    "pr",
    "topk_var_1",
    "rankme",
    "aniso_uncentered",
    "cka_base",
    "cka_parent",
    "cka_base_debiased",
    "aniso_centered",
    "probe_acc",
    "seq_erank",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("unc")
    make_synthetic_store(root / "s.zarr", SPEC)
    out = {}
    for name, opts in (
        ("jk", Options(uncertainty=True, uncertainty_groups=G)),
        ("plain", Options()),
    ):
        summary = run_metrics(
            root / "s.zarr", root / name, metrics=METRICS, layers=[LAYER], options=opts, log=str
        )
        out[name] = (summary, pd.read_parquet(root / name / "metrics.parquet"))
    return open_store(root / "s.zarr"), out


def _groups_brute(example: np.ndarray, domain: np.ndarray) -> np.ndarray:
    """The documented rule, written out: within a domain, example j of m -> floor(j G / m)."""
    out = np.empty(len(example), np.int64)
    for d in dict.fromkeys(domain.tolist()):
        exs = list(dict.fromkeys(example[domain == d].tolist()))
        for j, e in enumerate(exs):
            out[example == e] = j * G // len(exs)
    return out


def _erank(lam: np.ndarray) -> float:
    lam = np.clip(lam, 0, None)
    p = lam[lam > 0] / lam.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def _metric(name: str, X: np.ndarray, B: np.ndarray) -> float:
    n, d = X.shape
    Xc = X - X.mean(axis=0)
    lam = np.linalg.svd(Xc, compute_uv=False) ** 2 / (n - 1)
    if name == "erank":
        return _erank(lam)
    if name == "pr":
        return float(lam.sum() ** 2 / (lam**2).sum())
    if name == "topk_var_1":
        return float(lam[0] / lam.sum())
    if name == "rankme":
        s = np.linalg.svd(X, compute_uv=False)
        return _erank(s)
    if name == "aniso_uncentered":
        U = X / np.linalg.norm(X, axis=1, keepdims=True)
        C = U @ U.T
        return float((C.sum() - n) / (n * (n - 1)))
    if name in ("cka_base", "cka_parent"):
        Bc = B - B.mean(axis=0)
        return float(
            np.linalg.norm(Bc.T @ Xc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Bc.T @ Bc))
        )
    if name == "cka_base_debiased":
        h = _hsic_u
        return float(h(X, B) / np.sqrt(h(X, X) * h(B, B)))
    raise KeyError(name)


def _hsic_u(X: np.ndarray, Y: np.ndarray) -> float:
    """The unbiased HSIC of linear kernels (Song et al. 2012), in kernel form."""
    n = len(X)
    K, L = X @ X.T, Y @ Y.T
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    one = np.ones(n)
    return float(
        (
            np.sum(K * L)
            + one @ K @ one * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ K) @ (L @ one)
        )
        / (n * (n - 3))
    )


def _jackknife(theta: float, loo: list[float]) -> tuple[float, float, float]:
    k = len(loo)
    v = np.asarray(loo)
    se = math.sqrt((k - 1) / k * ((v - v.mean()) ** 2).sum())
    t = sps.t.ppf(0.975, k - 1)
    return se, theta - t * se, theta + t * se


def test_groups_follow_the_documented_rule(runs) -> None:
    ds, _ = runs
    ex, dom = np.asarray(ds["example"].values), np.asarray(ds["domain"].values)
    assert np.array_equal(example_groups(ex, dom, G), _groups_brute(ex, dom))
    coords = {
        k: np.asarray(ds[k].values)
        for k in ("example", "domain", "span", "split", "is_sink", "target_id")
    }
    plan = build_plan(coords, SPEC.token_chunk, n_groups=G)
    assert plan.n_gram_blocks == G * (len(plan.domains) + len(plan.spans))
    # every cell is one (domain, span, group); cells of a selection cover it exactly once
    keep = ~coords["is_sink"].astype(bool)
    assert int(plan.cell_count.sum()) == int(keep.sum())


@pytest.mark.parametrize("checkpoint", ["A/01-stage", "A/02-stage"])
def test_interval_equals_brute_force_leave_one_group_out(runs, checkpoint: str) -> None:
    ds, out = runs
    table = out["jk"][1].set_index(KEY)
    h = np.asarray(ds["hidden"].isel(layer=LAYER).values, np.float64)
    names = [str(x) for x in ds["name"].values]
    X_all, B_all = h[names.index(checkpoint)], h[names.index("base")]
    parent = str(ds["parent"].values[names.index(checkpoint)])
    P_all = h[names.index(parent)]
    ex, dom = np.asarray(ds["example"].values), np.asarray(ds["domain"].values)
    span = np.asarray(ds["span"].values)
    keep = ~np.asarray(ds["is_sink"].values).astype(bool)
    group = _groups_brute(ex, dom)
    sels = [("all", "all")]
    sels += [(d, "all") for d in dict.fromkeys(dom.tolist())]
    sels += [("all", s) for s in dict.fromkeys(span.tolist())]
    checked = 0
    brute = ("erank", "pr", "topk_var_1", "rankme", "aniso_uncentered", "cka_base")
    brute += ("cka_parent", "cka_base_debiased")
    for name in brute:
        R_all = P_all if name == "cka_parent" else B_all
        for d, s in sels:
            in_sel = (
                keep & ((dom == d) if d != "all" else True) & ((span == s) if s != "all" else True)
            )
            present = sorted(set(group[in_sel].tolist()))
            row = table.loc[(name, checkpoint, LAYER, d, s)]
            loo = [
                _metric(name, X_all[in_sel & (group != g)], R_all[in_sel & (group != g)])
                for g in present
            ]
            theta = _metric(name, X_all[in_sel], R_all[in_sel])
            assert row["value"] == pytest.approx(theta, rel=1e-6, abs=1e-9)
            se, lo, hi = _jackknife(float(row["value"]), loo)
            tol = 1e-6 * abs(theta) + (1e-6 if name.startswith("cka") else 1e-9)
            assert int(row["n_groups"]) == len(present)
            for got, want in ((row["se"], se), (row["ci_low"], lo), (row["ci_high"], hi)):
                assert abs(got - want) <= tol, (name, d, s, got, want)
            assert row["ci_low"] < row["value"] < row["ci_high"]
            checked += 1
    assert checked == len(brute) * len(sels)


def _seq_erank(X: np.ndarray, ex: np.ndarray) -> float:
    """Mean over examples (>= 2 rows) of the erank of the example's centered token matrix."""
    ranks = []
    for e in dict.fromkeys(ex.tolist()):
        Z = X[ex == e]
        if len(Z) < 2:
            continue
        s = np.linalg.svd(Z - Z.mean(axis=0), compute_uv=False)
        ranks.append(_erank(s**2))
    return float(np.mean(ranks))


def test_seq_erank_interval_equals_brute_force(runs) -> None:
    ds, out = runs
    table = out["jk"][1].set_index(KEY)
    names = [str(x) for x in ds["name"].values]
    X = np.asarray(ds["hidden"].isel(layer=LAYER).values, np.float64)[names.index("A/02-stage")]
    ex, dom = np.asarray(ds["example"].values), np.asarray(ds["domain"].values)
    span = np.asarray(ds["span"].values)
    keep = ~np.asarray(ds["is_sink"].values).astype(bool)
    group = _groups_brute(ex, dom)
    sels = [("all", "all"), *[(d, "all") for d in dict.fromkeys(dom.tolist())]]
    sels += [("all", s) for s in dict.fromkeys(span.tolist())]
    for d, s in sels:
        in_sel = keep & ((dom == d) if d != "all" else True) & ((span == s) if s != "all" else True)
        present = sorted(set(group[in_sel].tolist()))
        loo = [_seq_erank(X[in_sel & (group != g)], ex[in_sel & (group != g)]) for g in present]
        row = table.loc[("seq_erank", "A/02-stage", LAYER, d, s)]
        theta = _seq_erank(X[in_sel], ex[in_sel])
        assert row["value"] == pytest.approx(theta, rel=1e-6)
        se, lo, hi = _jackknife(float(row["value"]), loo)
        assert int(row["n_groups"]) == len(present) and se > 0
        for got, want in ((row["se"], se), (row["ci_low"], lo), (row["ci_high"], hi)):
            assert abs(got - want) <= 1e-6 * abs(theta), (d, s, got, want)


def test_metrics_without_per_group_inputs_say_so(runs) -> None:
    _, out = runs
    table = out["jk"][1]
    for name in ("aniso_centered", "probe_acc"):
        rows = table[table["metric"] == name]
        assert len(rows) > 0
        assert (
            rows[["se", "ci_low", "ci_high"]].isna().all().all() and (rows["n_groups"] == 0).all()
        )
    erank = table[table["metric"] == "erank"]
    assert (erank["n_groups"] == G).all() and erank["se"].gt(0).all()
    prov = json.loads(Path(out["jk"][0].tables["provenance"]).read_text())["analysis"]
    assert prov["uncertainty"]["groups"] == G
    assert set(prov["uncertainty"]["no_interval_by_need"]) == {"rows", "centered_unit"}
    plain = json.loads(Path(out["plain"][0].tables["provenance"]).read_text())["analysis"]
    assert plain["uncertainty"] == {"computed": False}


def test_same_values_and_reads_without_uncertainty(runs) -> None:
    """The groups change no point estimate, and the store is read once per pass either way."""
    _, out = runs
    (s_jk, jk), (s_plain, plain) = out["jk"], out["plain"]
    a, b = jk.set_index(KEY)["value"].sort_index(), plain.set_index(KEY)["value"].sort_index()
    assert list(a.index) == list(b.index)
    assert np.allclose(a.to_numpy(), b.to_numpy(), rtol=1e-6, atol=1e-9)
    assert s_jk.blocks_read == s_plain.blocks_read
    assert plain[["se", "ci_low", "ci_high"]].isna().all().all()
    assert (plain["n_groups"] == 0).all()
