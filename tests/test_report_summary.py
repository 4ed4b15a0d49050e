"""The report's written summary, claims sections, significant digits, regression warnings,
escaping, and folders written before claims.parquet / stage_table.parquet existed."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repcollapse.analyze.report.html import ReportConfig, build_report
from repcollapse.analyze.report.numbers import format_value, sig, with_ci
from repcollapse.analyze.report.summary import regression_warnings, stage_sentences
from repcollapse.analyze.stats.regression import run_stats
from repcollapse.analyze.tables.synthetic_claims import ClaimTablesSpec, make_claim_tables
from repcollapse.cli.analyze_tables_cmd import main_stats


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Claim tables with stats written and a report built."""
    root = tmp_path_factory.mktemp("claims")
    make_claim_tables(root / "tables", ClaimTablesSpec(families=("fam_a", "fam_b"), seeds=(0, 1)))
    run_stats(root / "tables")
    build_report(root / "tables", root / "report.html", report=ReportConfig(compute_missing=True))
    return root


def _summary(page: str) -> str:
    return page[page.index('<div class="summary">') : page.index("</div>")]


def test_significant_digits_keep_small_values_apart() -> None:
    # Fixed 3 decimals printed both of these as 0.006 / 0.007 (the story hidden).
    assert sig(0.0061234) == "0.006123" and sig(0.0067891) == "0.006789"
    assert sig(0.75) == "0.75" and sig(12.3456) == "12.35" and sig(0.0) == "0"
    assert sig(123456.0) == "1.235e+05" and sig(float("nan")) == "–"
    assert format_value(np.float64(0.00012346)) == "0.0001235"
    assert format_value(True) == "yes" and format_value(np.int64(3)) == "3"
    assert with_ci(0.5, 0.41234, 0.6) == "0.5 [0.4123, 0.6]" and with_ci(0.5, np.nan, 1) == "0.5"


def test_summary_names_the_stage_that_moved_each_metric_most(done: Path) -> None:
    page = (done / "report.html").read_text(encoding="utf-8")
    fx = pd.read_parquet(done / "tables" / "stage_effects.parquet")
    pooled = fx[fx["model_family"] == "all"].dropna(subset=["effect"])
    r = pooled[pooled["metric"] == "erank_norm"]
    r = r.loc[r["effect"].abs().idxmax()]
    text = _summary(page)
    assert f"moved most by the {r['stage']} stage, {sig(r['effect'])}" in text
    assert f"95% CI [{sig(r['ci_low'])}, {sig(r['ci_high'])}]" in text
    # The summary comes before every section.
    assert page.index('id="summary"') < page.index('id="s1"')


def test_summary_and_sections_show_the_claims_verdicts(done: Path) -> None:
    page = (done / "report.html").read_text(encoding="utf-8")
    claims = pd.read_parquet(done / "tables" / "claims.parquet")
    text = _summary(page)
    for c, v in zip(claims["claim"], claims["verdict"], strict=True):
        assert f"{c}: {v}" in text
    assert "Claims of the paper: verdicts" in page
    # The claims come right after the stage table, and the stage table appears once.
    h2 = re.findall(r'<h2 id="s\d+">([^<]*)</h2>', page)
    assert h2[0].startswith("Stage table") and h2[1] == "Claims of the paper: verdicts"
    assert sum(t.lower().startswith("stage table") for t in h2) == 1


def test_folder_without_claims_or_stage_table_still_renders(done: Path, tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    shutil.copytree(done / "tables", tables)
    (tables / "claims.parquet").unlink()
    (tables / "stage_table.parquet").unlink()
    out = build_report(tables, tmp_path / "r.html", figures_dir=done / "figures")
    page = out.read_text(encoding="utf-8")
    assert "Claims of the paper" not in page
    assert "Stage table computed for this report" in page
    assert '<td class="label">A/02-math</td><td class="label">2</td>' in page


def test_regression_warning_from_the_refusal_notes() -> None:
    notes = pd.DataFrame(
        [
            ("regression", "12 rows for 9 coefficients: the full model is refused."),
            ("regression", "2 model families: fixed-effects OLS instead."),
            ("inputs", "One seed."),
        ],
        columns=["section", "note"],
    )
    assert regression_warnings(notes) == [notes["note"][0]]


def test_refused_regression_is_warned_in_its_section(done: Path, tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    shutil.copytree(done / "tables", tables)
    notes = json.loads((tables / "stats_notes.json").read_text())
    notes.setdefault("regression", []).append(
        "8 checkpoint(s) for 9 predictors: the model is not identifiable and is refused."
    )
    (tables / "stats_notes.json").write_text(json.dumps(notes))
    reg = pd.read_parquet(tables / "regression.parquet")
    reg.iloc[0:0].to_parquet(tables / "regression.parquet", index=False)
    page = build_report(tables, tmp_path / "r.html", figures_dir=done / "figures")
    text = page.read_text(encoding="utf-8")
    sec = text[text.index("(regression)</h2>") :]
    sec = sec[: sec.index("<h2")]
    assert 'class="warn"' in sec and "not identifiable and is refused" in sec
    assert "none fitted" in sec
    assert "reduced or not fitted" in _summary(text)


def test_strings_from_the_tables_are_escaped(done: Path, tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    shutil.copytree(done / "tables", tables)
    prov = json.loads((tables / "provenance.json").read_text())
    prov = prov if isinstance(prov, list) else [prov]
    prov[0]["model_id"] = "<script>alert(1)</script>"
    prov[0]["probe_sources"] = [{"domain": "math", "source": "a<b", "license": "x&y"}]
    (tables / "provenance.json").write_text(json.dumps(prov))
    page = build_report(tables, tmp_path / "r.html", figures_dir=done / "figures")
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<td>a&lt;b</td><td>x&amp;y</td>" in text


def test_main_stats_prints_the_claims(done: Path, capsys: pytest.CaptureFixture) -> None:
    assert main_stats(argparse.Namespace(tables_dir=str(done / "tables"))) == 0
    out = capsys.readouterr().out
    claims = pd.read_parquet(done / "tables" / "claims.parquet")
    assert "claims:" in out
    for c, v in zip(claims["claim"], claims["verdict"], strict=True):
        assert f"  {c}: {v} (effect" in out


def test_stage_sentences_without_intervals() -> None:
    fx = pd.DataFrame(
        dict(
            model_family=["f", "f"],
            sequence=["A", "A"],
            stage=["math", "code"],
            metric=["erank_norm", "erank_norm"],
            n_seeds=[1, 1],
            effect=[-0.01, -0.03],
            ci_low=[np.nan, np.nan],
            ci_high=[np.nan, np.nan],
            basis=["vs control", "vs control"],
        )
    )
    (s,) = stage_sentences(fx)
    assert "code stage (sequence A, f), -0.03" in s and "no interval, n = 1" in s
