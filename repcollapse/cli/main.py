"""`repcollapse`: one CLI, subcommand groups. Thin: parsing here, logic in the packages.

Each group lives in its own module and imports its heavy dependencies inside the handler,
so `repcollapse store ...`, `repcollapse analyze ...` and `repcollapse query ...` never import
torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

TRACEBACK_ENV = "REPCOLLAPSE_TRACEBACK"
"""Set to 1 to see the traceback behind a one-line error (for a suspected bug)."""

GROUPS: dict[str, str] = {
    "data": "build the probe corpus, training pools, preference pairs and future tasks",
    "train": "materialise the base checkpoint and run sequential post-training chains",
    "extract": "run the probe corpus through checkpoints into the activation store",
    "store": "validate and describe an activation store",
    "analyze": "metrics, statistics, figures and the report, from the store alone",
    "query": "run SQL (DuckDB) over the metric tables",
    "demo": "the whole chain end to end on the embedded model",
    "study": "a resumable, shardable matrix of families x sequences x seeds x mitigations",
}


def build_parser() -> argparse.ArgumentParser:
    from repcollapse import __version__

    parser = argparse.ArgumentParser(prog="repcollapse", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"repcollapse {__version__}")
    # not "group": `analyze metrics --group` (a store sub-group) would overwrite it with None
    sub = parser.add_subparsers(dest="cli_group", metavar="GROUP", required=True)
    for name, help_text in GROUPS.items():
        module = importlib.import_module(f"repcollapse.cli.{name}_cmd")
        module.register(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def describe_error(error: BaseException) -> str:
    """One line where there is one problem: the path or field, what was expected, what was
    found. A SchemaError with several problems keeps one line per problem."""
    from repcollapse.store_schema.problems import SchemaError

    if isinstance(error, SchemaError) and len(error.problems) == 1:
        p = error.problems[0]
        return f"{p.location}: {p.message}"
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    return str(error)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = " ".join(
        ["repcollapse", args.cli_group, *[str(getattr(args, "train_cmd", "") or "")]]
    ).strip()
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:
        # Bad input reaches the user as one message, never a traceback: SchemaError and
        # the packages' usage errors are ValueErrors (usage errors carry exit_code 2), an
        # unreadable or unwritable path an OSError. Handlers may still map their own first.
        # A bug can raise these too: REPCOLLAPSE_TRACEBACK=1 shows where.
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f"{prog}: {describe_error(e)}", file=sys.stderr)
        return int(getattr(e, "exit_code", 1))


if __name__ == "__main__":
    sys.exit(main())
