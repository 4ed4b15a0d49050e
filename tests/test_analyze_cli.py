"""`repcollapse analyze ...` and `repcollapse query`, and the import boundary of a full run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_analyze_support import store_with

from repcollapse.analyze.tables.write import CHECKPOINT_COLUMNS, METRIC_COLUMNS
from repcollapse.cli.main import main
from repcollapse.store_schema.testing import SyntheticSpec

SPEC = SyntheticSpec(n_checkpoints=3, n_layers=2, n_tokens=240, n_features=8, token_chunk=96)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    store = store_with(root / "s.zarr", SPEC)
    out = root / "tables"
    assert (
        main(
            [
                "analyze",
                "metrics",
                str(store),
                "--out",
                str(out),
                "--layers",
                "-1",
                "--temperature",
                "2",
            ]
        )
        == 0
    )
    return out


def test_metrics_writes_the_documented_tables(tables: Path) -> None:
    for name in ("metrics", "checkpoints", "lora_overlap", "lora_spectrum"):
        assert (tables / f"{name}.parquet").exists(), name
    assert (tables / "provenance.json").exists()
    m = pd.read_parquet(tables / "metrics.parquet")
    assert list(m.columns) == list(METRIC_COLUMNS)
    assert set(m.layer) == {-1, 1}
    assert {"erank", "cka_parent", "collapse_index", "entropy@T2", "lora_overlap_prev"} <= set(
        m.metric
    )
    ck = pd.read_parquet(tables / "checkpoints.parquet")
    # the contract's columns first; behaviour detail (SE, n) columns may follow
    assert list(ck.columns)[: len(CHECKPOINT_COLUMNS)] == list(CHECKPOINT_COLUMNS) and len(ck) == 3
    ov = pd.read_parquet(tables / "lora_overlap.parquet")
    assert list(ov.columns) == [
        "store_id",
        "model_family",
        "checkpoint_a",
        "checkpoint_b",
        "module",
        "k",
        "overlap",
        "baseline",
    ]


def test_query_prints_a_table(tables: Path, capsys) -> None:
    sql = "SELECT checkpoint, value FROM metrics WHERE metric = 'erank' AND domain = 'all' AND span = 'all' ORDER BY checkpoint"
    assert main(["query", sql, "--tables", str(tables)]) == 0
    out = capsys.readouterr().out
    assert "checkpoint" in out and "A/02-stage" in out and "(3 rows)" in out
    assert (
        main(
            [
                "query",
                "SELECT count(*) AS n FROM lora_spectrum",
                "--tables",
                str(tables),
                "--format",
                "csv",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("n\n")


def test_query_error_names_the_views(tables: Path, capsys) -> None:
    assert main(["query", "SELECT * FROM nope", "--tables", str(tables)]) == 1
    assert "views in" in capsys.readouterr().err


def test_unknown_metric_is_refused_with_a_suggestion(tables: Path, capsys) -> None:
    assert main(["analyze", "metrics", "unused", "--out", str(tables), "--metrics", "erankk"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "did you mean 'erank'?" in err


@pytest.mark.parametrize(
    ("command", "func", "extra"),
    [
        ("stats", "main_stats", []),
        ("figures", "main_figures", ["--out", "figs"]),
        ("report", "main_report", ["--out", "r.html"]),
    ],
)
def test_stats_figures_report_dispatch(
    command: str, func: str, extra: list[str], monkeypatch
) -> None:
    from repcollapse.cli import analyze_tables_cmd

    seen = {}
    monkeypatch.setattr(analyze_tables_cmd, func, lambda args: seen.setdefault("args", args) and 0)
    main(["analyze", command, "TDIR", *extra])
    assert seen["args"].tables_dir == "TDIR"
    if extra:
        assert seen["args"].out == extra[1]


def test_a_full_run_imports_no_model_stack(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store\n"
        "from repcollapse.analyze.engine.runner import run_metrics\n"
        "from repcollapse.analyze.options import Options\n"
        f"make_synthetic_store({str(tmp_path / 's.zarr')!r}, SyntheticSpec(n_layers=2, n_tokens=200, n_features=8, token_chunk=64))\n"
        f"run_metrics({str(tmp_path / 's.zarr')!r}, {str(tmp_path / 'out')!r}, options=Options(temperatures=(2.0,)), log=lambda _: None)\n"
        "bad = sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'repcollapse.train', 'repcollapse.extract') if m in sys.modules)\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
