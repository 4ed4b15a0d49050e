"""`repcollapse query "SQL" --tables DIR`: read-only DuckDB over the metric tables (a view per file)."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = (
    "Run SQL (DuckDB) over the metric tables: each DIR/<name>.parquet is a view <name>. "
    "Read-only: the files are loaded first, then the connection has no file access and a "
    "locked configuration, so COPY ... TO/FROM, ATTACH of a file, EXPORT DATABASE, "
    "read_text/read_blob/read_csv/read_parquet/glob of any path, INSTALL/LOAD and "
    "SET/RESET/PRAGMA are refused (exit 2). CREATE TABLE, INSERT, DROP and views change "
    "only the in-memory database of this one query: nothing is written to disk."
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument(
        "sql", help='SQL; each DIR/<name>.parquet is a view <name>, e.g. "SELECT * FROM metrics"'
    )
    parser.add_argument(
        "--tables", required=True, metavar="DIR", help="tables directory ('analyze metrics --out')"
    )
    parser.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="output format (default table)",
    )
    parser.add_argument(
        "--max-rows",
        type=int,
        default=200,
        help="rows printed in table format (default 200; 0: all)",
    )
    parser.set_defaults(handler=_query)


def _query(args: argparse.Namespace) -> int:
    import duckdb
    import pandas as pd

    from repcollapse.analyze.tables.query import RefusedQuery, TablesError, query, views

    try:
        df = query(args.sql, args.tables)
    except (TablesError, RefusedQuery) as exc:
        print(f"repcollapse query: {exc}", file=sys.stderr)
        return 2
    except duckdb.Error as exc:
        names = ", ".join(views(args.tables)) or "none"
        first = str(exc).strip().splitlines()[0]
        print(f"repcollapse query: {first} (views in {args.tables}: {names})", file=sys.stderr)
        return 1
    if args.format == "csv":
        print(df.to_csv(index=False), end="")
    elif args.format == "json":
        print(df.to_json(orient="records"))
    else:
        rows = None if args.max_rows == 0 else args.max_rows
        with pd.option_context(
            "display.max_rows", rows, "display.max_columns", None, "display.width", 200
        ):
            print(
                df.to_string(index=False, max_rows=rows)
                if len(df)
                else f"(no rows) columns: {list(df.columns)}"
            )
        print(f"({len(df)} row{'s' if len(df) != 1 else ''})")
    return 0
