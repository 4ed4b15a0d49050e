"""The HTML report: self-contained, carries the stage table, statistics and provenance."""

from __future__ import annotations

import argparse
import html
import importlib
import inspect
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repcollapse.analyze.report.html import (
    TABLE4,
    ReportConfig,
    build_report,
    stage_table,
)
from repcollapse.analyze.report.numbers import sig
from repcollapse.analyze.report.stage_view import labels as stage_labels
from repcollapse.analyze.tables.synthetic import (
    SyntheticTablesSpec,
    SyntheticTruth,
    make_synthetic_tables,
)
from repcollapse.cli.analyze_tables_cmd import main_report


@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTruth:
    spec = SyntheticTablesSpec(families=("smollm2", "gemma3", "qwen25"), seeds=(0, 1))
    return make_synthetic_tables(tmp_path_factory.mktemp("tables"), spec)


@pytest.fixture(scope="module")
def page(syn: SyntheticTruth, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = build_report(
        syn.tables_dir,
        tmp_path_factory.mktemp("rep") / "report.html",
        report=ReportConfig(compute_missing=True),
    )
    return out.read_text(encoding="utf-8")


def test_report_is_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<link" not in page and "<script" not in page
    assert page.count('src="data:image/png;base64,') == 7  # the loss curves are the 7th


def test_report_contains_the_stage_table_values(page: str, syn: SyntheticTruth) -> None:
    """The page shows the stats' stage table (mean, its CI beneath), mitigated chains included."""
    st = pd.read_parquet(Path(syn.tables_dir) / "stage_table.parquet")
    assert "mean over layers 1..L" in page  # the layer convention is stated
    flat = page.replace("\n", "")
    labels = stage_labels(st, seeds=False)
    mitigated = st[labels.str.contains("[replay:general:0.10]", regex=False)]
    assert len(mitigated) > 0
    for i, r in pd.concat([st.sample(8, random_state=1), mitigated.head(2)]).iterrows():
        row = f'<td class="label">{r["model_family"]}</td><td class="label">'
        row += f'{html.escape(labels[i])}</td><td class="label">{r["n_seeds"]}</td>'
        for q in TABLE4:
            lo, hi = r[f"{q}_ci_low"], r[f"{q}_ci_high"]
            ci = f'<span class="ci">[{sig(lo)}, {sig(hi)}]</span>' if np.isfinite(lo) else ""
            row += f"<td>{sig(r[q])}{ci}</td>"
        assert row in flat, row
    # Two seeds: every stage cell of a measured quantity carries an interval over seeds.
    assert flat.count('<span class="ci">') >= (st["stage_index"] > 0).sum() * 5


def test_api_stage_table_is_the_stats_stage_table(syn: SyntheticTruth) -> None:
    """One computation: the notebook/demo Table 4 holds the stats table's means."""
    st = stage_table(syn.tables_dir)
    assert list(st.columns) == ["Model family", "Checkpoint", *TABLE4.values()]
    stats = pd.read_parquet(Path(syn.tables_dir) / "stage_table.parquet")
    assert len(st) == len(stats)
    for q, head in TABLE4.items():
        assert np.allclose(st[head], stats[q], equal_nan=True), q
    assert st["Checkpoint"].str.contains("[diversity:0.1]", regex=False).any()


def test_report_contains_provenance_and_sections(page: str) -> None:
    for s in (
        "sha256:synthetic-probe",
        "synthetic/gemma3",
        "synthetic-0",
        "synthetic-qwen25",
        "schema_version",
        "Attention-sink tokens were excluded",
    ):
        assert s in page, s
    for s in (
        "Table 4",
        "regression",
        "Stage effects",
        "Order dependence",
        "Pareto",
        "Falsification",
        'class="pass"',
        "mixedlm",
    ):
        assert s in page, s


def test_stage_table_matches_the_tables_for_one_seed(tmp_path: Path) -> None:
    spec = SyntheticTablesSpec(families=("smollm2",), seeds=(0,), mitigations=(), noop=False)
    truth = make_synthetic_tables(tmp_path, spec)
    st = stage_table(truth.tables_dir, sequence="A").set_index("Checkpoint")
    names = ["base", "A/s0/01-general", "A/s0/02-math", "A/s0/03-code", "A/s0/04-safety"]
    assert list(st.index) == ["base", "A/01-general", "A/02-math", "A/03-code", "A/04-safety"]
    st.index = names  # one seed: each row is one checkpoint
    ck = pd.read_parquet(tmp_path / "checkpoints.parquet").set_index("checkpoint")
    m = pd.read_parquet(tmp_path / "metrics.parquet")
    er = (
        m[
            (m["metric"] == "erank_norm")
            & (m["domain"] == "all")
            & (m["span"] == "all")
            & (m["layer"] >= 1)
        ]
        .groupby("checkpoint")["value"]
        .mean()
    )
    drift = (
        m[
            (m["metric"] == "drift_base")
            & (m["domain"] == "all")
            & (m["span"] == "all")
            & (m["layer"] >= 1)
        ]
        .groupby("checkpoint")["value"]
        .mean()
    )
    assert np.allclose(st["Eff. rank"], er.loc[st.index])
    assert np.allclose(st["CKA to base"], 1 - drift.loc[st.index])
    assert np.allclose(st["Future score"], ck.loc[st.index, "future_score"])
    assert np.isnan(st.loc["A/s0/01-general", "LoRA overlap"])


def test_report_on_thin_data_says_so(tmp_path: Path) -> None:
    spec = SyntheticTablesSpec(families=("smollm2",), seeds=(0,), mitigations=(), noop=False)
    truth = make_synthetic_tables(tmp_path / "t", spec)
    (tmp_path / "t" / "lora_overlap.parquet").unlink()
    rc = main_report(
        argparse.Namespace(
            tables_dir=str(tmp_path / "t"),
            out=str(tmp_path / "r"),
            figures=None,
            compute_missing=True,
        )
    )
    assert rc == 0
    page = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    for s in ("One seed", "no random effect", "lora_overlap: skipped", "not run"):
        assert s in page, s
    assert truth.n_checkpoints > 0


def test_main_report_missing_tables_is_a_plain_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rc = main_report(
        argparse.Namespace(tables_dir=str(tmp_path), out=str(tmp_path / "x.html"), figures=None)
    )
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and "checkpoints.parquet is missing" in err


def _run_metrics() -> object:
    """``repcollapse.analyze.engine.runner.run_metrics(store, out_dir)``, skipping until it has landed."""
    try:
        runner = importlib.import_module("repcollapse.analyze.engine.runner")
    except ImportError as exc:
        pytest.skip(f"repcollapse.analyze.engine.runner has not landed yet ({exc})")
    fn = getattr(runner, "run_metrics", None)
    if not callable(fn) or list(inspect.signature(fn).parameters)[:2] != ["store", "out_dir"]:
        pytest.skip("repcollapse.analyze.engine.runner has no run_metrics(store, out_dir) yet")
    return fn


def test_runner_tables_from_a_synthetic_store_make_a_report(tmp_path: Path) -> None:
    run_metrics = _run_metrics()
    from repcollapse.store_schema.testing import SyntheticSpec, make_synthetic_store

    store = tmp_path / "store.zarr"
    make_synthetic_store(store, SyntheticSpec(n_checkpoints=4))
    run_metrics(str(store), tmp_path / "tables", log=lambda _msg: None)
    out = build_report(
        tmp_path / "tables", tmp_path / "report.html", report=ReportConfig(compute_missing=True)
    )
    page = out.read_text(encoding="utf-8")
    st = stage_table(tmp_path / "tables")
    # Rows are labelled sequence/stage index-stage name (the checkpoint is named A/03-stage).
    assert set(st["Checkpoint"]) == {"base", "A/01-math", "A/02-code", "A/03-safety"}
    assert "Provenance" in page and "<table" in page
