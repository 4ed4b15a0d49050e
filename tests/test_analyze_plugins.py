"""User metric plugins: a metric written after the extraction runs on the archived store."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_analyze_support import registry_restored, rows_of, store_with

from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.analyze.plugins import ENV_VAR, PluginError, load_plugin
from repcollapse.cli.main import main
from repcollapse.store_schema import open_store
from repcollapse.store_schema.testing import SyntheticSpec

SPEC = SyntheticSpec(n_checkpoints=2, n_layers=2, n_tokens=300, n_features=8, token_chunk=64)
PLUGIN = textwrap.dedent(
    '''
    """A metric the package does not ship: the total variance tr(C)."""
    import numpy as np

    from repcollapse.analyze.registry import Metric, register


    def total_variance(view, selection):
        return float(np.trace(view.stats(selection).cov))


    register(Metric("plugin_total_var", 1, "trace of the covariance", "moment", ("gram",),
                    total_variance))
    '''
)


@pytest.fixture(scope="module", autouse=True)
def _restore_registry() -> Iterator[None]:
    with registry_restored("lab_metrics"):
        yield


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plugins")
    plugin = root / "lab_metrics.py"
    plugin.write_text(PLUGIN)
    return {"store": store_with(root / "s.zarr", SPEC), "plugin": plugin, "root": root}


def _values(tables: Path) -> pd.DataFrame:
    m = pd.read_parquet(tables / "metrics.parquet")
    return m[m.metric == "plugin_total_var"].set_index(["checkpoint", "layer", "domain", "span"])


def test_cli_plugin_metric_equals_brute_force_and_is_cached(world: dict[str, Path]) -> None:
    tables = world["root"] / "tables"
    argv = ["analyze", "metrics", str(world["store"]), "--out", str(tables)]
    argv += ["--plugin", str(world["plugin"]), "--metrics", "plugin_total_var"]
    assert main(argv) == 0
    got = _values(tables)
    ds = open_store(world["store"])
    for ckpt in ds.checkpoint.values:
        for layer in range(SPEC.n_layers):
            H = rows_of(ds, str(ckpt), layer)
            want = float(np.trace(np.cov(H, rowvar=False)))
            assert got.loc[(ckpt, layer, "all", "all"), "value"] == pytest.approx(want, rel=1e-6)
            d0 = str(np.asarray(ds["domain"].values)[0])
            Hd = rows_of(ds, str(ckpt), layer, domain=d0)
            want_d = float(np.trace(np.cov(Hd, rowvar=False)))
            assert got.loc[(ckpt, layer, d0, "all"), "value"] == pytest.approx(want_d, rel=1e-6)
    # loading the same plugin again (same process) registers nothing twice; nothing recomputed
    summary = run_metrics(
        world["store"],
        tables,
        metrics=["plugin_total_var"],
        plugins=[str(world["plugin"])],
        log=lambda _: None,
    )
    assert summary.computed == []
    assert len(_values(tables)) == len(got)


def test_plugin_from_the_environment_and_a_process_cluster(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers in other processes cannot import a file plugin by name: it travels by value."""
    distributed = pytest.importorskip("distributed")
    monkeypatch.setenv(ENV_VAR, str(world["plugin"]))
    out = world["root"] / "dist"
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        run_metrics(
            world["store"],
            out,
            metrics=["plugin_total_var"],
            layers=[1],
            scheduler_address=cluster.scheduler_address,
            log=lambda _: None,
        )
    ref = _values(world["root"] / "tables")
    got = _values(out)
    assert len(got) > 0
    pd.testing.assert_series_equal(got["value"], ref.loc[got.index, "value"])


def test_bad_plugins_are_refused_with_the_spec_named(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(PluginError, match="'nowhere.py': expected a Python file"):
        load_plugin("nowhere.py")
    with pytest.raises(PluginError, match="'no_such_lab.metrics': expected a .py file"):
        load_plugin("no_such_lab.metrics")
    clash = tmp_path / "json.py"
    clash.write_text("")
    with pytest.raises(PluginError, match="not already a module, found 'json'"):
        load_plugin(str(clash))
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('half-written')\n")
    argv = ["analyze", "metrics", str(world["store"]), "--out", str(tmp_path / "t")]
    assert main([*argv, "--plugin", str(broken)]) == 2
    assert "failed on import: RuntimeError: half-written" in capsys.readouterr().err
