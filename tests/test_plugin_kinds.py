"""Plugin metrics of the kinds the drivers cannot yet compute through their registry entry
(lora, derived) are refused at load with a clear message, instead of being stored with another
metric's value (a lora plugin returning 42.0 came out as lora_overlap_prev's value) or
producing no rows and no error (a derived plugin); so is a metric without a compute function.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_analyze_support import registry_restored, store_with

from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.analyze.plugins import PluginError
from repcollapse.analyze.registry import REGISTRY

PLUGINS = {
    "lora": 'Metric("plugin_lora42", 1, "always 42", "lora", ("lora",), lambda *a: 42.0)',
    "derived": 'Metric("plugin_derived42", 1, "always 42", "derived", ("metrics",), lambda *a: 42.0)',
    "no_compute": 'Metric("plugin_nocompute", 1, "nothing", "moment", ("gram",))',
}


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    with registry_restored(*(f"kind_{k}" for k in PLUGINS)):
        yield


@pytest.mark.parametrize("kind", list(PLUGINS))
def test_unsupported_plugin_kind_is_refused_by_name(kind: str, tmp_path: Path) -> None:
    plugin = tmp_path / f"kind_{kind}.py"
    plugin.write_text(
        textwrap.dedent(
            f"""
            from repcollapse.analyze.registry import Metric, register
            register({PLUGINS[kind]})
            """
        )
    )
    name = PLUGINS[kind].split('"')[1]
    store = store_with(tmp_path / "s.zarr")
    with pytest.raises(PluginError, match=name) as exc:
        run_metrics(store, tmp_path / "out", metrics=[name], plugins=[str(plugin)], log=print)
    assert str(plugin) in str(exc.value)
    assert name not in REGISTRY.names()  # not left half-registered
    assert not (tmp_path / "out" / "metrics.parquet").exists()
