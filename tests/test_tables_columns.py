"""Reading the metric tables is honest: a missing column is an error naming the file and the
column (no silent defaults), and the checkpoint columns are the store contract's one list."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from repcollapse.analyze.tables.read import TablesError, read_tables
from repcollapse.analyze.tables.synthetic import SyntheticTablesSpec, make_synthetic_tables
from repcollapse.analyze.tables.write import CHECKPOINT_COLUMNS
from repcollapse.cli.main import main
from repcollapse.store_schema.schema import BEHAVIOR_KEYS, CHECKPOINT_TABLE

SPEC = SyntheticTablesSpec(families=("smollm2",), seeds=(0,), mitigations=(), noop=False)


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(make_synthetic_tables(tmp_path_factory.mktemp("cols"), SPEC).tables_dir)


def _without(src: Path, dst: Path, table: str, column: str) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    df = pd.read_parquet(dst / table)
    df.drop(columns=[column]).to_parquet(dst / table, index=False)
    return dst


@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("checkpoints.parquet", "seed"),
        ("checkpoints.parquet", "mitigation"),
        ("checkpoints.parquet", "store_id"),
        ("checkpoints.parquet", "future_score"),
        ("metrics.parquet", "span"),
        ("lora_overlap.parquet", "overlap"),
    ],
)
def test_a_missing_column_names_file_and_column(
    tables: Path, tmp_path: Path, table: str, column: str
) -> None:
    broken = _without(tables, tmp_path / "t", table, column)
    with pytest.raises(TablesError) as err:
        read_tables(broken)
    assert table in str(err.value) and repr(column) in str(err.value)


def test_cli_reports_the_missing_column_on_stderr_exit_2(
    tables: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = _without(tables, tmp_path / "t", "checkpoints.parquet", "seed")
    assert main(["analyze", "stats", str(broken)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "checkpoints.parquet" in err and "'seed'" in err


def test_complete_tables_read(tables: Path) -> None:
    t = read_tables(tables)
    assert t.missing() == []
    assert set(CHECKPOINT_COLUMNS) <= set(t.checkpoints.columns)


def test_checkpoint_columns_are_the_store_contracts() -> None:
    assert tuple(CHECKPOINT_TABLE) == CHECKPOINT_COLUMNS
    assert tuple(CHECKPOINT_TABLE)[-len(BEHAVIOR_KEYS) :] == BEHAVIOR_KEYS


def test_metric_core_columns_are_written() -> None:
    from repcollapse.analyze.tables.read import METRIC_CORE
    from repcollapse.analyze.tables.write import METRIC_COLUMNS

    assert set(METRIC_CORE) <= set(METRIC_COLUMNS)
