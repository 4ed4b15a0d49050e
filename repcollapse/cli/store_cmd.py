"""`repcollapse store validate|describe`."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("validate", help="check a store against the schema; lists every problem")
    p.add_argument("store", help="path or fsspec URL of the store")
    p.add_argument(
        "--quick",
        "--no-values",
        dest="quick",
        action="store_true",
        help="read no chunk: skip the NaN/inf scan of hidden states and the checksum of every "
        "chunk (still checks that each chunk has a checksum and a file)",
    )
    p.set_defaults(handler=_validate)
    p = sub.add_parser(
        "describe", help="checkpoints, layers, features, tokens per domain/span, size"
    )
    p.add_argument("store")
    p.set_defaults(handler=_describe)


def _validate(args: argparse.Namespace) -> int:
    import sys

    from repcollapse.store_schema.problems import Problem
    from repcollapse.store_schema.validate import validate_store

    warnings: list[Problem] = []
    problems, summary = validate_store(args.store, scan_values=not args.quick, warnings=warnings)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if problems:
        print(f"INVALID {args.store}: {len(problems)} problem(s)")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(f"valid {args.store}: {summary}")
    return 0


def _describe(args: argparse.Namespace) -> int:
    from repcollapse.store_schema.describe import describe_store

    print(describe_store(args.store))
    return 0
