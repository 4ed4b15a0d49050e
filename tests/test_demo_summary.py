"""What the demo prints when it ends: behavioural numbers as 'value ± SE (n=N)' and the geometry
with its jackknife interval where metrics.parquet has one (``analyze metrics --uncertainty``,
``demo --uncertainty``). Checked on small synthetic tables, not a real demo run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repcollapse.analyze.report.console import console_summary
from repcollapse.analyze.report.numbers import sig
from repcollapse.analyze.tables.synthetic import SyntheticTablesSpec, make_synthetic_tables
from repcollapse.cli import demo
from repcollapse.cli.main import main as cli


@pytest.fixture
def tables(tmp_path: Path) -> Path:
    """One family, one seed; behaviour with known SEs and n; erank_norm at layer 4 (the middle
    of the analysed layers 1..6) with known intervals."""
    spec = SyntheticTablesSpec(families=("smollm2",), seeds=(0,), mitigations=(), noop=False)
    make_synthetic_tables(tmp_path, spec)
    ck = pd.read_parquet(tmp_path / "checkpoints.parquet")
    ck["target_score_se"], ck["target_score_n"] = 0.0311, 8.0
    ck["future_score_se"], ck["future_score_n"] = 0.0917, 24.0
    ck.to_parquet(tmp_path / "checkpoints.parquet", index=False)
    return tmp_path


def _with_intervals(root: Path) -> pd.DataFrame:
    m = pd.read_parquet(root / "metrics.parquet")
    sel = (m["metric"] == "erank_norm") & (m["layer"] == 4)
    sel &= (m["domain"] == "all") & (m["span"] == "all")
    m["ci_low"] = np.where(sel, m["value"] - 0.0123, np.nan)
    m["ci_high"] = np.where(sel, m["value"] + 0.0234, np.nan)
    m.to_parquet(root / "metrics.parquet", index=False)
    return m[sel].set_index("checkpoint")


def _line(lines: list[str], label: str, after: str) -> str:
    start = next(i for i, x in enumerate(lines) if x.startswith(after))
    return next(x for x in lines[start:] if x.strip().startswith(label + " "))


def test_summary_prints_behaviour_with_se_and_n(tables: Path) -> None:
    lines = console_summary(tables)
    ck = pd.read_parquet(tables / "checkpoints.parquet").set_index("checkpoint")
    assert lines[0].startswith("Behaviour per checkpoint (value ± standard error")
    for name, label in (("base", "base"), ("A/s0/02-math", "A/02-math")):
        line = _line(lines, label, "Behaviour")
        r = ck.loc[name]
        assert f"Target score {sig(r['target_score'])} ± 0.031 (n=8)" in line, line
        assert f"Future score {sig(r['future_score'])} ± 0.092 (n=24)" in line, line


def test_summary_prints_geometry_with_its_interval(tables: Path) -> None:
    rows = _with_intervals(tables)
    lines = console_summary(tables)
    head = next(x for x in lines if x.startswith("Geometry"))
    assert head.startswith("Geometry at layer 4 ") and "95% jackknife interval" in head
    for name, label in (("base", "base"), ("A/s0/03-code", "A/03-code")):
        v = rows.loc[name, "value"]
        line = _line(lines, label, "Geometry")
        assert f"eff. rank {sig(v)} [{sig(v - 0.0123)}, {sig(v + 0.0234)}]" in line, line
        assert "anisotropy " in line and "[" not in line.split("anisotropy ")[1]  # none computed


def test_summary_without_intervals_says_how_to_get_them(tables: Path) -> None:
    lines = console_summary(tables)
    head = next(x for x in lines if x.startswith("Geometry"))
    assert "no intervals: 'analyze metrics --uncertainty'" in head
    assert "[" not in _line(lines, "A/01-general", "Geometry")


def test_print_summary_ends_the_demo_with_the_stage_table_and_the_ses(
    tables: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo.print_summary(tables)
    out = capsys.readouterr().out
    assert "Stage table (paper Table 4 form" in out
    assert out.index("Stage table") < out.index("Behaviour per checkpoint") < out.index("Geometry")
    assert " ± 0.031 (n=8)" in out


def test_demo_uncertainty_flag_reaches_analyze_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`repcollapse demo --uncertainty` runs `analyze metrics --uncertainty` (every step here a
    trivial process that records its arguments)."""
    argv_log = tmp_path / "argv.txt"

    def command(args: list[str]) -> list[str]:
        code = f"import sys; open({str(argv_log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')"
        return [sys.executable, "-c", code, *args]

    monkeypatch.setattr(demo, "_command", command)
    monkeypatch.setattr(demo, "analysed_layers", lambda store, stride: [0, 3])
    monkeypatch.setattr(demo, "print_summary", lambda tables: None)
    for flags, wanted in (([], False), (["--uncertainty"], True)):
        argv_log.unlink(missing_ok=True)
        assert cli(["demo", "--out", str(tmp_path / "out"), *flags]) == 0
        metrics = [x for x in argv_log.read_text().splitlines() if x.startswith("analyze metrics")]
        assert len(metrics) == 1 and ("--uncertainty" in metrics[0].split()) == wanted
    capsys.readouterr()
