"""The one-pass accumulator: scheduler and chunking invariance, reads per pass, precision, sinks."""

from __future__ import annotations

import collections
import threading

import numpy as np
import pandas as pd
import pytest
from test_analyze_support import SMALL, bf_spectrum, rows_of, store_with
from zarr.storage import LocalStore

from repcollapse.analyze.engine.runner import run_metrics, store_plan
from repcollapse.analyze.options import Options
from repcollapse.store_schema import open_store
from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store

QUIET = {"log": lambda _: None}
KEY = ["metric", "checkpoint", "layer", "domain", "span"]
# Probe/silhouette rows are the same tokens under any chunking, so every metric is compared.


def _run(store, out, **kw) -> pd.DataFrame:
    run_metrics(store, out, **QUIET, **kw)
    return pd.read_parquet(out / "metrics.parquet").set_index(KEY)["value"].sort_index()


def _rel(a: pd.Series, b: pd.Series, floor: float) -> float:
    a, b = a.align(b, join="outer")
    assert not a.isna().any() and not b.isna().any(), "row sets differ"
    return float((np.abs(a - b) / np.maximum(np.abs(b), floor)).max())


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[int, object]:
    root = tmp_path_factory.mktemp("chunks")
    return {
        tc: store_with(root / f"s{tc}.zarr", SyntheticSpec(**{**SMALL.__dict__, "token_chunk": tc}))
        for tc in (64, 128, 600)
    }


def test_same_numbers_with_threads_sync_and_distributed(stores, tmp_path) -> None:
    distributed = pytest.importorskip("distributed")
    store = stores[128]
    opts = Options(precision="float64")
    threads = _run(store, tmp_path / "t", options=opts)
    sync = _run(store, tmp_path / "s", options=opts, scheduler_address="sync")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        dist = _run(
            store, tmp_path / "d", options=opts, scheduler_address=cluster.scheduler_address
        )
    assert _rel(sync, threads, 1e-12) <= 1e-12
    assert _rel(dist, threads, 1e-12) <= 1e-12


def test_chunk_size_invariance_float64_and_float32(stores, tmp_path) -> None:
    ref64 = _run(stores[600], tmp_path / "a64", options=Options(precision="float64"))
    for tc in (64, 128):
        got = _run(stores[tc], tmp_path / f"b64-{tc}", options=Options(precision="float64"))
        assert _rel(got, ref64, 1e-3) <= 1e-9, tc
    ref32 = _run(stores[600], tmp_path / "a32")
    got32 = _run(stores[64], tmp_path / "b32")
    for got, ref in ((got32, ref32), (ref32, ref64)):  # chunking; float32 default vs float64
        names = got.index.get_level_values("metric")
        # alpha-ReQ fits log eigenvalues down to 1e-6 l_1, where float32 round-off is ~1e-4
        # relative; z-scores amplify it by value / spread across checkpoints.
        loose = names.str.startswith(("ci_z", "collapse", "alpha"))
        assert _rel(got[~loose], ref[~loose], 1e-3) <= 5e-6
        assert _rel(got[loose], ref[loose], 1e-3) <= 2e-4


def test_per_cell_and_per_domain_span_products_agree(stores, tmp_path, monkeypatch) -> None:
    """The Grams formed per (domain, span) cell equal those formed per domain and again per span."""
    from repcollapse.analyze.engine import moments

    store = stores[600]
    plan_chunks = store_plan(open_store(store), Options()).chunks
    opts = Options(precision="float64")
    decisions = {}
    for name, overhead in (("cells", 0), ("domain_span", 10**9)):
        monkeypatch.setattr(moments, "GEMM_OVERHEAD_ROWS", overhead)
        decisions[name] = [moments.per_cell_products(cp) for cp in plan_chunks]
        decisions[name + "_run"] = _run(store, tmp_path / name, options=opts)
    # the fixture must exercise both layouts, else this test could not fail
    assert all(decisions["cells"]) and not any(decisions["domain_span"])
    assert _rel(decisions["cells_run"], decisions["domain_span_run"], 1e-3) <= 1e-9


