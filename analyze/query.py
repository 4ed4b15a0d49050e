"""SQL over the metric tables: DuckDB with one view per Parquet file, named after its stem."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def connect(tables_dir: str | Path):  # noqa: ANN201 (duckdb.DuckDBPyConnection)
    """An in-memory DuckDB connection with a view per ``*.parquet`` in ``tables_dir``."""
    import duckdb

    root = Path(tables_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"tables directory {str(root)!r} does not exist")
    con = duckdb.connect(":memory:")
    for path in sorted(root.glob("*.parquet")):
        escaped = str(path.resolve()).replace("'", "''")
        con.execute(f"CREATE VIEW \"{path.stem}\" AS SELECT * FROM read_parquet('{escaped}')")
    return con


def views(tables_dir: str | Path) -> list[str]:
    return sorted(p.stem for p in Path(tables_dir).glob("*.parquet"))


def query(sql: str, tables_dir: str | Path) -> pd.DataFrame:
    """Run ``sql`` against the tables; returns a DataFrame."""
    con = connect(tables_dir)
    try:
        return con.execute(sql).df()
    finally:
        con.close()
