"""The demo chain end to end on a tiny random model at a tiny budget (the real-model demo is the
README's first command; this proves every step connects: data -> base -> three sequences ->
extract -> validate -> metrics -> stats -> figures -> report)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from tiny_model import make_tiny_model

from repcollapse.cli.demo import DemoSettings, run_demo
from repcollapse.store_schema import open_store, validate_store

TINY_BUDGET = (
    "budget.demo.tokens_per_stage=800",
    "budget.demo.max_length=192",
    "budget.demo.batch_size=4",
    "budget.demo.eval.n_generate=2",
    "budget.demo.eval.max_new_tokens=12",
    "budget.demo.eval.n_teacher_forced=4",
    "budget.demo.eval.future_steps=2",
    "budget.demo.eval.future_eval_at=[0, 2]",
    "budget.demo.eval.future_n_train=8",
    "budget.demo.eval.future_n_eval=2",
)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    model = make_tiny_model(root / "tiny", n_layers=2, hidden=32)
    settings = DemoSettings(
        out=root / "out",
        model=str(model),
        probe_per_domain=4,
        token_cap_per_span=40,
        train_overrides=TINY_BUDGET,
    )
    run_demo(settings)
    return settings.out


def test_demo_writes_every_artifact(demo_out: Path) -> None:
    report = demo_out / "report.html"
    assert report.stat().st_size > 10_000
    html = report.read_text()
    assert "<img" in html and "data:image/png;base64," in html
    pngs = sorted((demo_out / "figures").glob("*.png"))
    assert len(pngs) >= 4 and all(p.stat().st_size > 1000 for p in pngs)
    assert validate_store(demo_out / "store.zarr")[0] == []


def test_demo_store_and_tables_agree(demo_out: Path) -> None:
    ds = open_store(demo_out / "store.zarr")
    ckpts = set(ds.checkpoint.values)
    assert len(ckpts) == 13  # base + 3 sequences x 4 stages
    metrics = pd.read_parquet(demo_out / "tables" / "metrics.parquet")
    assert set(metrics.checkpoint) == ckpts
    assert {"erank_norm", "aniso_centered", "drift_base", "entropy", "collapse_index"} <= set(
        metrics.metric
    )
    assert metrics["sinks_excluded"].all()
    checkpoints = pd.read_parquet(demo_out / "tables" / "checkpoints.parquet")
    assert checkpoints["future_score"].notna().all()


def test_demo_rerun_skips_completed_steps(
    demo_out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hidden = demo_out / "store.zarr" / "hidden"
    before = {p: p.stat().st_mtime_ns for p in hidden.rglob("*") if p.is_file()}
    run_demo(
        DemoSettings(
            out=demo_out,
            model=None,
            probe_per_domain=4,
            token_cap_per_span=40,
            train_overrides=TINY_BUDGET,
        )
    )
    out = capsys.readouterr().out
    assert "[demo] data:" not in out and "[demo] base:" not in out
    assert {p: p.stat().st_mtime_ns for p in hidden.rglob("*") if p.is_file()} == before


def test_demo_carries_losses_and_standard_errors_to_report_and_console(
    demo_out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each stage's train_log.json losses reach checkpoints.parquet (through the store) and the
    loss_curves figure; the report and the closing summary print behaviour as value ± SE."""
    import json

    from repcollapse.cli.demo import checkpoint_dirs, print_summary

    ck = pd.read_parquet(demo_out / "tables" / "checkpoints.parquet").set_index("checkpoint")
    dirs = checkpoint_dirs(demo_out / "runs")
    assert len(dirs) == 12
    for d in dirs:
        name = json.loads((d / "manifest.json").read_text())["name"]
        logged = json.loads((d / "train_log.json").read_text())["losses"]
        assert len(logged) > 0 and json.loads(ck.loc[name, "train_losses"]) == logged, name
    assert (ck.loc[ck["stage_index"] == 0, "train_losses"] == "").all()
    figures = {
        f["name"]: f for f in json.loads((demo_out / "figures" / "figures.json").read_text())
    }
    assert "skipped" not in figures["loss_curves"]
    page = (demo_out / "report.html").read_text()
    assert "Behaviour per checkpoint" in page and " ± " in page
    print_summary(demo_out / "tables")
    out = capsys.readouterr().out
    assert "Target score" in out and " ± " in out and "(n=" in out
