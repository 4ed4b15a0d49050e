"""`repcollapse query "SQL" --tables DIR`: DuckDB over the metric tables (a view per file)."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
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

    from analyze.query import query, views

    try:
        df = query(args.sql, args.tables)
    except FileNotFoundError as exc:
        print(f"repcollapse query: {exc}")
        return 2
    except duckdb.Error as exc:
        print(
            f"repcollapse query: {exc}\nviews in {args.tables}: {', '.join(views(args.tables)) or 'none'}"
        )
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
