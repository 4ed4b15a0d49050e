"""`repcollapse study publish`: a finished study packaged for git (tables, figures, report,
ENVIRONMENT.md, README.md with the stage table and the verdicts); an unfinished one refused.

The study output here is assembled from synthetic claim tables (every paper claim with a known
effect) plus a marker for every planned cell, so the packaging is tested in seconds; the real
tiny study is published in tests/test_study.py (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from repcollapse.analyze.stats.regression import run_stats
from repcollapse.analyze.tables.synthetic_claims import ClaimTablesSpec, make_claim_tables
from repcollapse.study import StudyError, load_study, plan_cells
from repcollapse.study.plan import Cell
from repcollapse.study.publish import PAPER_TABLE4, publish
from repcollapse.study.runner import Layout


def _study_out(tmp: Path, complete: bool = True) -> tuple[Path, Path]:
    fams = []
    for name in ("fam_a", "fam_b"):  # HF-directory families: the labels are the folder names
        (tmp / name).mkdir()
        (tmp / name / "config.json").write_text("{}")
        fams.append(str(tmp / name))
    toml = tmp / "STUDY.toml"
    toml.write_text(
        'name = "syn"\nbudget = "demo"\nseeds = [0, 1, 2]\n'
        f'families = {json.dumps(fams)}\nsequences = ["A", "control", "D"]\n'
    )
    out = tmp / "out"
    lay = Layout(out)
    make_claim_tables(lay.merged, ClaimTablesSpec())
    run_stats(lay.merged)
    study = load_study(toml)
    lay.cells.mkdir(parents=True)
    cells = plan_cells(study)
    for i, c in enumerate(cells if complete else cells[:-3]):
        (lay.marker(c)).write_text(json.dumps({"cell": c.id, "elapsed_s": 10.0 + i}))
    (out / "figures").mkdir()
    (out / "figures" / "stage_trajectories.png").write_bytes(b"\x89PNG fake")
    (out / "report.html").write_text("<html>report</html>")
    (out / "STUDY.toml").write_text(toml.read_text())
    (out / "loadavg.log").write_text("2026-12-06T05:31:56Z 1.50 1.0 1.0 1/90 1\n" * 3)
    return toml, out


def test_publish_writes_tables_figures_environment_and_readme(tmp_path: Path) -> None:
    toml, out = _study_out(tmp_path)
    study = load_study(toml)
    dest = publish(study, out, tmp_path / "pub")
    for name in ("checkpoints", "metrics", "stage_table", "claims"):
        a = pd.read_parquet(out / "merged" / f"{name}.parquet")
        pd.testing.assert_frame_equal(a, pd.read_parquet(dest / "tables" / f"{name}.parquet"))
    assert (dest / "figures" / "stage_trajectories.png").is_file()
    assert (dest / "report.html").read_text() == "<html>report</html>"
    assert (dest / "STUDY.toml").read_text() == toml.read_text()

    env = (dest / "ENVIRONMENT.md").read_text()
    n = len(plan_cells(study))
    total = sum(10.0 + i for i in range(n))
    assert f"({total:.0f} s)" in env  # the sum of the markers' elapsed times
    assert all(f"| {c.id} |" in env for c in plan_cells(study))  # one row per cell
    assert "median 1.50" in env and "| torch |" in env
    # the statistics' own code version, recorded by analyze stats in stats_inputs.json
    from repcollapse.version import code_version

    assert f"Statistics (claims, stage table, regression) computed by: {code_version()}" in env

    readme = (dest / "README.md").read_text()
    st = pd.read_parquet(dest / "tables" / "stage_table.parquet")
    for fam in st["model_family"].unique():
        assert f"### {fam}" in readme
    # every plain chain's stages appear as rows, with the interval of the stage table
    row = st[(st.sequence == "A") & (st.stage_index == 4) & (st.model_family == "fam_a")].iloc[0]
    cell = f"{row.erank_norm:.3f} [{row.erank_norm_ci_low:.3f}, {row.erank_norm_ci_high:.3f}]"
    assert "| A/04-safety | 3 |" in readme and cell in readme
    assert "| control/04-general | 3 |" in readme and "| D/03-math | 3 |" in readme
    # every claim with its verdict; the paper's rows beside ours
    claims = pd.read_parquet(dest / "tables" / "claims.parquet")
    for c in claims.itertuples():
        assert f"| `{c.claim}` |" in readme and f"**{c.verdict}**" in readme
    assert f"{PAPER_TABLE4['safety']['future'] / 100:.3f}" in readme


def test_republish_keeps_the_authors_notes(tmp_path: Path) -> None:
    toml, out = _study_out(tmp_path)
    study = load_study(toml)
    dest = publish(study, out, tmp_path / "pub")
    text = (dest / "README.md").read_text()
    mine = "<!-- notes -->\nWhat a 135M model can show.\n<!-- /notes -->"
    (dest / "README.md").write_text(text.replace("<!-- notes -->\n<!-- /notes -->", mine))
    publish(study, out, dest)
    assert mine in (dest / "README.md").read_text()


def test_unfinished_study_is_refused_naming_the_missing_cells(tmp_path: Path) -> None:
    toml, out = _study_out(tmp_path, complete=False)
    with pytest.raises(
        StudyError,
        match=r"expected every cell of syn complete .* found 2 missing \(extract/fam_b, metrics/fam_b\)",
    ):
        publish(load_study(toml), out, tmp_path / "pub")
    assert not (tmp_path / "pub").exists()  # nothing half-written


def test_cli_publish_one_line_error_on_stderr(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "repcollapse.cli.main", "study", "publish", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert "expected" in r.stderr and "STUDY.toml" in r.stderr and "Traceback" not in r.stderr


def test_shards_are_merged_reported_and_published_together(tmp_path: Path) -> None:
    """Two output directories, one family each (as two machines' shards): publish merges their
    tables, runs stats, figures and report over the merge, and accounts for both runs' cells;
    a shard missing its extraction is refused, naming it."""
    (tmp_path / "one").mkdir()
    toml, _ = _study_out(tmp_path / "one")
    study = load_study(toml)
    outs = []
    for fam in ("fam_a", "fam_b"):
        out = tmp_path / f"shard_{fam}"
        make_claim_tables(out / "tables" / fam, ClaimTablesSpec(families=(fam,)))
        Layout(out).cells.mkdir(parents=True)
        for c in plan_cells(study):
            if c.family == fam or c.kind == "data":
                Layout(out).marker(c).write_text(json.dumps({"cell": c.id, "elapsed_s": 2.0}))
        (out / "cells" / "study.json").write_text(json.dumps({"name": "syn"}))
        outs.append(out)
    dest = publish(study, outs, tmp_path / "pub")
    ck = pd.read_parquet(dest / "tables" / "checkpoints.parquet")
    assert set(ck["model_family"]) == {"fam_a", "fam_b"}
    assert set(ck["store_id"]) == {"syn/fam_a", "syn/fam_b"}
    assert (dest / "tables" / "claims.parquet").is_file() and (dest / "report.html").is_file()
    assert list((dest / "figures").glob("*.png"))
    env = (dest / "ENVIRONMENT.md").read_text()
    assert "| shard_fam_a | data |" in env and "| shard_fam_b | metrics/fam_b |" in env
    assert not (tmp_path / ".pub.build").exists()  # the merge's working directory is removed
    # a shard without its own extraction, though another shard has one of that family
    Layout(outs[0]).marker(Cell("extract", "fam_b")).write_text(
        json.dumps({"cell": "extract/fam_b"})
    )
    Layout(outs[1]).marker(Cell("extract", "fam_b")).unlink()
    with pytest.raises(StudyError, match=r"1 missing \(extract/fam_b in .*shard_fam_b\)"):
        publish(study, outs, tmp_path / "pub2")


def test_claim_rows_say_how_many_families_and_why_one_is_left_out() -> None:
    from repcollapse.study.publish import claim_rows

    nan = float("nan")
    claims = pd.DataFrame(
        [
            dict(
                claim="aniso_rises",
                effect=0.01,
                ci_low=0.0,
                ci_high=0.02,
                mde=0.01,
                delta=0.055,
                n_seeds=3,
                n_families=2,
                verdict="not reproduced",
                detail="",
            ),
            dict(
                claim="future_falls",
                effect=nan,
                ci_low=nan,
                ci_high=nan,
                mde=nan,
                delta=0.05,
                n_seeds=3,
                n_families=1,
                verdict="inconclusive (underpowered)",
                detail="left out at its floor or ceiling: gemma3 (future_score 0 at every "
                "checkpoint)",
            ),
        ]
    )
    text = "\n".join(claim_rows(claims))
    assert "| Families |" in text
    assert "| `aniso_rises` | 0.0100 [0.0000, 0.0200] | 0.0100 | 0.055 | 3 | 2 |" in text
    assert "| `future_falls` | – (no interval) | – | 0.05 | 3 | 1 |" in text
    assert "- `future_falls`: left out at its floor or ceiling: gemma3" in text
    assert "- `aniso_rises`" not in text
