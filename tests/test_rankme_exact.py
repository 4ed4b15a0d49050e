"""RankMe in the default (float32) mode against np.linalg.svd of the stored rows, <= 1e-4.

Real scale: d = 576 (SmolLM2's width), 2,400 tokens, a power-law spectrum (l_i ~ i^-2.4, down to
~1e-7 l_1), a sink-like outlier dimension (a large mean with its own spread on every token, the
sinks themselves at 29,000 and left out), and a span whose rows take only three distinct values
(rank-deficient: its null directions must read as 0, not as round-off). Version 3's rule (float32
Grams, floor sqrt(d) eps32 l_max(scatter)) is evaluated on the same rows to show the test bites:
it was percents off.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_analyze_support import rows_of

from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.analyze.metrics.spectrum import erank_of, octave_ramp
from repcollapse.analyze.options import Options
from repcollapse.store_schema import open_store, testing
from repcollapse.store_schema.testing import (
    SyntheticSpec,
    make_synthetic_store,
    synthetic_token_coords,
)

SPEC = SyntheticSpec(
    n_checkpoints=1, n_layers=2, n_tokens=2400, n_features=576, token_chunk=1024, lora_rank=2
)
RTOL = 1e-4
LOW_RANK_SPAN = "late_response"


def _hidden(coords: dict[str, np.ndarray]) -> np.ndarray:
    rng = np.random.default_rng(5)
    N, d = SPEC.n_tokens, SPEC.n_features
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    h = (rng.normal(size=(N, d)) * np.arange(1, d + 1) ** -1.2) @ basis.T * 3.0
    h[:, 7] += 60.0 + rng.normal(0, 5.0, N)  # the outlier dimension
    low = coords["span"] == LOW_RANK_SPAN
    h[low] = rng.normal(size=(3, d))[rng.integers(0, 3, int(low.sum()))]
    h[low, 7] += 60.0
    h[coords["is_sink"], 7] = 29_000.0
    return h.astype(np.float16)


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, pd.DataFrame]:
    root = tmp_path_factory.mktemp("rankme")
    hidden = _hidden(synthetic_token_coords(SPEC))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(testing, "synthetic_hidden", lambda spec, coords, c, layer: hidden)
        make_synthetic_store(root / "s.zarr", SPEC)
    run_metrics(
        root / "s.zarr", root / "t", metrics=["rankme"], layers=[0], options=Options(), log=str
    )
    return open_store(root / "s.zarr"), pd.read_parquet(root / "t" / "metrics.parquet")


def _exact(H: np.ndarray) -> float:
    s = np.linalg.svd(H, compute_uv=False)
    p = s[s > 0] / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def _version3(H: np.ndarray) -> float:
    """Version 3: float32 products of domain-shifted rows, floor sqrt(d) eps32 l_max(scatter)."""
    n, d = H.shape
    x = (H - H[:1024].mean(axis=0)).astype(np.float32)
    G = np.zeros((d, d))
    for a in range(0, n, 1024):
        G += (x[a : a + 1024].T @ x[a : a + 1024]).astype(np.float64)
    s = x.sum(axis=0, dtype=np.float64)
    M = G - np.outer(s, s) / n
    mu = H.mean(axis=0)
    lam = np.clip(np.linalg.eigvalsh(M + n * np.outer(mu, mu))[::-1], 0.0, None)[: min(n, d)]
    tau = np.sqrt(d) * float(np.finfo(np.float32).eps) * np.linalg.eigvalsh(M)[-1]
    return float(erank_of(np.sqrt(lam) * octave_ramp(lam, tau)))


def test_rankme_equals_the_exact_singular_values(case) -> None:
    ds, table = case
    rows = table[table["metric"] == "rankme"].set_index(["domain", "span"])["value"]
    spans = list(dict.fromkeys(np.asarray(ds["span"].values).tolist()))
    doms = list(dict.fromkeys(np.asarray(ds["domain"].values).tolist()))
    sels = [("all", "all"), *[(d, "all") for d in doms], *[("all", s) for s in spans]]
    worst_v3 = 0.0
    for dom, span in sels:
        H = rows_of(ds, "base", 0, dom, span)
        exact = _exact(H)
        assert rows[(dom, span)] == pytest.approx(exact, rel=RTOL), (dom, span)
        worst_v3 = max(worst_v3, abs(_version3(H) - exact) / exact)
    assert worst_v3 > 1e-2  # the old rule fails this test by far


def test_a_rank_deficient_span_reads_its_rank(case) -> None:
    """Three distinct rows: RankMe of at most 3 singular values, not of round-off."""
    ds, table = case
    value = table[(table["metric"] == "rankme") & (table["span"] == LOW_RANK_SPAN)]["value"]
    assert float(value.iloc[0]) <= 3.0
    assert float(value.iloc[0]) == pytest.approx(
        _exact(rows_of(ds, "base", 0, "all", LOW_RANK_SPAN)), rel=RTOL
    )
