"""Training loss curves: train_log.json's losses travel checkpoint directory -> store
(behavior_json, by extract) -> checkpoints.parquet (train_losses, by analyze metrics) -> the
report's loss_curves figure, one panel per chain with its stages concatenated along x."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from repcollapse.analyze.report.fig_loss import loss_history
from repcollapse.analyze.report.figures import make_figures
from repcollapse.analyze.report.html import ReportConfig, build_report
from repcollapse.analyze.tables.read import read_tables
from repcollapse.analyze.tables.synthetic import SyntheticTablesSpec, make_synthetic_tables
from repcollapse.analyze.tables.write import train_losses as losses_column
from repcollapse.extract.checkpoints import checkpoint_coords, read_checkpoint, train_losses
from repcollapse.store_schema.manifest import CheckpointManifest
from repcollapse.store_schema.schema import TRAIN_LOSSES


def _checkpoint(path: Path, name: str, log: object | None) -> Path:
    path.mkdir(parents=True)
    m = CheckpointManifest(
        name=name,
        sequence="A" if name != "base" else "",
        stage_index=0 if name == "base" else 1,
        stage_kind="base" if name == "base" else "sft",
        stage_domain="" if name == "base" else "math",
        parent="" if name == "base" else "base",
        seed=0,
        tokens_seen=0,
    )
    (path / "manifest.json").write_text(json.dumps(m.to_dict()))
    (path / "behavior.json").write_text(json.dumps({"target_score": 0.5}))
    if log is not None:
        (path / "train_log.json").write_text(json.dumps(log))
    return path


def test_losses_go_from_train_log_through_the_store_record_into_the_table(tmp_path: Path) -> None:
    log = {"losses": [2.5, 2.25, 2.0], "log_history": [{"step": 1, "loss": 2.5}], "example_ids": []}
    stage = read_checkpoint(_checkpoint(tmp_path / "s1", "A/01-math", log))
    base = read_checkpoint(_checkpoint(tmp_path / "b", "base", None))
    assert stage.behavior[TRAIN_LOSSES] == [2.5, 2.25, 2.0]
    assert stage.behavior["target_score"] == 0.5  # behavior.json itself is kept whole
    assert TRAIN_LOSSES not in base.behavior
    # what extract writes as the checkpoint's behavior_json coordinate, then analyze's column
    stored = [checkpoint_coords(s, None, 0)["behavior_json"] for s in (base, stage)]
    ds = xr.Dataset(coords={"behavior_json": ("checkpoint", [*stored, "not json"])})
    col = losses_column(ds)[TRAIN_LOSSES]
    assert list(col) == ["", "[2.5, 2.25, 2.0]", ""]


def test_a_malformed_train_log_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path / "s1", "A/01-math", {"losses": ["nan?", 1.0]})
    with pytest.raises(ValueError, match=r"train_log\.json: expected 'losses' to be a list"):
        train_losses(path)


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic tables (one family, two seeds) whose stage checkpoints carry known losses:
    stage k of seed s has 3 + k steps, loss 10 * k + s + step / 100."""
    root = tmp_path_factory.mktemp("tables")
    spec = SyntheticTablesSpec(families=("smollm2",), seeds=(0, 1), mitigations=(), noop=False)
    make_synthetic_tables(root, spec)
    ck = pd.read_parquet(root / "checkpoints.parquet")
    ck[TRAIN_LOSSES] = [
        json.dumps([10 * k + s + i / 100 for i in range(1, 4 + k)]) if k > 0 else ""
        for k, s in zip(ck["stage_index"], ck["seed"], strict=True)
    ]
    ck.to_parquet(root / "checkpoints.parquet", index=False)
    return root


def test_loss_history_concatenates_each_chains_stages(tables: Path) -> None:
    ck = read_tables(tables).checkpoints
    h = loss_history(ck)
    a = h[(h["panel"] == "A") & (h["seed"] == 1)]
    # A has 4 stages of 4, 5, 6, 7 steps: 22 steps along the chain, stage by stage
    assert list(a["step"]) == list(range(1, 23))
    assert list(a.groupby("stage_key", sort=False).size()) == [4, 5, 6, 7]
    assert list(a["stage"].unique()) == ["general", "math", "code", "safety"]
    third = a[a["stage_key"] == "3 code"]
    assert list(third["step"]) == list(range(10, 16))  # after 4 + 5 steps of stages 1 and 2
    assert np.allclose(third["loss"], [31 + i / 100 for i in range(1, 7)])
    assert set(h["panel"]) == set(ck.loc[ck["stage_index"] > 0, "sequence"])
    assert len(h) == sum(3 + k for k in ck["stage_index"] if k > 0)


def test_loss_figure_is_drawn_from_the_tables_and_shown_in_the_report(
    tables: Path, tmp_path: Path
) -> None:
    make_figures(tables, tmp_path / "figures", html=False)
    listed = {f["name"]: f for f in json.loads((tmp_path / "figures" / "figures.json").read_text())}
    assert "skipped" not in listed["loss_curves"]
    drawn = pd.read_csv(tmp_path / "figures" / "loss_curves.data.csv")
    expect = loss_history(read_tables(tables).checkpoints)
    assert np.allclose(drawn["loss"], expect["loss"]) and list(drawn["step"]) == list(
        expect["step"]
    )
    page = build_report(
        tables,
        tmp_path / "report.html",
        figures_dir=tmp_path / "figures",
        report=ReportConfig(compute_missing=True),  # the statistics; the figures are read
    )
    text = page.read_text(encoding="utf-8")
    assert "Training loss per optimizer step" in text
    drawn_figures = [f for f in listed.values() if "skipped" not in f]
    assert text.count('src="data:image/png;base64,') == len(drawn_figures)


def test_tables_without_losses_skip_the_figure_saying_why(tmp_path: Path) -> None:
    spec = SyntheticTablesSpec(families=("smollm2",), seeds=(0,), mitigations=(), noop=False)
    make_synthetic_tables(tmp_path / "t", spec)
    ck = pd.read_parquet(tmp_path / "t" / "checkpoints.parquet")
    ck.drop(columns=TRAIN_LOSSES).to_parquet(tmp_path / "t" / "checkpoints.parquet")  # older tables
    make_figures(tmp_path / "t", tmp_path / "f", html=False)
    listed = {f["name"]: f for f in json.loads((tmp_path / "f" / "figures.json").read_text())}
    assert "no training losses in checkpoints.parquet" in listed["loss_curves"]["skipped"]
