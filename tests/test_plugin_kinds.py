"""Every metric kind is computed through its registry entry (scikit-learn's check-every-estimator
habit): one parametrised test over every kind, built-in and plugin.

- A plugin metric of each kind (moment, function, lora, derived) gets its own values in
  metrics.parquet, checked against a brute-force value from the same table (before the fix a lora
  plugin returning 42.0 was stored with lora_overlap_prev's value and a derived plugin gave no
  rows; then both kinds were refused at load).
- A built-in metric of each kind is computed by its entry's ``compute``: replaced by a spy that
  marks its results, the table holds exactly the marked values.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from test_analyze_support import registry_restored, store_with

from repcollapse.analyze import registry
from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.analyze.options import Options
from repcollapse.analyze.registry import KINDS, REGISTRY

PLUGIN = "kinds_plugin"
PLUGIN_CODE = """
from repcollapse.analyze.registry import Metric, register

def _moment(view, sel):
    return float(view.stats(sel).n) + 0.25

def _function(sums):
    return float(sums.n) + 0.5

def _lora(inputs):
    return {-1: 42.0 + len(inputs.ancestors), 1: 7.0}

def _derived(rows):
    er = rows[(rows.metric == "erank") & (rows.domain == "all") & (rows.span == "all")]
    out = er.groupby("checkpoint", as_index=False)["value"].sum()
    return out.assign(value=out["value"] + 0.5, layer=-1, n_tokens=3)

register(Metric("plugin_moment", 1, "n + 0.25", "moment", ("gram",), _moment))
register(Metric("plugin_function", 1, "n + 0.5", "function", ("logit_stats",), _function))
register(Metric("plugin_lora", 1, "42 + ancestors", "lora", ("lora",), _lora, scopes=("all",)))
register(
    Metric(
        "plugin_derived", 1, "sum of erank + 0.5", "derived", ("metrics",), _derived,
        scopes=("all",), requires=("erank",),
    )
)
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return store_with(tmp_path_factory.mktemp("kinds") / "s.zarr")


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    with registry_restored(PLUGIN):
        yield


def _ancestors(ck: pd.DataFrame) -> dict[str, int]:
    parent = dict(zip(ck["checkpoint"], ck["parent"], strict=True))
    out = {}
    for c in parent:
        n, cur = 0, c
        while parent.get(cur) in parent and parent[cur] != cur:
            n, cur = n + 1, parent[cur]
        out[c] = n
    return out


def _check_moment(t: pd.DataFrame, ck: pd.DataFrame) -> None:
    r = t[t.metric == "plugin_moment"]
    assert len(r) and set(r.layer) == {1}
    np.testing.assert_array_equal(r.value, r.n_tokens + 0.25)


def _check_function(t: pd.DataFrame, ck: pd.DataFrame) -> None:
    for name in ("plugin_function", "plugin_function@T2"):  # the variant at T = 2 too
        r = t[t.metric == name]
        assert len(r) and set(r.layer) == {-1}, name
        np.testing.assert_array_equal(r.value, r.n_tokens + 0.5)


def _check_lora(t: pd.DataFrame, ck: pd.DataFrame) -> None:
    r = t[t.metric == "plugin_lora"]
    anc = _ancestors(ck)
    free = r[r.layer == -1].set_index("checkpoint")["value"]
    assert free.to_dict() == {c: 42.0 + n for c, n in anc.items()}
    assert set(r[r.layer == 1].value) == {7.0} and len(r[r.layer == 1]) == len(anc)
    prev = t[t.metric == "lora_overlap_prev"]
    assert not set(prev.value) & set(free)  # not another metric's value


def _check_derived(t: pd.DataFrame, ck: pd.DataFrame) -> None:
    r = t[t.metric == "plugin_derived"].set_index("checkpoint")
    er = t[(t.metric == "erank") & (t.domain == "all") & (t.span == "all")]
    want = er.groupby("checkpoint")["value"].sum() + 0.5
    assert len(r) == len(ck) and set(r.layer) == {-1} and set(r.n_tokens) == {3}
    np.testing.assert_allclose(r["value"].sort_index(), want.sort_index(), rtol=0, atol=0)


PLUGIN_CHECKS: dict[str, Callable[[pd.DataFrame, pd.DataFrame], None]] = {
    "moment": _check_moment,
    "function": _check_function,
    "lora": _check_lora,
    "derived": _check_derived,
}
BUILT_IN = {
    "moment": "erank",
    "function": "entropy",
    "lora": "lora_overlap_prev",
    "derived": "collapse_index",
}
"""One built-in entry of each kind (every built-in runs in test_analyze_registry)."""


def _run(
    store: Path, out: Path, metrics: list[str], plugins: list[str] = ()
) -> tuple[pd.DataFrame, pd.DataFrame]:
    run_metrics(
        store,
        out,
        metrics=metrics,
        layers=[1],
        options=Options(temperatures=(2.0,)),
        plugins=list(plugins),
        log=lambda _: None,
    )
    return pd.read_parquet(out / "metrics.parquet"), pd.read_parquet(out / "checkpoints.parquet")


def test_every_kind_is_covered() -> None:
    assert set(PLUGIN_CHECKS) == set(BUILT_IN) == set(KINDS)
    assert all(registry.get(n).kind == k for k, n in BUILT_IN.items())


@pytest.mark.parametrize("kind", KINDS)
def test_plugin_of_every_kind_gets_its_own_values(kind: str, store: Path, tmp_path: Path) -> None:
    plugin = tmp_path / f"{PLUGIN}.py"
    plugin.write_text(textwrap.dedent(PLUGIN_CODE))
    table, ck = _run(store, tmp_path / "out", [f"plugin_{kind}"], [str(plugin)])
    PLUGIN_CHECKS[kind](table, ck)


def _marked(kind: str, compute: Callable[..., Any], calls: list[int]) -> Callable[..., Any]:
    """``compute`` whose every result is shifted by 1000: values of the table that carry the
    shift can only come from the entry's compute."""

    def spy(*args: Any) -> Any:
        calls.append(1)
        out = compute(*args)
        if out is None:
            return None
        if isinstance(out, pd.DataFrame):
            return out.assign(value=out["value"] + 1000.0)
        if isinstance(out, dict):
            return {k: v + 1000.0 for k, v in out.items()}
        return out + 1000.0

    return spy


@pytest.mark.parametrize("kind", KINDS)
def test_built_in_of_every_kind_is_computed_by_its_entry(
    kind: str, store: Path, tmp_path: Path
) -> None:
    name = BUILT_IN[kind]
    plain, _ = _run(store, tmp_path / "plain", [name])
    entry, calls = registry.get(name), []
    REGISTRY._metrics[name] = dataclasses.replace(
        entry, compute=_marked(kind, entry.compute, calls)
    )
    marked, _ = _run(store, tmp_path / "marked", [name])
    key = ["metric", "checkpoint", "layer", "domain", "span"]
    a = plain[plain.metric.str.startswith(name)].set_index(key)["value"].sort_index()
    b = marked[marked.metric.str.startswith(name)].set_index(key)["value"].sort_index()
    assert calls and len(a) and a.index.equals(b.index)
    np.testing.assert_allclose(b.to_numpy(), a.to_numpy() + 1000.0, rtol=1e-12)
