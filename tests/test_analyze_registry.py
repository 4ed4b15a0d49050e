"""The metric registry, and one conformance test that runs over every registered metric."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from test_analyze_support import store_with

from repcollapse.analyze import registry
from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.analyze.registry import Metric, MetricRegistry, UnknownMetricError
from repcollapse.store_schema.testing import SyntheticSpec

TINY = SyntheticSpec(n_checkpoints=3, n_layers=2, n_tokens=240, n_features=8, token_chunk=96)


def test_duplicate_registration_is_refused() -> None:
    reg = MetricRegistry()
    m = Metric("thing", 1, "a thing", "moment", ("gram",), lambda view, sel: 1.0)
    reg.register(m)
    with pytest.raises(ValueError, match="'thing' is already registered"):
        reg.register(dataclasses.replace(m, version=2))
    erank = registry.get("erank")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(dataclasses.replace(erank, compute=lambda view, sel: 0.0))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(dataclasses.replace(erank, description="another definition"))
    # the same definition again (its module re-imported, e.g. a plugin uploaded to a dask
    # cluster whose scheduler shares this process) replaces the entry instead of failing
    n = len(registry.names())
    assert registry.register(dataclasses.replace(erank)) is not erank
    assert len(registry.names()) == n and registry.get("erank").compute is erank.compute


def test_unknown_name_suggests_and_lists() -> None:
    with pytest.raises(UnknownMetricError) as info:
        registry.get("erankk")
    msg = str(info.value)
    assert msg.startswith("unknown metric 'erankk'; did you mean 'erank'? available: ")
    assert "cka_base" in msg and "collapse_index" in msg


def test_entries_validate_their_fields() -> None:
    with pytest.raises(ValueError, match="version must be an int >= 1"):
        Metric("x", 0, "d", "moment", ("gram",))
    with pytest.raises(ValueError, match="kind 'bogus' is not one of"):
        Metric("x", 1, "d", "bogus", ())
    with pytest.raises(ValueError, match=r"needs \['grams'\] not in"):
        Metric("x", 1, "d", "moment", ("grams",), lambda view, sel: 1.0)


@pytest.mark.parametrize("kind", registry.KINDS)
def test_an_entry_without_compute_is_refused_naming_its_signature(kind: str) -> None:
    """Every kind is computed through its entry, so an entry without compute cannot exist."""
    with pytest.raises(ValueError) as info:
        Metric("x", 1, "d", kind, ())
    msg = str(info.value)
    assert "'x'" in msg and "expected a compute function" in msg and "found None" in msg
    assert registry.COMPUTE_SIGNATURES[kind] in msg
    with pytest.raises(ValueError, match="found 3"):
        Metric("x", 1, "d", kind, (), 3)


def test_temperature_is_a_parameter_of_a_function_entry() -> None:
    entropy = registry.get("entropy")
    hot = entropy.at_temperature(2)
    assert (hot.name, hot.temperature, hot.row_name) == ("entropy", 2.0, "entropy@T2")
    assert (hot.version, hot.params, hot.compute) == (
        entropy.version,
        entropy.params,
        entropy.compute,
    )
    assert [v.row_name for v in entropy.variants((0.5, 2.5))] == [
        "entropy",
        "entropy@T0.5",
        "entropy@T2.5",
    ]
    erank = registry.get("erank")
    assert erank.variants((2.0,)) == [erank] and erank.row_name == "erank"
    with pytest.raises(ValueError, match="a temperature applies to kind 'function'"):
        erank.at_temperature(2)
    with pytest.raises(ValueError, match="temperature expected > 0"):
        entropy.at_temperature(0)


def test_resolve_adds_requirements() -> None:
    names = {m.name for m in registry.resolve(["collapse_index"])}
    assert {"erank", "pr", "aniso_centered", "topk_var_10", "lora_overlap_prev"} <= names


def test_temperature_rows_follow_the_run_options_and_come_from_the_cache(
    tiny_store, tmp_path
) -> None:
    """A function metric at T is an entry variant keyed by the run's temperatures: a run without
    the temperature does not list the cached T rows among its option set's rows (the other
    option set's rows stay in the file, tests/test_tables_options.py), a run with it serves
    them from the cache."""
    from repcollapse.analyze.options import Options

    def run(temperatures: tuple[float, ...]) -> tuple[set[str], list]:
        summary = run_metrics(
            tiny_store,
            tmp_path,
            metrics=["entropy"],
            layers=[1],
            options=Options(temperatures=temperatures),
            log=lambda _: None,
        )
        rows = pd.read_parquet(tmp_path / "metrics.parquet")
        keys = rows["options_key"].astype(str)
        this_run = keys.str.contains("temperatures=2") == bool(temperatures)
        return set(rows.metric[this_run].astype(str)), summary.computed

    names, computed = run((2.0,))
    assert {"entropy", "entropy@T2"} <= names and ("entropy@T2" in {m for _, m, _ in computed})
    names, computed = run(())
    assert "entropy" in names and "entropy@T2" not in names and computed == []
    names, computed = run((2.0,))
    assert "entropy@T2" in names and computed == []


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory):
    return store_with(tmp_path_factory.mktemp("reg") / "s.zarr", TINY)


@pytest.mark.parametrize("name", registry.names())
def test_every_registered_metric(name: str, tiny_store, tmp_path) -> None:
    """Documented, versioned, and runs on a synthetic store giving finite values."""
    m = registry.get(name)
    assert m.description.strip() and m.version >= 1
    assert m.kind in registry.KINDS
    run_metrics(tiny_store, tmp_path, metrics=[name], layers=[1], log=lambda _: None)
    table = pd.read_parquet(tmp_path / "metrics.parquet")
    rows = table[table.metric == name]
    assert len(rows), f"{name}: no rows"
    assert np.isfinite(rows.value).all()
    assert (rows.metric_version == m.version).all()
