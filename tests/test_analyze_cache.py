"""Caching: a re-run computes nothing; new checkpoints, options and metrics compute only themselves."""

from __future__ import annotations

import pandas as pd
import pytest
from test_analyze_support import store_with

from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.analyze.options import Options
from repcollapse.store_schema import StoreWriter
from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store

SPEC = SyntheticSpec(n_checkpoints=3, n_layers=2, n_tokens=240, n_features=8, token_chunk=96)
QUIET = {"log": lambda _: None}


def _table(out) -> pd.DataFrame:
    return pd.read_parquet(out / "metrics.parquet")


def test_second_run_computes_nothing_and_writes_the_same_table(tmp_path) -> None:
    store = store_with(tmp_path / "s.zarr", SPEC)
    first = run_metrics(store, tmp_path / "out", **QUIET)
    t1 = _table(tmp_path / "out")
    second = run_metrics(store, tmp_path / "out", **QUIET)
    assert first.computed and first.passes > 0
    assert second.computed == [] and second.passes == 0 and second.blocks_read == 0
    pd.testing.assert_frame_equal(t1, _table(tmp_path / "out"))


def test_metrics_option_reruns_just_those_and_keeps_the_table(tmp_path) -> None:
    store = store_with(tmp_path / "s.zarr", SPEC)
    run_metrics(store, tmp_path / "out", **QUIET)
    before = _table(tmp_path / "out")
    again = run_metrics(store, tmp_path / "out", metrics=["erank"], recompute=True, **QUIET)
    assert {m for _, m, _ in again.computed} == {"erank"}
    pd.testing.assert_frame_equal(before, _table(tmp_path / "out"))


def test_an_option_recomputes_only_the_metrics_that_depend_on_it(tmp_path) -> None:
    store = store_with(tmp_path / "s.zarr", SPEC)
    run_metrics(store, tmp_path / "out", **QUIET)
    again = run_metrics(store, tmp_path / "out", options=Options(seed=5), **QUIET)
    assert {m for _, m, _ in again.computed} == {"probe_acc", "probe_acc_shuffled", "silhouette"}
    sinks = run_metrics(
        store, tmp_path / "out", metrics=["erank"], options=Options(include_sinks=True), **QUIET
    )
    assert {m for _, m, _ in sinks.computed} == {"erank"} and sinks.passes == SPEC.n_layers


def test_appended_checkpoint_is_analysed_alone(tmp_path) -> None:
    store = tmp_path / "s.zarr"
    make_synthetic_store(store, SPEC, complete=[True, True, False])
    run_metrics(store, tmp_path / "out", **QUIET)
    assert set(_table(tmp_path / "out").checkpoint) == {"base", "A/01-stage"}
    StoreWriter(store).mark_complete(2)  # the third checkpoint's chunks were written; now visible
    new = run_metrics(store, tmp_path / "out", **QUIET)
    assert {c for c, _, _ in new.computed} == {"A/02-stage"}
    # one pass per layer reads the new checkpoint, its parent and the base (for CKA)
    assert (
        new.passes == SPEC.n_layers and new.blocks_read == SPEC.n_layers * 3 * 3 + SPEC.n_layers * 3
    )
    table = _table(tmp_path / "out")
    fresh = run_metrics(store, tmp_path / "fresh", **QUIET)
    assert fresh.passes == SPEC.n_layers
    pd.testing.assert_frame_equal(table, _table(tmp_path / "fresh"))


def test_layers_added_later_are_computed_alone(tmp_path) -> None:
    store = store_with(tmp_path / "s.zarr", SPEC)
    run_metrics(store, tmp_path / "out", layers=[0], metrics=["erank", "cka_base"], **QUIET)
    more = run_metrics(
        store, tmp_path / "out", layers=[0, 1], metrics=["erank", "cka_base"], **QUIET
    )
    assert {layer for _, _, layer in more.computed} == {1}
    assert set(_table(tmp_path / "out").layer) - {-1} == {0, 1}  # -1: layer-averaged index


def test_unknown_checkpoint_and_layer_are_refused(tmp_path) -> None:
    store = store_with(tmp_path / "s.zarr", SPEC)
    with pytest.raises(ValueError, match="not complete checkpoints"):
        run_metrics(store, tmp_path / "out", checkpoints=["nope"], **QUIET)
    with pytest.raises(ValueError, match="layer 7 out of range"):
        run_metrics(store, tmp_path / "out", layers=[7], **QUIET)


def test_lora_tables_are_read_back_not_recomputed(tmp_path, monkeypatch) -> None:
    from repcollapse.analyze.metrics import lora

    spec = SyntheticSpec(**{**SPEC.__dict__, "lora_rank": 4})
    store = store_with(tmp_path / "s.zarr", spec)
    run_metrics(store, tmp_path / "out", **QUIET)
    first = {
        n: pd.read_parquet(tmp_path / "out" / f"{n}.parquet")
        for n in ("lora_overlap", "lora_spectrum")
    }
    assert len(first["lora_overlap"]) and len(first["lora_spectrum"])
    calls = []
    real = lora.checkpoint_updates
    monkeypatch.setattr(lora, "checkpoint_updates", lambda *a: calls.append(a) or real(*a))
    run_metrics(store, tmp_path / "out", metrics=["erank"], recompute=True, **QUIET)
    assert calls == []  # no LoRA factor read, no SVD
    for name, df in first.items():
        pd.testing.assert_frame_equal(df, pd.read_parquet(tmp_path / "out" / f"{name}.parquet"))
    # another lora_k is another table: recomputed
    run_metrics(store, tmp_path / "out", options=Options(lora_k=2), **QUIET)
    assert calls
