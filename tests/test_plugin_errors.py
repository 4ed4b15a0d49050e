"""A plugin metric that raises while computing: exit 1, one message, the cache of the rest intact.

The message names the plugin file, the metric, the checkpoint and layer (and selection) where it
failed and the exception; no traceback. Rows the cache held before the failing run are still
there, byte for byte, and are served again without recomputation.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from test_analyze_support import registry_restored, store_with

from repcollapse.analyze.engine.runner import run_metrics
from repcollapse.analyze.plugins import MetricFailed
from repcollapse.cli.main import main
from repcollapse.store_schema.testing import SyntheticSpec

SPEC = SyntheticSpec(n_checkpoints=2, n_layers=2, n_tokens=300, n_features=8, token_chunk=64)
MOMENT = textwrap.dedent(
    """
    from repcollapse.analyze.registry import Metric, register


    def boom(view, selection):
        if selection == ("all", "all"):
            return 1.0
        raise ZeroDivisionError(f"no variance in {selection[0]}")


    register(Metric("plugin_boom", 1, "raises on a domain", "moment", ("gram",), boom))
    """
)
FUNCTION = textwrap.dedent(
    """
    from repcollapse.analyze.registry import Metric, register


    def fboom(sums):
        raise KeyError("logit_foo")


    register(Metric("plugin_fboom", 1, "raises", "function", ("logit_stats",), fboom))
    """
)


LAYER_FREE = textwrap.dedent(
    """
    from repcollapse.analyze.registry import Metric, register


    def lboom(inputs):
        raise RuntimeError(f"no factors for {inputs.checkpoint}")


    def dboom(rows):
        return rows[["checkpoint", "value"]]  # no layer column


    register(Metric("plugin_lboom", 1, "raises", "lora", ("lora",), lboom, scopes=("all",)))
    register(
        Metric(
            "plugin_dboom", 1, "bad shape", "derived", ("metrics",), dboom,
            scopes=("all",), requires=("erank",),
        )
    )
    """
)


@pytest.fixture(autouse=True)
def _restore_registry() -> Iterator[None]:
    with registry_restored("boom_metrics", "fboom_metrics", "lboom_metrics"):
        yield


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return store_with(tmp_path_factory.mktemp("perr") / "s.zarr", SPEC)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _argv(store: Path, out: Path, *rest: str) -> list[str]:
    return ["analyze", "metrics", str(store), "--out", str(out), "--scheduler", "sync", *rest]


def test_raising_moment_plugin_exits_1_naming_where_and_keeps_the_cache(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tables"
    assert main(_argv(store, out, "--metrics", "erank")) == 0
    capsys.readouterr()
    before = _snapshot(out)
    plugin = tmp_path / "boom_metrics.py"
    plugin.write_text(MOMENT)
    rc = main(_argv(store, out, "--plugin", str(plugin), "--metrics", "erank", "plugin_boom"))
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("repcollapse analyze metrics:")]
    assert len(lines) == 1, err
    msg = lines[0]
    for part in (str(plugin), "metric 'plugin_boom'", "ZeroDivisionError: no variance in"):
        assert part in msg, msg
    # where: a checkpoint and layer of the store, and the selection that raised
    assert re.search(r"checkpoint '(base|A/01-stage)', layer [01], domain '\w+', span 'all'", msg)
    assert _snapshot(out) == before  # nothing rewritten, nothing dropped
    again = run_metrics(store, out, metrics=["erank"], log=lambda _: None)
    assert again.computed == []
    assert set(pd.read_parquet(out / "metrics.parquet").metric) >= {"erank"}


def test_raising_function_plugin_names_the_metric_and_checkpoint(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = tmp_path / "fboom_metrics.py"
    plugin.write_text(FUNCTION)
    out = tmp_path / "tables"
    rc = main(_argv(store, out, "--plugin", str(plugin), "--metrics", "plugin_fboom"))
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err, err
    assert str(plugin) in err and "'plugin_fboom'" in err
    assert re.search(r"checkpoint '(base|A/01-stage)', layer -1 \(function metric\)", err), err
    assert "KeyError: 'logit_foo'" in err


@pytest.mark.parametrize(
    ("metric", "where", "error"),
    [
        (
            "plugin_lboom",
            r"checkpoint '[^']+', layer -1 \(lora metric\)",
            "RuntimeError: no factors",
        ),
        ("plugin_dboom", r"every checkpoint, layer -1 \(derived metric\)", r"\['layer'\] missing"),
    ],
)
def test_a_failing_lora_or_derived_plugin_names_itself(
    metric: str, where: str, error: str, store: Path, tmp_path: Path
) -> None:
    """lora and derived metrics are computed through their entry too: a plugin's failure is
    reported like a moment metric's, naming the plugin, the metric and where."""
    plugin = tmp_path / "lboom_metrics.py"
    plugin.write_text(LAYER_FREE)
    with pytest.raises(MetricFailed) as info:
        run_metrics(store, tmp_path / "t", metrics=[metric], plugins=[str(plugin)], log=print)
    msg = str(info.value)
    assert f"metric '{metric}'" in msg and str(plugin) in msg, msg
    assert re.search(where, msg) and re.search(error, msg), msg


def test_the_api_raises_metric_failed_with_the_threaded_scheduler(
    store: Path, tmp_path: Path
) -> None:
    plugin = tmp_path / "boom_metrics.py"
    plugin.write_text(MOMENT)
    with pytest.raises(MetricFailed, match="plugin_boom.*ZeroDivisionError"):
        run_metrics(
            store,
            tmp_path / "t",
            metrics=["plugin_boom"],
            plugins=[str(plugin)],
            scheduler_address="threads",
            log=lambda _: None,
        )


def test_a_worker_process_reports_the_same_error(store: Path, tmp_path: Path) -> None:
    """Under dask.distributed the error is raised in a worker process and must arrive intact."""
    distributed = pytest.importorskip("distributed")
    plugin = tmp_path / "boom_metrics.py"
    plugin.write_text(MOMENT)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        pytest.raises(MetricFailed, match=r"'plugin_boom' \(plugin .*boom_metrics\.py\) failed"),
    ):
        run_metrics(
            store,
            tmp_path / "t",
            metrics=["plugin_boom"],
            layers=[1],
            plugins=[str(plugin)],
            scheduler_address=cluster.scheduler_address,
            log=lambda _: None,
        )
