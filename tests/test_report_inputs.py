"""The report shows the statistics and figures it is given (never re-runs them behind the
user's back); absent ones are a usage error unless --compute-missing, which says so."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from repcollapse.analyze.report.figures import make_figures
from repcollapse.analyze.report.html import MissingReportInputs, build_report
from repcollapse.analyze.stats.regression import run_stats
from repcollapse.analyze.tables.synthetic import SyntheticTablesSpec, make_synthetic_tables
from repcollapse.cli.main import main

SPEC = SyntheticTablesSpec(families=("smollm2",), seeds=(0,), mitigations=(), noop=False)


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tables with their statistics and figures written, as the demo leaves them."""
    root = tmp_path_factory.mktemp("rep")
    make_synthetic_tables(root / "tables", SPEC)
    run_stats(root / "tables")
    make_figures(root / "tables", root / "figures", html=False)
    return root


def test_report_shows_the_statistics_written_not_a_rerun(done: Path, tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    shutil.copytree(done / "tables", tables)
    reg = pd.read_parquet(tables / "regression.parquet")
    reg["term"] = "SENTINEL_TERM"  # what 'analyze stats' wrote is what the page shows
    reg.to_parquet(tables / "regression.parquet", index=False)
    page = build_report(tables, tmp_path / "r.html", figures_dir=done / "figures").read_text()
    assert "SENTINEL_TERM" in page
    assert "Statistics read from" in page and "Figures read from" in page
    assert not (tmp_path / "figures").exists()  # nothing drawn


def test_missing_statistics_are_refused_naming_the_command(done: Path, tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    shutil.copytree(done / "tables", tables)
    (tables / "stats_notes.json").unlink()
    with pytest.raises(MissingReportInputs, match="analyze stats"):
        build_report(tables, tmp_path / "r.html", figures_dir=done / "figures")
    with pytest.raises(MissingReportInputs, match="figures.json"):
        build_report(done / "tables", tmp_path / "r.html", figures_dir=tmp_path / "nofigs")


def test_cli_missing_inputs_exit_2_on_stderr_and_compute_missing_says_so(
    done: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tables = tmp_path / "tables"
    tables.mkdir()
    for name in ("metrics.parquet", "checkpoints.parquet", "provenance.json"):
        shutil.copy(done / "tables" / name, tables / name)  # the metric tables, no statistics
    out_html = tmp_path / "out" / "report.html"
    assert main(["analyze", "report", str(tables), "--out", str(out_html)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "analyze stats" in err and not out_html.exists()
    args = ["analyze", "report", str(tables), "--out", str(out_html), "--compute-missing"]
    assert main(args) == 0
    page = out_html.read_text()
    assert "Statistics computed for this report" in page and "Figures drawn" in page
    assert (tmp_path / "out" / "figures" / "figures.json").exists()


def test_report_flags_come_from_the_config_dataclasses(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["analyze", "report", "--help"])
    text = capsys.readouterr().out
    for flag in ("--compute-missing", "--layer", "--include-embeddings", "--alpha", "--figures"):
        assert flag in text, flag
    assert main(["analyze", "stats", "x", "--layer", "top"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "LayerConvention.layer" in err and "'top'" in err
