"""Every metric means the same in float32 and float64 mode, on a store of real scale.

d = 576 (SmolLM2's width), 2,400 tokens, power-law spectra that run through every spectrum
threshold (alpha-ReQ's fit floor, RankMe's round-off floor), a sink-like outlier dimension on
every token, and one example whose tokens are identical (its centered token matrix is zero), as
probe-general-0004 is at SmolLM2's embedding layer. One parametrised test over every registered
metric: the default float32 mode gives the same rows as float64 mode, with values within 1e-5
relative (1e-7 absolute near 0). RankMe is checked against np.linalg.svd of the raw rows,
alpha-ReQ against a float64 weighted fit written out here, seq_erank's convention by brute force.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_analyze_support import rows_of

from repcollapse.analyze import registry
from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.analyze.metrics.collapse import COMPONENTS, collapse_rows
from repcollapse.analyze.options import Options
from repcollapse.store_schema import open_store, testing
from repcollapse.store_schema.testing import (
    SyntheticSpec,
    make_synthetic_store,
    synthetic_token_coords,
)

SPEC = SyntheticSpec(
    n_checkpoints=3, n_layers=2, n_tokens=2400, n_features=576, token_chunk=512, lora_rank=4
)
KEY = ["metric", "checkpoint", "layer", "domain", "span"]
RTOL, ATOL = 1e-5, 1e-7
EPS32 = float(np.finfo(np.float32).eps)
SAME_EXAMPLE = 3  # its non-sink tokens get one identical row at layer 0


def _power_law(rng: np.random.Generator, n: int, d: int, a: float) -> np.ndarray:
    """n rows whose covariance eigenvalues fall as i^-a in a random basis: from l_1 down to
    ~1e-6 l_1 at d = 576, so that hundreds of them sit around every spectrum threshold."""
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return (rng.normal(size=(n, d)) * np.arange(1, d + 1) ** (-a / 2)) @ basis.T * 3.0


def _hidden(coords: dict[str, np.ndarray]) -> np.ndarray:
    C, L, N, d = SPEC.n_checkpoints, SPEC.n_layers, SPEC.n_tokens, SPEC.n_features
    hidden = np.empty((C, L, N, d), np.float16)
    dom = np.unique(coords["domain"], return_inverse=True)[1]
    for layer in range(L):
        rng = np.random.default_rng([17, layer])
        h = _power_law(rng, N, d, 2.2 + 0.2 * layer) + rng.normal(0, 1.0, size=(6, d))[dom]
        h[:, 5] += 40.0 + rng.normal(0, 4.0, N)  # a massive feature on every token
        for c in range(C):
            if c > 0:  # a chain: each stage is its parent plus an update of its own
                h = h + _power_law(rng, N, d, 1.6) * 0.4
            hidden[c, layer] = h.astype(np.float16)
            hidden[c, layer, coords["is_sink"], 5] = 29_000.0  # the sink (left out by default)
    same = (coords["example"] == np.unique(coords["example"])[SAME_EXAMPLE]) & ~coords["is_sink"]
    hidden[:, 0, same] = hidden[:, 0, np.flatnonzero(same)[:1]]
    return hidden


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, pd.DataFrame, pd.DataFrame]:
    root = tmp_path_factory.mktemp("precision")
    hidden = _hidden(synthetic_token_coords(SPEC))
    store = root / "s.zarr"
    # the store's own writer stores these states (and their checksums) in place of its default
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(testing, "synthetic_hidden", lambda spec, coords, c, layer: hidden[c, layer])
        make_synthetic_store(store, SPEC)
    out = {}
    for precision in ("float32", "float64"):
        opts = Options(precision=precision, temperatures=(2.0,))
        run_metrics(store, root / precision, options=opts, log=lambda _: None)
        out[precision] = pd.read_parquet(root / precision / "metrics.parquet")
    return open_store(store), out["float32"], out["float64"]


def _by_key(table: pd.DataFrame, name: str) -> pd.Series:
    rows = table[table["metric"].str.split("@").str[0] == name]
    return rows.set_index(KEY)["value"].sort_index()


@pytest.mark.parametrize("name", registry.names())
def test_default_mode_matches_float64_mode(tables, name: str) -> None:
    _, f32, f64 = tables
    a, b = _by_key(f32, name), _by_key(f64, name)
    assert len(b) > 0, f"{name}: no rows in float64 mode"
    assert list(a.index) == list(b.index), f"{name}: the two modes report different rows"
    tol = RTOL * np.abs(b.to_numpy()) + ATOL
    if name.startswith("drift_"):
        # 1 - CKA: the float32 products' error is relative to CKA (~1), not to the difference
        tol = RTOL * np.abs(1.0 - b.to_numpy()) + ATOL
    elif name == "collapse_index" or name.startswith("ci_z_"):
        tol = _z_tolerance(f32, f64, b)
    err = np.abs(a.to_numpy() - b.to_numpy())
    worst = int(np.argmax(err - tol))
    assert np.all(err <= tol), (name, b.index[worst], a.iloc[worst], b.iloc[worst], tol[worst])


def _z_tolerance(f32: pd.DataFrame, f64: pd.DataFrame, rows: pd.Series) -> np.ndarray:
    """What the components' own float32 - float64 differences (each within 1e-5, tested above)
    propagate to in a z-score across the checkpoints: dz <= 2 (1 + |z|max) max|dx| / sd. The
    index (a mean of parts; at layer -1 a mean over layers) gets its largest part's bound. A
    component of no spread gives z = 0 in both modes, so its bound is 0."""
    sel = [(t[(t["domain"] == "all") & (t["span"] == "all")]) for t in (f32, f64)]
    x32, x64 = (t.set_index(["metric", "layer", "checkpoint"])["value"] for t in sel)
    bound: dict[tuple[str, int], float] = {}
    for (comp, layer), v in x64.groupby(level=["metric", "layer"]):
        sd = float(v.std(ddof=0))
        if comp not in dict(COMPONENTS) or not sd > 1e-9 * float(v.abs().max()):
            continue
        dx = float((x32.loc[v.index] - v).abs().max())
        bound[(comp, layer)] = 2 * (1 + float((v - v.mean()).abs().max()) / sd) * dx / sd
    out = []
    for (name, _, layer, _, _), _ in rows.items():
        comps = [name[len("ci_z_") :]] if name.startswith("ci_z_") else list(dict(COMPONENTS))
        layers = {layer} if layer != -1 or name.startswith("ci_z_") else {ly for _, ly in bound}
        out.append(max([bound.get((c, ly), 0.0) for c in comps for ly in layers] + [0.0]))
    return np.asarray(out) + ATOL


def _selections(ds) -> list[tuple[str, str]]:
    doms = list(dict.fromkeys(np.asarray(ds["domain"].values).tolist()))
    spans = list(dict.fromkeys(np.asarray(ds["span"].values).tolist()))
    return [("all", "all"), *[(d, "all") for d in doms], *[("all", s) for s in spans]]


def _value(table: pd.DataFrame, name: str, c: str, layer: int, dom: str, span: str) -> float:
    return float(_by_key(table, name).loc[(name, c, layer, dom, span)])


def ref_rankme(H: np.ndarray) -> float:
    """RankMe from the SVD of the raw rows (no floor: since RankMe v4 the metric agrees with the
    exact singular values; v3's float32 floor was part of this reference)."""
    s = np.linalg.svd(H, compute_uv=False)
    p = s[s > 0] / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def ref_alpha(H: np.ndarray) -> float | None:
    """alpha-ReQ by weighted least squares written out: points l_i > 1e-5 l_1, i <= min(N-1, d),
    weight log2(l_i / (1e-5 l_1)) capped at 1."""
    n, d = H.shape
    lam = np.linalg.svd(H - H.mean(axis=0), compute_uv=False) ** 2 / (n - 1)
    lam = lam[: min(n - 1, d)]
    i = np.flatnonzero(lam > 1e-5 * lam[0])
    if len(i) < 3:
        return None
    w = np.clip(np.log2(lam[i] / (1e-5 * lam[0])), 0.0, 1.0)
    x, y = np.log(i + 1.0), np.log(lam[i])
    xm, ym = np.average(x, weights=w), np.average(y, weights=w)
    return float(-np.sum(w * (x - xm) * (y - ym)) / np.sum(w * (x - xm) ** 2))


@pytest.mark.parametrize("layer", [0, 1])
def test_rankme_and_alpha_req_against_the_rows(tables, layer: int) -> None:
    ds, f32, f64 = tables
    for c in ("base", "A/02-stage"):
        for dom, span in _selections(ds):
            H = rows_of(ds, c, layer, dom, span)
            rm, alpha = ref_rankme(H), ref_alpha(H)
            for table in (f32, f64):
                assert _value(table, "rankme", c, layer, dom, span) == pytest.approx(rm, rel=RTOL)
                assert _value(table, "alpha_req", c, layer, dom, span) == pytest.approx(
                    alpha, rel=RTOL
                )


def test_an_example_with_identical_tokens_is_left_out_of_seq_erank(tables) -> None:
    ds, f32, f64 = tables
    ex = np.asarray(ds["example"].values)
    keep = ~np.asarray(ds["is_sink"].values).astype(bool)
    H = np.asarray(ds["hidden"].sel(checkpoint="base").isel(layer=0).values, np.float64)
    ranks, skipped = [], 0
    for e in dict.fromkeys(ex.tolist()):
        X = H[(ex == e) & keep]
        X = X - X.mean(axis=0)
        if not np.any(X):
            skipped += 1
            continue
        lam = np.linalg.svd(X, compute_uv=False) ** 2
        p = lam[lam > 0] / lam.sum()
        ranks.append(np.exp(-(p * np.log(p)).sum()))
    assert skipped == 1
    for table in (f32, f64):
        assert _value(table, "seq_erank", "base", 0, "all", "all") == pytest.approx(
            np.mean(ranks), rel=RTOL
        )
        assert _value(table, "seq_erank_skipped", "base", 0, "all", "all") == skipped
        assert _value(table, "seq_erank_skipped", "base", 1, "all", "all") == 0


def test_collapse_index_at_layer_minus_1_leaves_the_embeddings_out() -> None:
    """Layer -1 is the mean of the per-layer index over layers 1..L, as the stats' layer
    convention: layer 0 (embeddings, unchanged by LoRA) would only dilute it."""
    rng = np.random.default_rng(0)
    rows = []
    for c in ("base", "A/01", "A/02"):
        for layer in range(4):
            for comp in ("erank", "pr", "aniso_centered", "topk_var_10"):
                v = 1.0 if layer == 0 else rng.normal()
                if layer == 0 and comp == "erank" and c == "A/02":
                    v = 0.5  # a spread at the embeddings, which layer -1 must leave out
                rows.append((comp, c, layer, "all", "all", v, 100))
    metrics = pd.DataFrame(rows, columns=[*KEY, "value", "n_tokens"])
    ci = collapse_rows(metrics)
    ci = ci[ci["metric"] == "collapse_index"].set_index(["checkpoint", "layer"])["value"]
    for c in ("base", "A/01", "A/02"):
        per_layer = [ci[(c, layer)] for layer in (1, 2, 3)]
        assert ci[(c, -1)] == pytest.approx(np.mean(per_layer), rel=1e-12)
    assert (ci.xs(0, level="layer").abs() > 0.1).any()  # layer 0 has its own rows


def test_alpha_and_rankme_are_continuous_at_their_floors() -> None:
    """Round-off that moves one eigenvalue across a floor moves the metric by round-off, not by
    a whole point (a hard cut at 1e-6 l_1 moved alpha-ReQ by 3.3e-3 on the demo store)."""
    from repcollapse.analyze.metrics.spectrum import (
        ALPHA_REL_FLOOR,
        RANKME_FLOOR,
        alpha_fit,
        rankme_of,
    )

    i = np.arange(1, 401, dtype=np.float64)
    lam = i**-1.5 * np.exp((1 - i) / 40.0)  # l_1 = 1; curved in log-log, as real spectra are
    j = int(np.flatnonzero(lam > ALPHA_REL_FLOOR)[-1]) + 1  # the first point below the floor
    lo, hi = lam.copy(), lam.copy()
    lo[j], hi[j] = ALPHA_REL_FLOOR * (1 - 1e-4), ALPHA_REL_FLOOR * (1 + 1e-4)
    a_lo, a_hi = alpha_fit(lo, 400), alpha_fit(hi, 400)

    def hard(x: np.ndarray) -> float:  # the version-1 rule: a hard cut, unweighted
        i = np.flatnonzero(x > ALPHA_REL_FLOOR * x[0])
        return -np.polyfit(np.log(i + 1.0), np.log(x[i]), 1)[0]

    jump = abs(hard(hi) - hard(lo))
    assert jump > 1e-7 and abs(a_hi - a_lo) < 1e-3 * jump
    tau = RANKME_FLOOR  # RankMe's floor for l_max(H^T H) = 1
    second = np.r_[1.0, np.full(200, 10 * tau)]
    r = [rankme_of(np.r_[second, tau * (1 + s * 1e-4)], 400) for s in (-1, 1)]
    s_hard = np.sqrt(np.r_[second, tau * 1.0001])
    p = s_hard / s_hard.sum()
    jump = abs(np.exp(-(p * np.log(p)).sum()) - r[0]) / r[0]  # what a hard cut would move
    assert jump > 0 and abs(r[1] - r[0]) / r[0] < 1e-3 * jump