def test_each_hidden_chunk_is_read_once_per_pass(stores, tmp_path, monkeypatch) -> None:
    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    original = LocalStore.get

    async def counting_get(self, key, prototype=None, byte_range=None):  # noqa: ANN001, ANN202
        if key.startswith("hidden/c/"):
            with lock:
                counts[key] += 1
        return await original(self, key, prototype, byte_range)

    monkeypatch.setattr(LocalStore, "get", counting_get)
    store = stores[64]
    n_chunks = SMALL.n_checkpoints * SMALL.n_layers * (SMALL.n_tokens // 64 + 1)
    run_metrics(
        store,
        tmp_path / "one",
        metrics=["erank", "cka_parent", "aniso_uncentered", "probe_acc", "seq_erank"],
        **QUIET,
    )
    assert len(counts) == n_chunks and set(counts.values()) == {1}, counts
    counts.clear()
    run_metrics(store, tmp_path / "two", metrics=["aniso_centered"], **QUIET)  # exact: 2nd pass
    assert len(counts) == n_chunks and set(counts.values()) == {2}, counts


def test_float16_values_near_30000_accumulate_without_overflow(tmp_path) -> None:
    C, L, N, d = SMALL.n_checkpoints, SMALL.n_layers, SMALL.n_tokens, SMALL.n_features
    rng = np.random.default_rng(11)
    hidden = 29_000.0 + rng.normal(0, 300.0, size=(C, L, N, d))  # float16 spacing here is 16
    store = store_with(tmp_path / "big.zarr", hidden=hidden)
    ds = open_store(store)
    got = _run(
        store, tmp_path / "out", metrics=["erank", "pr", "cka_base", "aniso_centered", "rankme"]
    )
    assert np.isfinite(got.values).all()
    for c in ("base", "A/01-stage"):
        ref = bf_spectrum(rows_of(ds, c, 1))
        # float32 products on shifted rows: ~1e-6; unshifted E[xx^T] - mu mu^T would lose all
        assert got[("erank", c, 1, "all", "all")] == pytest.approx(ref["erank"], rel=1e-5)
        assert got[("pr", c, 1, "all", "all")] == pytest.approx(ref["pr"], rel=1e-5)


def test_sink_exclusion_changes_results_with_a_huge_sink(stores, tmp_path) -> None:
    hidden = np.asarray(open_store(stores[128])["hidden"].values, np.float64)
    sink = np.asarray(open_store(stores[128])["is_sink"].values).astype(bool)
    hidden[:, :, sink, 0] = 29_000.0  # one massive feature, as in SmolLM2's middle layers
    store = store_with(tmp_path / "sink.zarr", hidden=hidden)
    ds = open_store(store)
    names = ["erank", "aniso_uncentered"]
    excl = _run(store, tmp_path / "ex", metrics=names, options=Options(precision="float64"))
    incl = _run(store, tmp_path / "in", metrics=names, options=Options(include_sinks=True))
    a, b = excl[("erank", "base", 1, "all", "all")], incl[("erank", "base", 1, "all", "all")]
    assert b < 0.5 * a  # the sink direction dominates the covariance it enters
    assert a == pytest.approx(bf_spectrum(rows_of(ds, "base", 1))["erank"], rel=1e-8)
    ref = bf_spectrum(rows_of(ds, "base", 1, include_sinks=True))["erank"]
    assert b == pytest.approx(ref, rel=1e-5)  # float32 default, sums of 29,000^2 included
    assert not pd.read_parquet(tmp_path / "in" / "metrics.parquet").sinks_excluded.any()
    assert pd.read_parquet(tmp_path / "ex" / "metrics.parquet").sinks_excluded.all()


def test_spectra_of_a_low_rank_selection_ignore_round_off(tmp_path) -> None:
    """A span whose rows take two values (as SmolLM2's template tokens at the embedding layer):
    its uncentered rank is 2, and RankMe must not count the float32 round-off of the other
    d - 2 directions (their square roots once moved it by 13%)."""
    spec = SyntheticSpec(n_checkpoints=2, n_layers=2, n_tokens=400, n_features=64, token_chunk=128)
    make_synthetic_store(tmp_path / "lr.zarr", spec)
    ds = open_store(tmp_path / "lr.zarr")
    hidden = np.asarray(ds["hidden"].values, np.float64)
    span = np.asarray(ds["span"].values)
    target = span[~np.asarray(ds["is_sink"].values).astype(bool)][-1]
    rows = np.flatnonzero(span == target)
    rng = np.random.default_rng(5)
    pair = rng.normal(0, 3.0, size=(2, spec.n_features))
    hidden[:, :, rows] = pair[np.arange(len(rows)) % 2]
    store = store_with(tmp_path / "lr2.zarr", spec, hidden=hidden)
    got = _run(store, tmp_path / "out", metrics=["rankme", "erank"])  # float32 default
    ref = bf_spectrum(rows_of(open_store(store), "base", 1, span=str(target)))
    assert got[("rankme", "base", 1, "all", str(target))] == pytest.approx(ref["rankme"], rel=1e-5)
    assert got[("erank", "base", 1, "all", str(target))] == pytest.approx(ref["erank"], rel=1e-5)
