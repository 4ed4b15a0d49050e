"""One definition of a no-op checkpoint, used by every table and figure.

The shipped no-op control (repcollapse/train/configs/A_noop.toml) is sequence 'A' with mitigation 'noop'.
Stage effects, order effects and the Pareto table are about real stages: adding such a chain to
the tables must leave them unchanged, and the falsification check must find it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from repcollapse.analyze.stats.pareto import pareto_table
from repcollapse.analyze.stats.regression import StatsConfig, checkpoint_frame, run_stats
from repcollapse.analyze.tables.read import read_tables
from repcollapse.analyze.tables.synthetic import SyntheticTablesSpec, make_synthetic_tables
from repcollapse.store_schema.lineage import is_noop, noop_mask
from repcollapse.train.config_load import load_config

REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_noop_config_is_a_noop() -> None:
    cfg = load_config(REPO / "repcollapse" / "train" / "configs" / "A_noop.toml")
    assert cfg.sequence == "A"
    assert is_noop(cfg.mitigation.name)
    both = replace(cfg.mitigation, replay_fraction=0.1, replay_source="general")
    assert is_noop(both.name), both.name  # 'replay:general:0.10+noop'


@pytest.mark.parametrize(
    ("label", "expected"),
    [("noop", True), ("replay:general:0.10+noop", True), ("none", False), ("noopish", False)],
)
def test_is_noop_reads_the_label_parts(label: str, expected: bool) -> None:
    assert is_noop(label) is expected
    assert noop_mask([label, "none"]).tolist() == [expected, False]


def _drop_noop(src: Path, dst: Path) -> None:
    dst.mkdir()
    ck = pd.read_parquet(src / "checkpoints.parquet")
    gone = set(ck.loc[noop_mask(ck["mitigation"]), "checkpoint"])
    assert gone, "the fixture must hold a no-op chain"
    for f in src.iterdir():
        if f.suffix == ".parquet":
            df = pd.read_parquet(f)
            for col in ("checkpoint", "checkpoint_a", "checkpoint_b"):
                if col in df:
                    df = df[~df[col].isin(gone)]
            df.to_parquet(dst / f.name, index=False)
        else:
            (dst / f.name).write_bytes(f.read_bytes())


def test_a_noop_chain_of_sequence_a_changes_no_stage_table(tmp_path: Path) -> None:
    spec = SyntheticTablesSpec(families=("smollm2",), seeds=(0, 1), seed=5)
    with_noop = make_synthetic_tables(tmp_path / "with", spec).tables_dir
    ck = pd.read_parquet(with_noop / "checkpoints.parquet")
    noop = ck[noop_mask(ck["mitigation"])]
    assert set(noop["sequence"]) == {"A"}  # the shape training writes
    _drop_noop(with_noop, tmp_path / "without")
    a = run_stats(with_noop, write=False)
    b = run_stats(tmp_path / "without", write=False)
    for table in ("stage_effects", "order_effects", "pareto"):
        pd.testing.assert_frame_equal(
            a[table].reset_index(drop=True), b[table].reset_index(drop=True), obj=table
        )
    p = pareto_table(checkpoint_frame(read_tables(with_noop), StatsConfig()))
    assert not noop_mask(p["mitigation"]).any()
    fz = a["falsification"]
    ran = fz[fz["check"] == "no-op adapter leaves metrics unmoved"]
    assert not ran["result"].str.startswith("not run").any(), ran
