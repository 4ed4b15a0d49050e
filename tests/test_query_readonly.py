"""`repcollapse query` is read-only: SQL over the tables, no file access, no way to turn it on.

Each statement that once wrote, attached, listed or read files (or could re-enable that) is run
through the CLI against a real tables directory; it must exit non-zero with one message on
stderr, and the filesystem around it must be byte-for-byte unchanged. Normal queries over
every view, including the documented ones, still return what pandas reads from the files.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from repcollapse.analyze.tables.query import RefusedQuery, query, views
from repcollapse.analyze.tables.synthetic import SyntheticTablesSpec, make_synthetic_tables
from repcollapse.cli.main import main

SPEC = SyntheticTablesSpec(families=("smollm2",), seeds=(0,), n_layers=2)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    tables = tmp_path / "tables"
    make_synthetic_tables(tables, SPEC)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("token\nSECRET-7f3a\n")
    pd.DataFrame({"token": ["SECRET-7f3a"]}).to_parquet(outside / "secret.parquet")
    monkeypatch.chdir(tmp_path)  # DuckDB's default temp/extension paths are relative to here
    return {"root": tmp_path, "tables": tables, "outside": outside}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _run(sql: str, tables: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(["query", sql, "--tables", str(tables)])
    out, err = capsys.readouterr()
    return rc, out, err


REFUSED = {
    "copy_to_file": "COPY (SELECT * FROM metrics) TO '{root}/dump.csv'",
    "copy_over_table": "COPY (SELECT 1 AS x) TO '{tables}/metrics.parquet' (FORMAT parquet)",
    "copy_from_file": "CREATE TABLE s (token VARCHAR); COPY s FROM '{outside}/secret.csv'",
    "attach": "ATTACH '{root}/new.duckdb' AS other",
    "read_text": "SELECT * FROM read_text('{outside}/secret.csv')",
    "read_blob": "SELECT * FROM read_blob('{outside}/secret.csv')",
    "glob": "SELECT * FROM glob('{outside}/*')",
    "glob_home": "SELECT * FROM glob('/home/*')",
    "read_csv": "SELECT * FROM read_csv('{outside}/secret.csv')",
    "read_parquet": "SELECT * FROM read_parquet('{outside}/secret.parquet')",
    "replacement_scan": "SELECT * FROM '{outside}/secret.parquet'",
    "own_tables_by_path": "SELECT * FROM read_parquet('{tables}/metrics.parquet')",
    "sniff_csv": "SELECT * FROM sniff_csv('{outside}/secret.csv')",
    "export": "EXPORT DATABASE '{root}/exported'",
    "set_external": "SET enable_external_access = true",
    "reset_external": "RESET enable_external_access",
    "unlock": "SET lock_configuration = false",
    "pragma": "PRAGMA enable_profiling",
    "profile_to_file": "SET profiling_output = '{root}/profile.txt'",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "load_path": "LOAD '{outside}/evil.duckdb_extension'",
    "secret": "CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_statement_with_outside_effects_is_refused_and_changes_nothing(
    name: str, world: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    sql = REFUSED[name].format(**{k: str(v) for k, v in world.items()})
    before = _snapshot(world["root"])
    rc, out, err = _run(sql, world["tables"], capsys)
    assert rc == 2, (out, err)
    assert err.startswith("repcollapse query: refused: queries are read-only"), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "SECRET-7f3a" not in out + err
    assert _snapshot(world["root"]) == before


def test_the_api_refuses_too(world: dict[str, Path]) -> None:
    with pytest.raises(RefusedQuery, match="file system operations are disabled"):
        query(f"SELECT * FROM read_text('{world['outside']}/secret.csv')", world["tables"])


HARMLESS = [
    "CREATE TABLE t AS SELECT 1 AS x; INSERT INTO t VALUES (2); DROP TABLE t",
    "DROP VIEW metrics",
    "CREATE OR REPLACE VIEW metrics AS SELECT 1 AS x",
    "ATTACH ':memory:' AS scratch; CREATE TABLE scratch.t AS SELECT 1 AS x",
    "CHECKPOINT",
]


@pytest.mark.parametrize("sql", HARMLESS)
def test_in_memory_changes_touch_no_file_and_do_not_outlive_the_query(
    sql: str, world: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(world["root"])
    rc, out, err = _run(sql, world["tables"], capsys)
    assert rc == 0, err
    assert _snapshot(world["root"]) == before
    n = len(pd.read_parquet(world["tables"] / "metrics.parquet"))
    assert query("SELECT count(*) AS n FROM metrics", world["tables"])["n"].iloc[0] == n


def test_every_view_reads_its_file(world: dict[str, Path]) -> None:
    names = views(world["tables"])
    assert {"metrics", "checkpoints", "lora_overlap", "lora_spectrum"} <= set(names)
    for name in names:
        want = pd.read_parquet(world["tables"] / f"{name}.parquet")
        got = query(f'SELECT * FROM "{name}"', world["tables"])
        pd.testing.assert_frame_equal(
            got.reset_index(drop=True), want.reset_index(drop=True), check_dtype=False
        )


def test_documented_queries_still_work(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = pd.read_parquet(world["tables"] / "metrics.parquet")
    # README.md
    rc, out, err = _run(
        "select * from metrics where metric = 'erank_norm'", world["tables"], capsys
    )
    n = int((metrics.metric == "erank_norm").sum())
    assert rc == 0 and n > 0 and f"({n} rows)" in out, err
    # docs/guide.md
    sql = (
        "select checkpoint, layer, value from metrics where metric='erank_norm' and "
        "domain='all' and span='all' order by 1, 2"
    )
    got = query(sql, world["tables"])
    want = metrics.query("metric == 'erank_norm' and domain == 'all' and span == 'all'")
    assert len(got) == len(want) > 0
    # a join across two views
    joined = query(
        "select c.checkpoint, count(*) n from metrics m join checkpoints c using (checkpoint) "
        "group by 1",
        world["tables"],
    )
    assert int(joined["n"].sum()) == len(metrics)


def test_unreadable_tables_are_named(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = _run("SELECT 1", world["root"] / "nowhere", capsys)
    assert rc == 2 and "nowhere" in err and "expected a directory" in err
    bad = world["tables"] / "broken.parquet"
    bad.write_bytes(b"not parquet")
    rc, out, err = _run("SELECT count(*) FROM metrics", world["tables"], capsys)
    assert rc == 2 and str(bad) in err and "expected a Parquet file" in err
    assert "Traceback" not in err and out == ""
