"""Read-only SQL over the metric tables: DuckDB with one relation per Parquet file.

Each ``DIR/<name>.parquet`` is read into an Arrow table and registered as the view ``<name>``
*before* the connection is locked down: then external access is disabled (no file is opened,
created, listed or removed: no ``COPY ... TO``, ``ATTACH`` of a file, ``read_text``, ``glob``,
``read_csv``/``read_parquet`` of any path, ``INSTALL``/``LOAD``) and the configuration is
locked (no ``SET``/``RESET``/``PRAGMA`` can turn it back on). A view over ``read_parquet``
would stop working once file access is off, hence the Arrow tables. What a query may still
do is change the in-memory database (``CREATE TABLE``, ``INSERT``, ``DROP``, a view replaced):
nothing of it reaches the disk and it is gone when the query returns.

Checkpoint names are typeable (``WHERE checkpoint = 'A.s0.02-math'``). In tables of a store
written before typeable names, ``checkpoint`` and ``parent`` show the current form and a
``checkpoint_label`` column the stored one (repcollapse.analyze.tables.names).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd

from repcollapse.analyze.tables.names import arrow_names, typeable_arrow
from repcollapse.analyze.tables.read import TablesError

HARDENING: tuple[tuple[str, str], ...] = (
    # extensions are files: neither installed nor loaded, not even the known ones implicitly
    ("autoinstall_known_extensions", "false"),
    ("autoload_known_extensions", "false"),
    # no scan of Python variables by name (only the registered tables are relations)
    ("python_enable_replacements", "false"),
)
"""Belt and braces under the lockdown; an older DuckDB without one of them still locks down."""
LOCKDOWN: tuple[tuple[str, str], ...] = (
    ("enable_external_access", "false"),
    ("lock_configuration", "true"),  # last: after it nothing above can be changed back
)
"""Required: the connection is not handed out unless both are set."""


class RefusedQuery(ValueError):
    """A statement that needs file access, an extension or a setting; refused."""


def connect(tables_dir: str | Path):  # noqa: ANN201 (duckdb.DuckDBPyConnection)
    """An in-memory, locked-down DuckDB connection with a view per ``*.parquet`` in ``tables_dir``."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(tables_dir)
    if not root.is_dir():
        raise TablesError(f"tables directory {str(root)!r}: expected a directory, found none")
    tables = {}
    for path in sorted(root.glob("*.parquet")):
        try:
            tables[path.stem] = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise TablesError(
                f"table {str(path)!r}: expected a Parquet file, could not read it ({exc})"
            ) from exc
    # tables of a store written before typeable names: their names in the current form, the
    # stored one in checkpoint_label (any other table is registered exactly as its file)
    mapping = arrow_names(tables.values())
    if any(stored != shown for stored, shown in mapping.items()):
        tables = {name: typeable_arrow(table, mapping) for name, table in tables.items()}
    con = duckdb.connect(":memory:")
    for name, table in tables.items():
        con.register(name, table)
    for option, value in HARDENING:
        # an option this DuckDB version does not have is skipped
        with contextlib.suppress(duckdb.CatalogException):
            con.execute(f"SET {option} = {value}")
    for option, value in LOCKDOWN:
        con.execute(f"SET {option} = {value}")
    return con


def views(tables_dir: str | Path) -> list[str]:
    return sorted(p.stem for p in Path(tables_dir).glob("*.parquet"))


def _refused(exc: Exception) -> bool:
    import duckdb

    text = str(exc)
    return isinstance(exc, duckdb.PermissionException) or (
        isinstance(exc, duckdb.InvalidInputException) and "configuration has been locked" in text
    )


def query(sql: str, tables_dir: str | Path) -> pd.DataFrame:
    """Run ``sql`` against the tables (read-only, see the module doc); returns a DataFrame.

    Raises ``TablesError`` for an unreadable tables directory or file, ``RefusedQuery`` for a
    statement that needs file access, an extension or a setting, ``duckdb.Error`` otherwise.
    """
    con = connect(tables_dir)
    try:
        return con.execute(sql).df()
    except Exception as exc:
        if _refused(exc):
            first = str(exc).splitlines()[0]
            raise RefusedQuery(
                "refused: queries are read-only over the registered tables (no file access, "
                f"no extensions, no settings); DuckDB said: {first}"
            ) from exc
        raise
    finally:
        con.close()
